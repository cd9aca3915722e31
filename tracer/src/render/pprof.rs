//! cpu.pb.gz: a gzipped pprof profile (github.com/google/pprof/proto/profile.proto), opened by
//! `go tool pprof`. The messages are declared with prost derives (field numbers from
//! profile.proto) rather than generated, so the build needs no protoc.
use std::io::Write;

use foldhash::HashMap;

use anyhow::Result;
use flate2::{write::GzEncoder, Compression};
use prost::Message;

use crate::symbolize::{Frame, FrameKind};

#[derive(Clone, PartialEq, Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
}

/// What the profile measures: e.g. ("samples","count") + ("cpu","nanoseconds") for on-CPU.
pub struct Spec<'a> {
    pub sample_types: &'a [(&'a str, &'a str)],
    /// The sample type pprof shows unless told otherwise (without it: the last one).
    pub default_sample_type: &'a str,
    pub period_type: (&'a str, &'a str),
    pub period: i64,
    pub time_nanos: i64,
    pub duration_nanos: i64,
    pub comment: String,
}

/// Builds a profile from root-first stacks, each with one value per sample type.
pub fn build<F: AsRef<[Frame]>>(stacks: &[(F, Vec<i64>)], spec: &Spec<'_>) -> Profile {
    build_from(stacks.iter().map(|(f, v)| (f.as_ref(), None, v.clone())), spec)
}

/// The same from (root-first stack, a leaf pseudo-frame after it, values): a stack shared with
/// the analysis plus its state frame, without a copy of the stack.
pub fn build_from<'a>(
    stacks: impl Iterator<Item = (&'a [Frame], Option<&'a Frame>, Vec<i64>)>,
    spec: &Spec<'_>,
) -> Profile {
    build_from_labeled(stacks, &[], spec)
}

/// `build`, with numeric labels per sample (`labels[i]` for `stacks[i]`; none past its end),
/// e.g. the heap profile's `bytes` (the object size).
pub fn build_labeled(stacks: &[(Vec<Frame>, Vec<i64>)], labels: &[Vec<(&str, i64)>], spec: &Spec<'_>) -> Profile {
    build_from_labeled(stacks.iter().map(|(f, v)| (f.as_slice(), None, v.clone())), labels, spec)
}

