//! Who is on the other end of a loopback TCP connection: the uid the kernel lists for the
//! client's socket in /proc/net/tcp and /proc/net/tcp6 (the entry whose local address is
//! the connection's remote one and whose remote address is the listener's).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One socket of /proc/net/tcp{,6}: local and remote address, owner uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub uid: u32,
}

/// "0100007F:1F90" (tcp: one u32 in host byte order) or 32 hex digits (tcp6: four u32s in
/// host byte order), a colon, the port in hex.
fn addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(ip.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Every entry of one file's text (the header line and malformed lines skipped).
pub fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid …
            Some(Entry { local: addr(f.get(1)?)?, remote: addr(f.get(2)?)?, uid: f.get(7)?.parse().ok()? })
        })
        .collect()
}

/// `::ffff:a.b.c.d` as `a.b.c.d`, so a v4 connection matches a v6 listing of it.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, |v4| SocketAddr::new(IpAddr::V4(v4), a.port())),
        IpAddr::V4(_) => a,
    }
}

/// The uid of the client socket of the connection `peer` → `listener` among `entries`.
pub fn peer_uid(entries: &[Entry], listener: SocketAddr, peer: SocketAddr) -> Option<u32> {
    let (l, p) = (canonical(listener), canonical(peer));
    entries.iter().find(|e| canonical(e.local) == p && canonical(e.remote) == l).map(|e| e.uid)
}

/// The uid of the connecting user, from the live tables; the reason when it is not listed
/// (a client in another network namespace: a container sharing none of ours).
pub fn lookup(listener: SocketAddr, peer: SocketAddr) -> Result<u32, String> {
    let mut entries = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(t) = std::fs::read_to_string(f) {
            entries.extend(parse(&t));
        }
    }
    peer_uid(&entries, listener, peer).ok_or_else(|| {
        format!(
            "cannot tell who connected from {peer}: its socket is not in /proc/net/tcp (another network namespace?)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A listener on 127.0.0.1:8080 (root), a client of uid 1000 from port 52000 (0xCB20) and
    // the accepted socket, as the kernel printed them (x86, little endian).
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:CB20 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 41240 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:CB20 01 00000000:00000000 00:00000000 00000000     0        0 41241 1 0000000000000000 20 4 29 10 -1
";
    // [::1]:8080 and a client of uid 1001 from port 40000 (0x9C40).
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:9C40 00000000000000000000000001000000:1F90 01 00000000:00000000 00:00000000 00000000  1001        0 6 1 0 20 4 30 10 -1
";

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_both_families() {
        let e = parse(TCP);
        assert_eq!(e.len(), 3);
        assert_eq!(e[1], Entry { local: sa("127.0.0.1:52000"), remote: sa("127.0.0.1:8080"), uid: 1000 });
        let e6 = parse(TCP6);
        assert_eq!(e6[1], Entry { local: sa("[::1]:40000"), remote: sa("[::1]:8080"), uid: 1001 });
        assert!(parse("header\n garbage line\n").is_empty());
    }

    #[test]
    fn the_client_socket_not_the_accepted_one() {
        let mut e = parse(TCP);
        e.extend(parse(TCP6));
        assert_eq!(peer_uid(&e, sa("127.0.0.1:8080"), sa("127.0.0.1:52000")), Some(1000));
        assert_eq!(peer_uid(&e, sa("[::1]:8080"), sa("[::1]:40000")), Some(1001));
        assert_eq!(peer_uid(&e, sa("[::ffff:127.0.0.1]:8080"), sa("[::ffff:127.0.0.1]:52000")), Some(1000));
        assert_eq!(peer_uid(&e, sa("127.0.0.1:8080"), sa("127.0.0.1:52001")), None, "no such client");
    }

    /// The live table lists this test's own connection with our uid.
    #[test]
    fn a_live_connection_is_ours() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, peer) = l.accept().unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        // SAFETY: geteuid cannot fail.
        assert_eq!(lookup(l.local_addr().unwrap(), peer), Ok(unsafe { libc::geteuid() }));
    }
}
