//! A Pyroscope push receiver for the tests: an HTTP/1.1 server on loopback that records every
//! request and decodes `PushRequest` with its own reading of the protobuf wire format (varints
//! and length-delimited fields), independent of the tracer's prost declarations. The
//! embedded profiles are checked with `go tool pprof`.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
};

/// One pushed series: its labels and its profiles (pprof bytes as sent, gzipped).
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub profiles: Vec<Vec<u8>>,
    pub ids: Vec<String>,
}

impl Series {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// One request: path, content type and its series.
#[derive(Clone, Debug, Default)]
pub struct Push {
    pub path: String,
    pub content_type: String,
    pub series: Vec<Series>,
}

pub struct Receiver {
    pub addr: String,
    pub pushes: Arc<Mutex<Vec<Push>>>,
}

impl Receiver {
    /// Answers every request 200 (after recording it), until the test process ends.
    pub fn start() -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let pushes = Arc::new(Mutex::new(Vec::new()));
        let p = pushes.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                if let Some(push) = read_request(&s) {
                    p.lock().unwrap().push(push);
                }
                let mut s = s;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/proto\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
        Receiver { addr, pushes }
    }

    pub fn pushes(&self) -> Vec<Push> {
        self.pushes.lock().unwrap().clone()
    }
}

fn read_request(s: &std::net::TcpStream) -> Option<Push> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let (mut len, mut content_type) = (0, String::new());
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let Some((k, v)) = h.trim_end().split_once(':') else { break };
        match k.to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse().ok()?,
            "content-type" => content_type = v.trim().to_owned(),
            _ => {}
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    let series = fields(&body).into_iter().filter(|(n, _)| *n == 1).map(|(_, b)| series(b)).collect();
    Some(Push { path, content_type, series })
}

fn series(b: &[u8]) -> Series {
    let mut s = Series::default();
    for (n, f) in fields(b) {
        match n {
            1 => {
                let kv = fields(f);
                let get =
                    |k: u64| kv.iter().find(|(n, _)| *n == k).map(|(_, v)| String::from_utf8_lossy(v).into_owned());
                s.labels.push((get(1).unwrap_or_default(), get(2).unwrap_or_default()));
            }
            2 => {
                for (m, v) in fields(f) {
                    match m {
                        1 => s.profiles.push(v.to_vec()),
                        2 => s.ids.push(String::from_utf8_lossy(v).into_owned()),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    s
}

fn varint(b: &[u8], at: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    while *at < b.len() {
        let x = b[*at];
        *at += 1;
        v |= u64::from(x & 0x7f) << shift;
        if x & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    v
}

/// The length-delimited fields of a message, (field number, bytes); other wire types skipped.
fn fields(b: &[u8]) -> Vec<(u64, &[u8])> {
    let (mut out, mut at) = (Vec::new(), 0);
    while at < b.len() {
        let key = varint(b, &mut at);
        match key & 7 {
            0 => {
                varint(b, &mut at);
            }
            2 => {
                let n = varint(b, &mut at) as usize;
                let end = (at + n).min(b.len());
                out.push((key >> 3, &b[at..end]));
                at = end;
            }
            1 => at += 8,
            5 => at += 4,
            _ => break,
        }
    }
    out
}