fn build_from_labeled<'a>(
    stacks: impl Iterator<Item = (&'a [Frame], Option<&'a Frame>, Vec<i64>)>,
    labels: &[Vec<(&str, i64)>],
    spec: &Spec<'_>,
) -> Profile {
    let mut b = Builder::default();
    b.string(""); // string_table[0] must be "".
    let mut p = Profile {
        sample_type: spec
            .sample_types
            .iter()
            .map(|(t, u)| ValueType { r#type: b.string(t), unit: b.string(u) })
            .collect(),
        period_type: Some(ValueType { r#type: b.string(spec.period_type.0), unit: b.string(spec.period_type.1) }),
        period: spec.period,
        time_nanos: spec.time_nanos,
        duration_nanos: spec.duration_nanos,
        ..Default::default()
    };
    p.default_sample_type = b.string(spec.default_sample_type);
    p.comment = vec![b.string(&spec.comment)];
    for (i, (frames, leaf, value)) in stacks.enumerate() {
        // pprof lists locations leaf first.
        let location_id = leaf.into_iter().chain(frames.iter().rev()).map(|f| b.location(f)).collect();
        let label =
            labels.get(i).into_iter().flatten().map(|&(k, num)| Label { key: b.string(k), str: 0, num }).collect();
        p.sample.push(Sample { location_id, value, label });
    }
    p.mapping = b.mappings;
    p.location = b.locations;
    p.function = b.functions;
    p.string_table = b.strings;
    p
}

pub fn write_gz(profile: &Profile, out: &mut dyn Write) -> Result<()> {
    // Go's runtime/pprof compresses with gzip.BestSpeed too: a build's off-CPU profile took
    // 40 ms at the default level.
    let mut gz = GzEncoder::new(out, Compression::fast());
    gz.write_all(&profile.encode_to_vec())?;
    gz.finish()?;
    Ok(())
}

#[derive(Default)]
struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    mappings: Vec<Mapping>,
    mapping_ids: HashMap<String, u64>,
    functions: Vec<Function>,
    function_ids: HashMap<(String, String), u64>,
    locations: Vec<Location>,
    location_ids: HashMap<Frame, u64>,
    /// The same by identity (the names' pointers, offset, kind): a build's profile looks up
    /// ~700,000 frames, mostly the same few thousand shared ones, and hashing their strings
    /// was most of the time. Sound because every frame given lives as long as the builder's
    /// use (`build_from_labeled` borrows them all), so no address is reused meanwhile.
    location_by_ptr: HashMap<(usize, usize, u64, FrameKind), u64>,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.string_ids.get(s) {
            return i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), i);
        i
    }

    fn mapping(&mut self, f: &Frame) -> u64 {
        if f.kind == FrameKind::Process {
            return 0;
        }
        if let Some(&id) = self.mapping_ids.get(&*f.module) {
            return id;
        }
        let id = self.mappings.len() as u64 + 1;
        let filename = self.string(&f.module);
        let build_id = f.module.build_id().map(|b| self.string(b)).unwrap_or(0);
        // Addresses are file offsets (user) or kernel addresses: the mapping spans them all.
        self.mappings.push(Mapping {
            id,
            memory_start: 0,
            memory_limit: u64::MAX,
            file_offset: 0,
            filename,
            build_id,
            has_functions: true,
        });
        self.mapping_ids.insert(f.module.to_string(), id);
        id
    }

    fn function(&mut self, f: &Frame) -> u64 {
        let name = match f.kind {
            FrameKind::Kernel => format!("{}_[k]", f.function),
            _ => f.function.to_string(),
        };
        let key = (name.clone(), f.module.to_string());
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        let n = self.string(&name);
        let file = self.string(&f.module);
        self.functions.push(Function { id, name: n, system_name: n, filename: file });
        self.function_ids.insert(key, id);
        id
    }

    fn location(&mut self, f: &Frame) -> u64 {
        // The module's pointer stands for its name and build id (one shared value per file).
        let ptr = (f.function.as_ptr() as usize, f.module.as_ptr() as usize, f.offset, f.kind);
        if let Some(&id) = self.location_by_ptr.get(&ptr) {
            return id;
        }
        let id = self.location_by_value(f);
        self.location_by_ptr.insert(ptr, id);
        id
    }

    fn location_by_value(&mut self, f: &Frame) -> u64 {
        if let Some(&id) = self.location_ids.get(f) {
            return id;
        }
        let id = self.locations.len() as u64 + 1;
        let mapping_id = self.mapping(f);
        let function_id = self.function(f);
        self.locations.push(Location { id, mapping_id, address: f.offset, line: vec![Line { function_id, line: 0 }] });
        self.location_ids.insert(f.clone(), id);
        id
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::analyze::cpu::tests::sample_profile;

    #[test]
    fn decodes_what_it_encodes() {
        let prof = sample_profile();
        let stacks: Vec<(Vec<Frame>, Vec<i64>)> =
            prof.stacks.iter().map(|(f, c)| (f.to_vec(), vec![*c as i64, *c as i64 * 10_101_010])).collect();
        let spec = Spec {
            sample_types: &[("samples", "count"), ("cpu", "nanoseconds")],
            default_sample_type: "samples",
            period_type: ("cpu", "nanoseconds"),
            period: 10_101_010,
            time_nanos: 1,
            duration_nanos: 2_000_000_000,
            comment: "rtrace".into(),
        };
        let p = build(&stacks, &spec);
        let mut gz = Vec::new();
        write_gz(&p, &mut gz).unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut raw).unwrap();
        let d = Profile::decode(&raw[..]).unwrap();
        assert_eq!(d, p);
        assert_eq!(d.string_table[0], "");
        let s = |i: i64| d.string_table[i as usize].as_str();
        assert_eq!(s(d.sample_type[1].r#type), "cpu");
        assert_eq!(s(d.sample_type[1].unit), "nanoseconds");
        assert_eq!(d.period, 10_101_010);
        assert_eq!(s(d.default_sample_type), "samples");
        // The 95-sample stack, leaf first: leaf, middle, outer, main, prog.
        let hot = d.sample.iter().find(|s| s.value[0] == 95).unwrap();
        let names: Vec<&str> = hot
            .location_id
            .iter()
            .map(|id| {
                let loc = &d.location[*id as usize - 1];
                let f = &d.function[loc.line[0].function_id as usize - 1];
                s(f.name)
            })
            .collect();
        assert_eq!(names, ["leaf", "middle", "outer", "main", "prog"]);
        assert_eq!(hot.value[1], 95 * 10_101_010);
        let total: i64 = d.sample.iter().map(|s| s.value[0]).sum();
        assert_eq!(total, 100);
    }

    /// A location per distinct frame, whether frames share their names (one symbolization)
    /// or only equal them (two), and a frame differing only in its build id gets its own.
    #[test]
    fn one_location_per_distinct_frame() {
        let f = |name: &str, build_id: Option<&str>| Frame {
            kind: FrameKind::User,
            function: name.into(),
            module: crate::symbolize::Module::new("prog".into(), build_id.map(Into::into)),
            offset: 0x10,
        };
        let shared = f("main", Some("ab"));
        let stacks = vec![
            (vec![shared.clone(), f("work", Some("ab"))], vec![1]),
            (vec![shared.clone(), f("work", Some("ab"))], vec![1]),
            (vec![f("main", Some("ab")), f("work", Some("cd"))], vec![1]),
        ];
        let spec = Spec {
            sample_types: &[("samples", "count")],
            default_sample_type: "samples",
            period_type: ("cpu", "nanoseconds"),
            period: 1,
            time_nanos: 0,
            duration_nanos: 0,
            comment: String::new(),
        };
        let p = build(&stacks, &spec);
        // main@ab, work@ab, work@cd.
        assert_eq!(p.location.len(), 3);
        assert_eq!(p.sample[0].location_id, p.sample[1].location_id);
        assert_eq!(p.sample[0].location_id[1], p.sample[2].location_id[1], "main@ab, shared or not");
        assert_ne!(p.sample[0].location_id[0], p.sample[2].location_id[0], "work@ab is not work@cd");
    }
}
