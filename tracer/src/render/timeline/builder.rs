//! The trace under construction: tracks with what each holds (slices, instants, counter values),
//! turned into packets in the order Perfetto needs. The content modules only say what happened
//! and when; this one owns the rules of the format, so they hold for every track:
//! - every descriptor comes before any event (all descriptors are written first);
//! - slices on one track never overlap (a slice starts no earlier than the one before ends:
//!   Perfetto nests slices by begin/end order, so an overlap would mis-nest everything after);
//! - every slice is closed, at the session end when nothing ended it (`SESSION_END`);
//! - timestamps never decrease within a track, and events are written in time order overall;
//! - names are interned: each name's first use carries its InternedData entry, on one packet
//!   sequence whose first packet clears the incremental state.
use std::collections::HashMap;

use super::proto::*;

pub type Uuid = u64;

/// A time that is "when the session ended": the later of the session's recorded end and the
/// last event, known only once every event is in.
pub const SESSION_END: u64 = u64::MAX;

/// The sequence all packets are on. 1 is the tracing service's own; any other id will do.
const SEQUENCE_ID: u32 = 2;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Uint(u64),
    Int(i64),
    Bool(bool),
    Double(f64),
}

/// Debug annotations of one event, in the order shown.
pub type Args = Vec<(String, Value)>;

/// `("pid", Value::Uint(7))` and the like, for building Args.
pub fn arg(name: &str, v: impl Into<Value>) -> (String, Value) {
    (name.to_owned(), v.into())
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Uint(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Uint(v.into())
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

/// A JSON object's fields as annotations (the decoded syscall arguments, a finding's fields):
/// scalars as themselves, nested values as their JSON text, nulls left out.
pub fn json_args(fields: &serde_json::Map<String, serde_json::Value>) -> Args {
    use serde_json::Value as J;
    fields
        .iter()
        .filter_map(|(k, v)| {
            let v = match v {
                J::Null => return None,
                J::Bool(b) => Value::Bool(*b),
                J::String(s) => Value::Str(s.clone()),
                J::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                    (Some(u), _, _) => Value::Uint(u),
                    (_, Some(i), _) => Value::Int(i),
                    (_, _, f) => Value::Double(f.unwrap_or(0.0)),
                },
                other => Value::Str(other.to_string()),
            };
            Some((k.clone(), v))
        })
        .collect()
}

#[derive(Clone, Debug)]
pub struct Slice {
    pub begin: u64,
    /// SESSION_END: still going when the session ended.
    pub end: u64,
    pub name: String,
    pub args: Args,
}

/// A flow id an event starts or ends (0: none; Perfetto's ids are any nonzero u64).
pub type Flow = u64;

struct Track {
    desc: TrackDescriptor,
    /// With the flow that ends at each slice's begin.
    slices: Vec<(Slice, Flow)>,
    /// (ts, name, args, flow leaving it); ts may be SESSION_END.
    instants: Vec<(u64, String, Args, Flow)>,
    counters: Vec<(u64, i64)>,
}

/// `base_ns`: CLOCK_MONOTONIC at the session's time 0; `end_ns`: the session's recorded end
/// (session time). Every time given to the builder is session time (ns since attach).
pub struct Builder {
    base_ns: u64,
    end_ns: u64,
    tracks: Vec<Track>,
}

/// One event of one track, before it becomes a packet.
enum Ev<'a> {
    /// With the flow that ends there.
    Begin(&'a str, &'a Args, Flow),
    End,
    /// With the flow that leaves it.
    Instant(&'a str, &'a Args, Flow),
    Counter(i64),
}

impl Builder {
    pub fn new(base_ns: u64, end_ns: u64) -> Builder {
        Builder { base_ns, end_ns, tracks: Vec::new() }
    }

    /// Adds a track (its uuid is set here); tracks are described in the order added.
    pub fn track(&mut self, mut desc: TrackDescriptor) -> Uuid {
        // Small, distinct and never 0 (0 means "no track" to Perfetto).
        let uuid = self.tracks.len() as u64 + 1;
        desc.uuid = Some(uuid);
        self.tracks.push(Track { desc, slices: Vec::new(), instants: Vec::new(), counters: Vec::new() });
        uuid
    }

