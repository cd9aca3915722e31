//! Flame graph SVGs through inferno, from folded lines.
use std::io::Write;

use anyhow::Result;
use inferno::flamegraph::{self, Options, Palette};

pub struct Style<'a> {
    pub title: String,
    pub count_name: &'a str,
    pub palette: Palette,
}

pub fn render(lines: &[String], style: Style<'_>, out: &mut dyn Write) -> Result<()> {
    let mut opts = Options::default();
    opts.title = style.title;
    opts.count_name = style.count_name.to_owned();
    opts.colors = style.palette;
    // An empty profile still gets a valid SVG saying so, instead of an error.
    if lines.is_empty() {
        opts.subtitle = Some("no samples".into());
        let empty = ["[no samples] 0".to_owned()];
        flamegraph::from_lines(&mut opts, empty.iter().map(String::as_str), out)?;
        return Ok(());
    }
    flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_svg_with_title_and_frames() {
        let lines = vec!["prog;main;leaf 95".to_owned(), "prog;main;other_[k] 5".to_owned()];
        let mut out = Vec::new();
        let style = Style { title: "rtrace: prog (pid 1), 2.0 s".into(), count_name: "samples", palette: Palette::default() };
        render(&lines, style, &mut out).unwrap();
        let svg = String::from_utf8(out).unwrap();
        assert!(svg.starts_with("<?xml"));
        assert!(svg.contains("rtrace: prog (pid 1), 2.0 s"));
        assert!(svg.contains("leaf (95 samples, 95.00%)"));
    }
}
