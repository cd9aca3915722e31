//! Tracepoint record layouts, read from tracefs `format` files at start-up: field offsets
//! differ across kernels, so the eBPF programs take them as globals instead of hard-coding.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// One `field:` line of a format file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// Parses the `field:` lines of a tracepoint format file.
pub fn parse_format(text: &str) -> Vec<Field> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let decl = line.strip_prefix("field:")?.split(';').next()?.trim();
            // "char comm[16]" → "comm"; "__data_loc char[] filename" → "filename".
            let name = decl.rsplit(' ').next()?.split('[').next()?.to_owned();
            let num = |key: &str| -> Option<u32> {
                line.split(';').find_map(|part| part.trim().strip_prefix(key)?.trim().parse().ok())
            };
            Some(Field { name, offset: num("offset:")?, size: num("size:")? })
        })
        .collect()
}

pub fn format_path(category: &str, event: &str) -> PathBuf {
    Path::new(TRACEFS).join("events").join(category).join(event).join("format")
}

/// The layout of one tracepoint.
pub struct Format {
    pub event: String,
    pub fields: Vec<Field>,
}

impl Format {
    pub fn read(category: &str, event: &str) -> Result<Self> {
        let path = format_path(category, event);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Self { event: format!("{category}:{event}"), fields: parse_format(&text) })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn offset(&self, name: &str) -> Result<u32> {
        self.field(name)
            .map(|f| f.offset)
            .ok_or_else(|| anyhow!("tracepoint {} has no field {name} on this kernel", self.event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEWTASK: &str = "name: task_newtask\nID: 205\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;\n\
\tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;\n\
\tfield:u64 clone_flags;\toffset:32;\tsize:8;\tsigned:0;\n\
\tfield:__data_loc char[] filename;\toffset:40;\tsize:4;\tsigned:0;\n\
\nprint fmt: \"pid=%d\"\n";

    #[test]
    fn parses_fields() {
        let f = parse_format(NEWTASK);
        assert_eq!(f.len(), 5);
        assert_eq!(f[1], Field { name: "pid".into(), offset: 8, size: 4 });
        assert_eq!(f[2], Field { name: "comm".into(), offset: 12, size: 16 });
        assert_eq!(f[3], Field { name: "clone_flags".into(), offset: 32, size: 8 });
        assert_eq!(f[4], Field { name: "filename".into(), offset: 40, size: 4 });
    }
}
