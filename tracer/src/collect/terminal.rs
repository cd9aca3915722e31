//! rtrace and its terminal: the countdown line it keeps on stderr while it traces, and whether
//! a hangup (the terminal going away) should end the session.
use std::time::Duration;

/// Whether SIGHUP is ignored (`nohup rtrace …`): then a hangup must not end the session.
pub fn hangup_ignored() -> bool {
    // SAFETY: sigaction with a null new action only reads the current one.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// "rtrace: tracing pid 7 — 3s left, 12 samples (Ctrl-C to stop)". Seconds left round up, as
/// countdowns do: "1s left" until the very end, never "0s left" with time still to go.
pub fn line(pid: u32, left: Option<Duration>, samples: u64) -> String {
    let left = left.map(|l| format!("{}s left, ", l.as_millis().div_ceil(1000))).unwrap_or_default();
    format!("rtrace: tracing pid {pid} — {left}{samples} samples (Ctrl-C to stop)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_left_round_up() {
        let at = |ms| line(7, Some(Duration::from_millis(ms)), 12);
        assert_eq!(at(3_000), "rtrace: tracing pid 7 — 3s left, 12 samples (Ctrl-C to stop)");
        assert_eq!(at(2_900), "rtrace: tracing pid 7 — 3s left, 12 samples (Ctrl-C to stop)");
        assert_eq!(at(2_001), "rtrace: tracing pid 7 — 3s left, 12 samples (Ctrl-C to stop)");
        assert_eq!(at(1_000), "rtrace: tracing pid 7 — 1s left, 12 samples (Ctrl-C to stop)");
        assert_eq!(at(50), "rtrace: tracing pid 7 — 1s left, 12 samples (Ctrl-C to stop)");
        assert_eq!(at(0), "rtrace: tracing pid 7 — 0s left, 12 samples (Ctrl-C to stop)");
        assert_eq!(line(7, None, 0), "rtrace: tracing pid 7 — 0 samples (Ctrl-C to stop)");
    }
}
