//! Helpers of the `rtrace serve` tests (serve.rs, serve_sessions.rs, serve_watch*.rs): a raw
//! HTTP/1.1 GET over any stream (or a response read elsewhere, `split_response`), `/metrics`
//! over the daemon's socket, and the real `go tool pprof` run against a URL.
use std::{
    io::{Read, Write},
    path::PathBuf,
    process::Command,
};

use crate::root_dir;

/// (status, headers lowercased, body) of one HTTP/1.1 GET over `s`.
pub fn get(s: impl Read + Write, path: &str, host: &str) -> (u16, String, String) {
    let (status, head, body) = get_bytes(s, path, host);
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

/// The body of `GET /metrics` on the daemon's unix socket (200, OpenMetrics).
pub fn metrics(socket: &std::path::Path) -> String {
    let (status, head, body) = get(std::os::unix::net::UnixStream::connect(socket).unwrap(), "/metrics", "localhost");
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    body
}

/// The same with the body as bytes (a pprof file). The daemon answers with a length, not
/// chunked, for a body it has whole.
pub fn get_bytes(mut s: impl Read + Write, path: &str, host: &str) -> (u16, String, Vec<u8>) {
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    split_response(&raw)
}

/// (status, headers lowercased, body) of a raw HTTP/1.1 response (what `curl -i` prints).
pub fn split_response(raw: &[u8]) -> (u16, String, Vec<u8>) {
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").map_or(raw.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&raw[..at]).to_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.trim_end().to_owned(), raw[at..].to_vec())
}

pub fn go_bin() -> PathBuf {
    let modern = root_dir().join("target/go-modern/bin/go");
    if modern.exists() {
        modern
    } else {
        "go".into()
    }
}

/// `go tool pprof ARGS URL`: (success, stdout, stderr).
pub fn pprof(args: &[&str], url: &str, tmp: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(go_bin())
        .args(["tool", "pprof"])
        .args(args)
        .arg(url)
        .env("PPROF_TMPDIR", tmp)
        .env("GOTOOLCHAIN", "local")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}
