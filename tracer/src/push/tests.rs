//! The pusher against a loopback server written here: the request it sends, retries after a
//! failure, giving up, and drops when the queue is full.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
};

use super::*;

#[test]
fn endpoints() {
    let e: Endpoint = "http://localhost:4040".parse().unwrap();
    assert_eq!(e, Endpoint { authority: "localhost:4040".into(), prefix: "".into() });
    let e: Endpoint = "http://alloy/pyroscope/".parse().unwrap();
    assert_eq!(e, Endpoint { authority: "alloy:80".into(), prefix: "/pyroscope".into() });
    assert!("https://x:443".parse::<Endpoint>().unwrap_err().contains("Grafana Alloy"));
    assert!("localhost:4040".parse::<Endpoint>().unwrap_err().contains("expected http://HOST"));
    assert!("http://u:p@h:1".parse::<Endpoint>().unwrap_err().contains("no credentials"));
    assert!("http://h:port".parse::<Endpoint>().unwrap_err().contains("not HOST:PORT"));
}

/// One request as the server read it: request line, headers (lowercase names), body.
struct Got {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Serves `statuses.len()` connections, answering each with the next status.
fn server(statuses: Vec<u16>) -> (String, std::thread::JoinHandle<Vec<Got>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let t = std::thread::spawn(move || {
        statuses
            .into_iter()
            .map(|status| {
                let (s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    let Some((k, v)) = h.trim_end().split_once(": ") else { break };
                    headers.push((k.to_ascii_lowercase(), v.to_owned()));
                }
                let len = headers.iter().find(|(k, _)| k == "content-length").unwrap().1.parse().unwrap();
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                let mut s = s;
                write!(s, "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno").unwrap();
                Got { line: line.trim_end().to_owned(), headers, body }
            })
            .collect()
    });
    (addr, t)
}

#[test]
fn sends_the_body_and_retries_after_a_failure() {
    let (addr, t) = server(vec![503, 200]);
    let p = Pusher::start(format!("http://{addr}/prefix").parse().unwrap()).unwrap();
    p.push(b"profile bytes".to_vec());
    let stats = p.finish(Duration::from_secs(10));
    let got = t.join().unwrap();
    assert_eq!(PushStats::get(&stats.sent), 1);
    assert_eq!(PushStats::get(&stats.retries), 1);
    assert_eq!(PushStats::get(&stats.failed), 0);
    for g in &got {
        assert_eq!(g.line, "POST /prefix/push.v1.PusherService/Push HTTP/1.1");
        assert!(g.headers.contains(&("content-type".into(), "application/proto".into())), "{:?}", g.headers);
        assert!(g.headers.contains(&("host".into(), addr.clone())));
        assert_eq!(g.body, b"profile bytes");
    }
}

#[test]
fn gives_up_and_says_why() {
    let (addr, t) = server(vec![500; ATTEMPTS as usize]);
    let p = Pusher::start(format!("http://{addr}").parse().unwrap()).unwrap();
    p.push(vec![1]);
    let stats = p.finish(Duration::from_secs(20));
    assert_eq!(t.join().unwrap().len(), ATTEMPTS as usize);
    assert_eq!((PushStats::get(&stats.sent), PushStats::get(&stats.failed)), (0, 1));
    assert!(lock(&stats.last_error).as_deref().unwrap().contains("500"), "{:?}", stats.last_error);
}

#[test]
fn a_full_queue_drops_and_counts_and_finish_is_bounded() {
    // Nobody listens on this port once the listener is gone: every try is refused at once.
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let p = Pusher::start(format!("http://{addr}").parse().unwrap()).unwrap();
    for _ in 0..QUEUE + 10 {
        p.push(vec![0]);
    }
    let t = Instant::now();
    let stats = p.finish(Duration::from_millis(300));
    let (sent, failed, dropped) =
        (PushStats::get(&stats.sent), PushStats::get(&stats.failed), PushStats::get(&stats.dropped));
    assert_eq!(sent, 0);
    assert!(dropped >= 9, "dropped {dropped}");
    assert_eq!(failed + dropped, QUEUE as u64 + 10);
    assert!(t.elapsed() < Duration::from_secs(2), "finish took {:?}", t.elapsed());
}
