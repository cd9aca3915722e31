//! The body of a Grafana Pyroscope push (`POST /push.v1.PusherService/Push`, Connect protocol,
//! `application/proto`): one series per profile, each a set of labels and the gzipped pprof
//! bytes. The messages are declared with prost derives (field numbers from Pyroscope's
//! push/v1/push.proto), as pprof.rs does for pprof, so the build needs no protoc. Grafana
//! Alloy's `pyroscope.receive_http` accepts the same request.
use prost::Message;

use crate::{
    render::{pprof, profiles},
    report::Analysis,
};

#[derive(Clone, PartialEq, Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<RawProfileSeries>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RawProfileSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RawSample>,
}

#[derive(Clone, PartialEq, Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct RawSample {
    /// pprof bytes, gzipped or not (Pyroscope accepts both).
    #[prost(bytes = "vec", tag = "1")]
    pub raw_profile: Vec<u8>,
    /// A unique id per sample (Pyroscope deduplicates retried pushes by it).
    #[prost(string, tag = "2")]
    pub id: String,
}

/// Who a pushed profile is about: `service_name` and the labels every series carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub service_name: String,
    pub pid: u32,
    pub host: String,
}

/// The names profiles are pushed under (`__name__`): Pyroscope's own for CPU; off-CPU has no
/// standard name, and "offcpu" is the file name rtrace gives it.
pub const CPU: &str = "process_cpu";
pub const OFFCPU: &str = "offcpu";

fn series(name: &str, who: &Identity, profile: &pprof::Profile) -> Option<RawProfileSeries> {
    let mut gz = Vec::new();
    pprof::write_gz(profile, &mut gz).ok()?;
    let label = |n: &str, v: &str| LabelPair { name: n.to_owned(), value: v.to_owned() };
    let labels = vec![
        label("__name__", name),
        label("service_name", &who.service_name),
        label("pid", &who.pid.to_string()),
        label("host", &who.host),
    ];
    Some(RawProfileSeries { labels, samples: vec![RawSample { raw_profile: gz, id: sample_id() }] })
}

/// The push of an analysis' CPU profile and, when it has off-CPU data, its off-CPU profile;
/// None when there is nothing to push (no sample and no block).
pub fn request(analysis: &Analysis, who: &Identity) -> Option<Vec<u8>> {
    let start = profiles::start_nanos(analysis);
    let mut req = PushRequest::default();
    if analysis.cpu.total_samples > 0 {
        req.series.extend(series(CPU, who, &profiles::cpu(analysis, start)));
    }
    if !analysis.offcpu.entries.is_empty() {
        req.series.extend(series(OFFCPU, who, &profiles::offcpu(analysis, start)));
    }
    (!req.series.is_empty()).then(|| req.encode_to_vec())
}

/// A random UUID from the kernel (every read of this file is a fresh one).
fn sample_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// This host's name, as Pyroscope's `host` label.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_a_gzipped_profile_per_series() {
        let who = Identity { service_name: "make".into(), pid: 42, host: "h1".into() };
        let p = pprof::Profile { period: 7, ..Default::default() };
        let s = series(CPU, &who, &p).unwrap();
        let names: Vec<(&str, &str)> = s.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
        assert_eq!(names, [("__name__", "process_cpu"), ("service_name", "make"), ("pid", "42"), ("host", "h1")]);
        assert_eq!(s.samples.len(), 1);
        assert_eq!(s.samples[0].id.len(), 36, "a UUID: {:?}", s.samples[0].id);
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&s.samples[0].raw_profile[..]), &mut raw).unwrap();
        assert_eq!(pprof::Profile::decode(&raw[..]).unwrap().period, 7);
        assert_ne!(series(CPU, &who, &p).unwrap().samples[0].id, s.samples[0].id);
    }
}