    fn at(&mut self, t: Uuid) -> &mut Track {
        &mut self.tracks[(t - 1) as usize]
    }

    pub fn slice(&mut self, t: Uuid, s: Slice) {
        self.at(t).slices.push((s, 0));
    }

    /// A slice at whose begin flow `flow` ends (the running slice a wakeup led to).
    pub fn slice_flow_end(&mut self, t: Uuid, s: Slice, flow: Flow) {
        self.at(t).slices.push((s, flow));
    }

    pub fn instant(&mut self, t: Uuid, ts: u64, name: impl Into<String>, args: Args) {
        self.at(t).instants.push((ts, name.into(), args, 0));
    }

    /// An instant that flow `flow` leaves from (a wakeup, on the waker's track).
    pub fn instant_flow_start(&mut self, t: Uuid, ts: u64, name: impl Into<String>, args: Args, flow: Flow) {
        self.at(t).instants.push((ts, name.into(), args, flow));
    }

    pub fn counter(&mut self, t: Uuid, ts: u64, value: i64) {
        self.at(t).counters.push((ts, value));
    }

    /// The session's end on the trace's time axis: no event is later.
    fn end(&self) -> u64 {
        let known = |t: u64| (t != SESSION_END).then_some(t);
        let times = self.tracks.iter().flat_map(|t| {
            let s = t.slices.iter().flat_map(|(s, _)| [known(s.begin), known(s.end)]);
            let i = t.instants.iter().map(|i| known(i.0));
            let c = t.counters.iter().map(|c| Some(c.0));
            s.chain(i).chain(c).flatten().collect::<Vec<_>>()
        });
        times.fold(self.end_ns, u64::max)
    }

    /// The packets: a clock snapshot, every descriptor, then every event in time order.
    pub fn finish(mut self) -> Trace {
        let end = self.end();
        let fix = |t: u64| if t == SESSION_END { end } else { t };
        for t in &mut self.tracks {
            for (s, _) in &mut t.slices {
                (s.begin, s.end) = (fix(s.begin), fix(s.end));
            }
            // Stable: slices with one begin keep the order they were added in.
            t.slices.sort_by_key(|s| s.0.begin);
            let mut prev_end = 0;
            for (s, _) in &mut t.slices {
                s.begin = s.begin.max(prev_end);
                s.end = s.end.max(s.begin);
                prev_end = s.end;
            }
            for i in &mut t.instants {
                i.0 = fix(i.0);
            }
            t.instants.sort_by_key(|i| i.0);
            t.counters.sort_by_key(|c| c.0);
        }
        let mut events: Vec<(u64, Uuid, Ev)> = Vec::new();
        for (k, t) in self.tracks.iter().enumerate() {
            track_events(t, k as u64 + 1, &mut events);
        }
        // Stable, and each track's own list is already in order: per track, order is kept.
        events.sort_by_key(|e| e.0);

        let mut w = Writer::default();
        let clock = ClockSnapshot {
            clocks: vec![Clock { clock_id: Some(CLOCK_MONOTONIC), timestamp: Some(self.base_ns) }],
            primary_trace_clock: Some(CLOCK_MONOTONIC as i32),
        };
        w.push(TracePacket { clock_snapshot: Some(clock), ..Default::default() });
        for t in &self.tracks {
            w.push(TracePacket { track_descriptor: Some(t.desc.clone()), ..Default::default() });
        }
        for (ts, track, ev) in events {
            let mut e = TrackEvent { track_uuid: Some(track), ..Default::default() };
            let (ty, name, args) = match ev {
                Ev::Begin(n, a, flow) => {
                    e.terminating_flow_ids = (flow != 0).then_some(flow).into_iter().collect();
                    (TYPE_SLICE_BEGIN, Some(n), Some(a))
                }
                Ev::End => (TYPE_SLICE_END, None, None),
                Ev::Instant(n, a, flow) => {
                    e.flow_ids = (flow != 0).then_some(flow).into_iter().collect();
                    (TYPE_INSTANT, Some(n), Some(a))
                }
                Ev::Counter(v) => {
                    e.counter_value = Some(v);
                    (TYPE_COUNTER, None, None)
                }
            };
            e.r#type = Some(ty);
            e.name_iid = name.map(|n| w.event_name(n));
            e.debug_annotations = args.map(|a| a.iter().map(|(k, v)| w.annotation(k, v)).collect()).unwrap_or_default();
            let packet = TracePacket {
                timestamp: Some(self.base_ns + ts),
                timestamp_clock_id: Some(CLOCK_MONOTONIC),
                track_event: Some(e),
                interned_data: w.take_interned(),
                ..Default::default()
            };
            w.push(packet);
        }
        Trace { packet: w.packets }
    }
}

