//! Where the daemon listens: a unix socket (mode 0660, its directory created; group G with
//! `--allow-group G` so members can connect) and, when asked, a loopback TCP port (any other
//! address refused). Each accepted connection carries its `Peer` to the handlers.
use std::{
    net::{SocketAddr, ToSocketAddrs},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use axum::{extract::connect_info::Connected, serve::IncomingStream};
use tokio::net::{TcpListener, UnixListener};

/// The default socket (systemd's RuntimeDirectory=rtrace makes the directory).
pub const DEFAULT_SOCKET: &str = "/run/rtrace/rtrace.sock";

/// `--listen`: a loopback address with a port ("127.0.0.1:6060", "[::1]:6060",
/// "localhost:6060"), else why not. Loopback is still open to every local user: the
/// connecting user is identified per connection (serve/nettcp.rs) and authorized as on the
/// unix socket.
pub fn check_listen(addr: &str) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("--listen {addr}: not an address with a port ({e}); e.g. 127.0.0.1:6060"))?
        .collect();
    // "localhost" may resolve to both families: the first, as a bind would.
    let a = *addrs.first().ok_or_else(|| format!("--listen {addr}: resolves to no address"))?;
    if let Some(other) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "--listen {addr}: {} is not a loopback address; rtrace serve hands out root's view of every process, \
             so it listens on loopback (127.0.0.1, ::1) only — reach it from elsewhere through ssh -L",
            other.ip()
        ));
    }
    if a.port() == 0 && !addr.ends_with(":0") {
        return Err(format!("--listen {addr}: no port"));
    }
    Ok(a)
}

/// The peer of one connection, as the handlers see it.
#[derive(Clone, Debug)]
pub enum Peer {
    /// SO_PEERCRED of the unix socket's peer.
    Unix { uid: u32, gid: u32, pid: Option<u32> },
    /// A loopback TCP client: both ends, and its uid from /proc/net/tcp (or why unknown).
    Tcp { listener: SocketAddr, remote: SocketAddr, uid: Result<u32, String> },
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(s: IncomingStream<'_, UnixListener>) -> Peer {
        match s.io().peer_cred() {
            Ok(c) => Peer::Unix { uid: c.uid(), gid: c.gid(), pid: c.pid().map(|p| p as u32) },
            // Not expected on Linux; a caller nobody can name is no one: refused later.
            Err(_) => Peer::Tcp {
                listener: ([0, 0, 0, 0], 0).into(),
                remote: ([0, 0, 0, 0], 0).into(),
                uid: Err("SO_PEERCRED failed".into()),
            },
        }
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(s: IncomingStream<'_, TcpListener>) -> Peer {
        let remote = *s.remote_addr();
        // The accepted socket's own address (the listener's, but exact for a wildcard).
        let listener = s.io().local_addr().unwrap_or(remote);
        // Read now, while the connection surely is in the table.
        Peer::Tcp { listener, remote, uid: super::nettcp::lookup(listener, remote) }
    }
}

/// Binds the unix socket: the parent directory created (0755), a stale socket file replaced
/// (but not one another daemon still answers on), mode 0660, group `gid` when given.
pub fn bind_unix(path: &Path, gid: Option<u32>) -> Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("{}: another rtrace serve is listening there (stop it, or pass --socket PATH)", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(g) = gid {
        std::os::unix::fs::chown(path, None, Some(g)).with_context(|| format!("chgrp {g} {}", path.display()))?;
    }
    Ok(l)
}

/// Removes the socket file when the daemon stops.
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert_eq!(check_listen("127.0.0.1:6060"), Ok("127.0.0.1:6060".parse().unwrap()));
        assert_eq!(check_listen("[::1]:6060"), Ok("[::1]:6060".parse().unwrap()));
        assert!(check_listen("localhost:6060").unwrap().ip().is_loopback());
        assert_eq!(check_listen("127.0.0.1:0").unwrap().port(), 0, "an explicit 0: any free port");
        let e = check_listen("0.0.0.0:6060").unwrap_err();
        assert!(e.starts_with("--listen 0.0.0.0:6060: 0.0.0.0 is not a loopback address;"), "{e}");
        let e = check_listen("192.168.1.4:6060").unwrap_err();
        assert!(e.contains("192.168.1.4 is not a loopback address"), "{e}");
        assert!(check_listen("[::]:6060").unwrap_err().contains(":: is not a loopback address"));
        assert!(check_listen("127.0.0.1").unwrap_err().contains("not an address with a port"));
        assert!(!check_listen("0.0.0.0:1").unwrap_err().contains('\n'));
    }

    #[tokio::test]
    async fn socket_mode_dir_and_stale_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/rtrace.sock");
        let l = bind_unix(&path, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let e = bind_unix(&path, None).unwrap_err().to_string();
        assert!(e.contains("another rtrace serve is listening there"), "{e}");
        drop(l);
        // The file stays behind a dead listener: replaced.
        assert!(path.exists());
        bind_unix(&path, None).expect("a stale socket is replaced");
    }
}
