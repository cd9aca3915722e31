//! rtrace started under the target (`bash -c 'sudo rtrace --pid $$'`): the root waiting on
//! rtrace's own session is not a wait_stall; a wait on another child still is.
use super::*;

#[test]
fn root_waiting_on_rtrace_is_not_a_stall() {
    let mut l = lc(vec![], 10 * S);
    l.waits_in_flight = vec![call(ROOT, ROOT, "wait4", WaitTarget::AnyChild, S, None)];
    // Without the chain it is a HIGH wait_stall: that is what the chain changes.
    assert_eq!(run(&l).findings.iter().filter(|f| f.kind == FindingKind::WaitStall).count(), 1);
    l.rtrace_chain = vec![1500, 1400]; // rtrace, then sudo (the root's child)
    let r = run(&l);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert!(r.children.is_empty(), "rtrace's chain is not in the ledger: {:?}", r.children);
    // Waiting explicitly for sudo: the same; for another child: a stall as before.
    l.waits_in_flight[0].target = WaitTarget::Pid { pid: 1400 };
    assert!(run(&l).findings.is_empty());
    l.waits_in_flight[0].target = WaitTarget::Pid { pid: 1300 };
    let r = run(&l);
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].fields["child_pid"], 1300);
}
