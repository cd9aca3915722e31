"""Checks an rtrace timeline.pftrace with Perfetto's own full trace schema (the PyPI `perfetto`
package's perfetto_trace_pb2), independently of rtrace's prost declarations, and prints what it
holds as JSON for tests/timeline.rs to assert on.

Checked (a violation is printed on stderr, exit status 1):
- the file parses as a Trace, and no message anywhere has a field the schema does not know
  (a wrong field number or wire type shows up as an unknown field);
- the one packet sequence starts with SEQ_INCREMENTAL_STATE_CLEARED and a ClockSnapshot making
  CLOCK_MONOTONIC the trace clock; every event is on that clock;
- every track is described once, after its parent, before its first event; interned names are
  defined before use;
- per track, timestamps never decrease and slice begins and ends balance;
- no event is before the clock snapshot's time 0 or after the end of the session slice;
- every flow (--timeline's wakeup arrows) leaves exactly one event and ends at exactly one
  later slice begin (a few µs of slack: the wakeup and the switch read two clocks).

Printed: {"base": CLOCK_MONOTONIC ns at time 0, "end": ns, "processes": {pid: {"name", "cmdline",
"slices": [[name, begin, end, args]], "instants": [[name, ts, args]], "tracks": {name of a track
under the process: {"slices": [...], "counter": [[ts, value]]}}}}, "syscalls": {tid: [[name,
begin, end, args]]}, "threads": {tid: {"pid", "slices", "instants", "flows_out": [[ts, id]],
"flows_in": [[ts, id]]}}, "flows": count}, times in ns since the session's time 0.

TraceProcessor (perfetto.trace_processor) is not used: it downloads its trace_processor_shell
binary on first use, and no package registry reachable here ships one.
"""
import json
import sys

from google.protobuf.unknown_fields import UnknownFieldSet
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

errors = []


def fail(msg):
    errors.append(msg)


def unknown_fields(msg, path):
    u = UnknownFieldSet(msg)
    if len(u):
        fail(f"{path}: unknown fields {sorted(f.field_number for f in u)}")
    for fd, val in msg.ListFields():
        if fd.type != fd.TYPE_MESSAGE:
            continue
        if fd.is_repeated:
            for i, v in enumerate(val):
                unknown_fields(v, f"{path}.{fd.name}[{i}]")
        else:
            unknown_fields(val, f"{path}.{fd.name}")


def annotation(a, names):
    name = names.get(a.name_iid) if a.HasField("name_iid") else a.name
    if name is None:
        fail(f"annotation name iid {a.name_iid} used before it is interned")
    for field in ("string_value", "uint_value", "int_value", "bool_value", "double_value"):
        if a.HasField(field):
            return name, getattr(a, field)
    fail(f"annotation {name} has no value")
    return name, None


