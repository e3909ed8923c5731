//! Binding listeners: TCP with a host name or address, Unix sockets with mode 0600 and safe
//! replacement of a stale socket file.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpSocket, UnixListener};

use super::RelayError;
use super::allow::resolve_host;
use super::endpoint::{Host, ListenAddr};
use super::events::Peer;
use super::sock::Stream;
use super::sys;

/// Pending connections the kernel queues per listener before `accept`.
const BACKLOG: u32 = 1024;

#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, SocketFile),
}

impl Listener {
    pub(crate) async fn bind(addr: &ListenAddr) -> Result<Listener, RelayError> {
        match addr {
            ListenAddr::Tcp { host, port } => {
                let ip = listen_ip(host).map_err(|source| RelayError::Bind {
                    addr: addr.clone(),
                    source,
                })?;
                bind_tcp(SocketAddr::new(ip, *port))
                    .map(Listener::Tcp)
                    .map_err(|source| RelayError::Bind {
                        addr: addr.clone(),
                        source,
                    })
            }
            ListenAddr::Unix(path) => bind_unix(path),
        }
    }

    /// The address actually bound (the real port when port 0 was asked).
    pub(crate) fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            Listener::Tcp(l) => Ok(ListenAddr::from(l.local_addr()?)),
            Listener::Unix(_, file) => Ok(ListenAddr::Unix(file.path.clone())),
        }
    }

    pub(crate) async fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                Ok((Stream::Tcp(stream), Peer::Tcp(peer)))
            }
            Listener::Unix(l, _) => {
                let (stream, _) = l.accept().await?;
                let cred = stream.peer_cred()?;
                Ok((
                    Stream::Unix(stream),
                    Peer::Unix {
                        uid: cred.uid(),
                        pid: cred.pid(),
                    },
                ))
            }
        }
    }
}

/// The address a listen host stands for: an IP as is, `localhost` as 127.0.0.1, another name
/// as its first IPv4 address (else its first address).
fn listen_ip(host: &Host) -> io::Result<IpAddr> {
    match host {
        Host::Ip(ip) => Ok(*ip),
        Host::Name(name) if name == "localhost" => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        Host::Name(name) => {
            let addrs = resolve_host(name)?;
            addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or(addrs.first())
                .copied()
                .ok_or_else(|| io::Error::other(format!("{name} resolves to no address")))
        }
    }
}

fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Restarting right after a stop must not fail on connections in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A Unix socket file this relay created; removed on drop if it is still ours.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // Someone may have replaced the file since: only remove the one we bound.
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.dev() == self.dev
            && meta.ino() == self.ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Bind `path`, replacing a stale socket file only if it is a socket, belongs to this user and
/// nobody accepts connections on it. The socket is made 0600 right after `bind`; a client of
/// another user that connects in between is refused by the peer credential check on accept.
fn bind_unix(path: &Path) -> Result<Listener, RelayError> {
    let addr = ListenAddr::Unix(path.to_path_buf());
    let bind_err = |source| RelayError::Bind {
        addr: addr.clone(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            if !meta.file_type().is_socket() {
                return Err(RelayError::NotASocket {
                    path: path.to_path_buf(),
                });
            }
            if meta.uid() != sys::effective_uid() {
                return Err(RelayError::NotOurs {
                    path: path.to_path_buf(),
                    uid: meta.uid(),
                });
            }
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(RelayError::InUse {
                        path: path.to_path_buf(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "replacing stale socket file");
                    match std::fs::remove_file(path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(bind_err(e)),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(bind_err(e)),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    let made = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::symlink_metadata(path));
    match made {
        Ok(meta) => {
            let file = SocketFile {
                path: path.to_path_buf(),
                dev: meta.dev(),
                ino: meta.ino(),
            };
            Ok(Listener::Unix(listener, file))
        }
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(bind_err(e))
        }
    }
}
