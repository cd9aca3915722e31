//! heap.pb.gz: a Go process's heap profile in the format the runtime's own `writeHeapProto`
//! (runtime/pprof/protomem.go) writes — period type space/bytes, period = MemProfileRate,
//! sample types alloc_objects/count, alloc_space/bytes, inuse_objects/count,
//! inuse_space/bytes (scaled, leading runtime frames hidden: done in `analyze/goheap`), and a
//! numeric label `bytes` = the object size — so `go tool pprof` reads it as it reads a
//! profile the program wrote of itself.
use crate::{analyze::goheap::HeapReport, render::pprof};

/// The profile of `heap`, or None when there is none (never an empty profile).
pub fn profile(heap: &HeapReport, time_nanos: i64, comment: String) -> Option<pprof::Profile> {
    let rate = heap.rate?;
    let stacks: Vec<_> = heap
        .samples
        .iter()
        .map(|s| {
            let v = s.values;
            (s.frames.clone(), vec![v.alloc_objects, v.alloc_bytes, v.inuse_objects, v.inuse_bytes])
        })
        .collect();
    let labels: Vec<Vec<(&str, i64)>> =
        heap.samples.iter().map(|s| s.bytes_label.map(|b| ("bytes", b)).into_iter().collect()).collect();
    let spec = pprof::Spec {
        sample_types: &[
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes"),
        ],
        // As the runtime's "heap" profile: no default, so pprof shows the last (inuse_space).
        default_sample_type: "",
        period_type: ("space", "bytes"),
        period: rate as i64,
        time_nanos,
        duration_nanos: 0,
        comment,
    };
    Some(pprof::build_labeled(&stacks, &labels, &spec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analyze::goheap::{HeapSample, HeapValues},
        symbolize::{Frame, FrameKind},
    };

    fn frame(name: &str) -> Frame {
        Frame { kind: FrameKind::User, function: name.into(), module: "go_heap".into(), offset: 0x1000 }
    }

    #[test]
    fn the_runtime_heap_profile_layout() {
        assert!(profile(&HeapReport::default(), 0, String::new()).is_none(), "no rate: no profile");
        let values = HeapValues { alloc_objects: 5, alloc_bytes: 320, inuse_objects: 2, inuse_bytes: 128 };
        let heap = HeapReport {
            rate: Some(524288),
            samples: vec![HeapSample {
                frames: vec![frame("main.main"), frame("main.keepSmall")],
                values,
                bytes_label: Some(64),
            }],
            ..Default::default()
        };
        let p = profile(&heap, 1, "rtrace".into()).unwrap();
        let s = |i: i64| p.string_table[i as usize].as_str();
        let types: Vec<(&str, &str)> = p.sample_type.iter().map(|t| (s(t.r#type), s(t.unit))).collect();
        assert_eq!(
            types,
            [
                ("alloc_objects", "count"),
                ("alloc_space", "bytes"),
                ("inuse_objects", "count"),
                ("inuse_space", "bytes")
            ]
        );
        let pt = p.period_type.as_ref().unwrap();
        assert_eq!((s(pt.r#type), s(pt.unit), p.period), ("space", "bytes", 524288));
        assert_eq!(p.default_sample_type, 0);
        assert_eq!(p.sample[0].value, [5, 320, 2, 128]);
        let l = &p.sample[0].label[0];
        assert_eq!((s(l.key), l.num, l.str), ("bytes", 64, 0));
        // Leaf first.
        let leaf = &p.location[p.sample[0].location_id[0] as usize - 1];
        assert_eq!(s(p.function[leaf.line[0].function_id as usize - 1].name), "main.keepSmall");
    }

    /// report.txt's Heap lines: the totals and the top table, or the one-line reason.
    #[test]
    fn report_txt_heap_section() {
        use crate::analyze::{go::GoReport, goheap::HeapSite};
        let v =
            |inuse_bytes, inuse_objects| HeapValues { alloc_objects: 0, alloc_bytes: 0, inuse_objects, inuse_bytes };
        let mut g = GoReport { pid: 42, go_version: "go1.27.3".into(), ..Default::default() };
        g.heap = HeapReport {
            rate: Some(524288),
            totals: Some(HeapValues {
                alloc_objects: 9000,
                alloc_bytes: 12 << 20,
                inuse_objects: 1010,
                inuse_bytes: 10551296,
            }),
            top: vec![
                HeapSite {
                    function: "main.keepLarge".into(),
                    called_from: vec!["main.main".into()],
                    values: v(10 << 20, 10),
                },
                HeapSite { function: "main.keepSmall".into(), called_from: vec![], values: v(64000, 1000) },
            ],
            ..Default::default()
        };
        let mut s = String::new();
        crate::render::go_text::sections(&mut s, std::slice::from_ref(&g), g.pid, 0);
        // From the Heap line on (other sections come before it).
        let lines: Vec<&str> = s.lines().skip_while(|l| !l.starts_with("  Heap")).collect();
        assert!(lines[0].starts_with("  Heap (as of the last GC; sampled every 512.0 KiB allocated"), "{s}");
        assert!(lines[0].contains(": 10.1 MiB in use in 1010 objects, 12.0 MiB allocated in all — heap.pb.gz"), "{s}");
        assert_eq!(lines[2], "      10.0 MiB         10  main.keepLarge <- main.main", "{s}");
        assert_eq!(lines[3], "      62.5 KiB       1000  main.keepSmall", "{s}");
        g.heap = HeapReport { unavailable: Some("no heap profile: because".into()), ..Default::default() };
        let mut s = String::new();
        crate::render::go_text::sections(&mut s, &[g.clone()], g.pid, 0);
        assert!(s.contains("\n  Heap: no heap profile: because\n"), "{s}");
    }
}