def main(path):
    trace = pb.Trace()
    with open(path, "rb") as f:
        trace.ParseFromString(f.read())
    unknown_fields(trace, "trace")
    packets = trace.packet
    if not packets:
        fail("no packets")
        return None
    first = packets[0]
    MONO = pb.BUILTIN_CLOCK_MONOTONIC
    if first.sequence_flags != pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED | pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE:
        fail(f"first packet's sequence_flags {first.sequence_flags}")
    snap = first.clock_snapshot
    if snap.primary_trace_clock != MONO or [c.clock_id for c in snap.clocks] != [MONO]:
        fail(f"first packet does not make CLOCK_MONOTONIC the trace clock: {snap}")
    base = snap.clocks[0].timestamp if snap.clocks else 0
    seq = first.trusted_packet_sequence_id
    tracks, names, arg_names, events = {}, {}, {}, []
    flows_out, flows_in = {}, {}
    for i, p in enumerate(packets):
        if p.trusted_packet_sequence_id != seq:
            fail(f"packet {i} on sequence {p.trusted_packet_sequence_id}, not {seq}")
        if p.HasField("track_descriptor"):
            d = p.track_descriptor
            if d.uuid in tracks:
                fail(f"track {d.uuid} described twice")
            if d.HasField("parent_uuid") and d.parent_uuid not in tracks:
                fail(f"track {d.uuid} described before its parent {d.parent_uuid}")
            tracks[d.uuid] = d
        for n in p.interned_data.event_names:
            names[n.iid] = n.name
        for n in p.interned_data.debug_annotation_names:
            arg_names[n.iid] = n.name
        if not p.HasField("track_event"):
            continue
        e = p.track_event
        if p.timestamp_clock_id != MONO:
            fail(f"packet {i} on clock {p.timestamp_clock_id}")
        if e.track_uuid not in tracks:
            fail(f"packet {i}: track {e.track_uuid} not described before its event")
        name = None
        if e.HasField("name_iid"):
            name = names.get(e.name_iid)
            if name is None:
                fail(f"packet {i}: event name iid {e.name_iid} used before it is interned")
        elif e.HasField("name"):
            name = e.name
        args = dict(annotation(a, arg_names) for a in e.debug_annotations)
        if p.timestamp < base:
            fail(f"packet {i} at {p.timestamp}, before the session's start {base}")
        events.append((p.timestamp - base, e.track_uuid, e.type, name, args, e.counter_value))
        for f in e.flow_ids:
            flows_out.setdefault(f, []).append((p.timestamp - base, e.track_uuid, e.type))
        for f in e.terminating_flow_ids:
            flows_in.setdefault(f, []).append((p.timestamp - base, e.track_uuid, e.type))

    slices = {t: [] for t in tracks}
    instants = {t: [] for t in tracks}
    counters = {t: [] for t in tracks}
    last, open_ = {}, {t: [] for t in tracks}
    T = pb.TrackEvent
    for ts, t, ty, name, args, value in events:
        if ts < last.get(t, 0):
            fail(f"time goes back on track {t}: {ts} after {last[t]}")
        last[t] = ts
        if ty == T.TYPE_SLICE_BEGIN:
            open_[t].append((name, ts, args))
        elif ty == T.TYPE_SLICE_END:
            if not open_[t]:
                fail(f"slice end without a begin on track {t} at {ts}")
                continue
            name, begin, args = open_[t].pop()
            slices[t].append([name, begin, ts, args])
        elif ty == T.TYPE_INSTANT:
            instants[t].append([name, ts, args])
        elif ty == T.TYPE_COUNTER:
            counters[t].append([ts, value])
    for t, o in open_.items():
        if o:
            fail(f"track {t}: slices never ended: {o}")

    session = [t for t, d in tracks.items() if d.name == "rtrace session"]
    if len(session) != 1 or len(slices[session[0]]) != 1:
        fail("no single session slice")
        return None
    end = slices[session[0]][0][2]
    if any(ts > end for ts, *_ in events):
        fail(f"events after the session's end {end}")

    for f in set(flows_out) | set(flows_in):
        out, into = flows_out.get(f, []), flows_in.get(f, [])
        if len(out) != 1 or len(into) != 1:
            fail(f"flow {f} leaves {len(out)} events and ends at {len(into)}")
            continue
        if into[0][2] != T.TYPE_SLICE_BEGIN:
            fail(f"flow {f} ends at an event of type {into[0][2]}, not a slice begin")
        if into[0][0] + 50_000 < out[0][0]:
            fail(f"flow {f} ends at {into[0][0]}, before it starts at {out[0][0]}")

    processes, syscalls, threads = {}, {}, {}
    for t, d in tracks.items():
        if d.HasField("process"):
            processes[d.process.pid] = {
                "name": d.process.process_name,
                "cmdline": list(d.process.cmdline),
                "slices": sorted(slices[t], key=lambda s: s[1]),
                "instants": instants[t],
                "tracks": {
                    c.name: {"slices": sorted(slices[u], key=lambda s: s[1]), "counter": counters[u]}
                    for u, c in tracks.items()
                    if c.parent_uuid == t and c.name
                },
            }
        if d.HasField("thread"):
            threads[d.thread.tid] = {
                "pid": d.thread.pid,
                "slices": sorted(slices[t], key=lambda s: s[1]),
                "instants": instants[t],
                "flows_out": sorted([v[0][0], f] for f, v in flows_out.items() if v[0][1] == t),
                "flows_in": sorted([v[0][0], f] for f, v in flows_in.items() if v[0][1] == t),
            }
        if d.name == "syscalls":
            thread = tracks[d.parent_uuid].thread
            syscalls[thread.tid] = sorted(slices[t], key=lambda s: s[1])
    return {
        "base": base,
        "end": end,
        "processes": processes,
        "syscalls": syscalls,
        "threads": threads,
        "flows": len(flows_out),
    }


if __name__ == "__main__":
    out = main(sys.argv[1])
    if errors:
        for e in errors[:50]:
            print(f"timeline_check: {e}", file=sys.stderr)
        sys.exit(1)
    json.dump(out, sys.stdout)