/// One track's events in order: slices with the instants that fall in or between them.
fn track_events<'a>(t: &'a Track, uuid: Uuid, out: &mut Vec<(u64, Uuid, Ev<'a>)>) {
    let mut inst = t.instants.iter().peekable();
    let instant = |i: &'a (u64, String, Args, Flow)| (i.0, uuid, Ev::Instant(&i.1, &i.2, i.3));
    for (s, flow) in &t.slices {
        while let Some(i) = inst.next_if(|i| i.0 < s.begin) {
            out.push(instant(i));
        }
        out.push((s.begin, uuid, Ev::Begin(&s.name, &s.args, *flow)));
        while let Some(i) = inst.next_if(|i| i.0 < s.end) {
            out.push(instant(i));
        }
        out.push((s.end, uuid, Ev::End));
    }
    out.extend(inst.map(instant));
    out.extend(t.counters.iter().map(|&(ts, v)| (ts, uuid, Ev::Counter(v))));
}

/// Packets with the sequence's bookkeeping, and the interning tables.
#[derive(Default)]
struct Writer {
    packets: Vec<TracePacket>,
    names: HashMap<String, u64>,
    annotation_names: HashMap<String, u64>,
    pending: InternedData,
}

impl Writer {
    fn push(&mut self, mut p: TracePacket) {
        p.trusted_packet_sequence_id = Some(SEQUENCE_ID);
        // The first packet starts the sequence's interning state; every packet relies on it.
        let first = if self.packets.is_empty() { SEQ_INCREMENTAL_STATE_CLEARED } else { 0 };
        p.sequence_flags = Some(first | SEQ_NEEDS_INCREMENTAL_STATE);
        self.packets.push(p);
    }

    fn event_name(&mut self, name: &str) -> u64 {
        intern(&mut self.names, &mut self.pending.event_names, name)
    }

    fn annotation(&mut self, name: &str, v: &Value) -> DebugAnnotation {
        let name_iid = Some(intern(&mut self.annotation_names, &mut self.pending.debug_annotation_names, name));
        let mut a = DebugAnnotation { name_iid, ..Default::default() };
        match v {
            Value::Str(s) => a.string_value = Some(s.clone()),
            Value::Uint(u) => a.uint_value = Some(*u),
            Value::Int(i) => a.int_value = Some(*i),
            Value::Bool(b) => a.bool_value = Some(*b),
            Value::Double(d) => a.double_value = Some(*d),
        }
        a
    }

    /// The names first used by the packet being built.
    fn take_interned(&mut self) -> Option<InternedData> {
        let d = std::mem::take(&mut self.pending);
        (!d.event_names.is_empty() || !d.debug_annotation_names.is_empty()).then_some(d)
    }
}

fn intern(table: &mut HashMap<String, u64>, new: &mut Vec<InternedString>, name: &str) -> u64 {
    if let Some(&iid) = table.get(name) {
        return iid;
    }
    let iid = table.len() as u64 + 1;
    table.insert(name.to_owned(), iid);
    new.push(InternedString { iid: Some(iid), name: Some(name.to_owned()) });
    iid
}
