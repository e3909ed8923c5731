//! Where the relay listens and where it connects to: `HOST:PORT`, `[V6]:PORT`, a bare `PORT`
//! (loopback) or `unix:/path`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use thiserror::Error;

/// A malformed `--listen` or `--to` value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EndpointError {
    #[error("`{0}` has no port (expected HOST:PORT, [IPV6]:PORT or unix:/path)")]
    MissingPort(String),
    #[error("`{0}` has an invalid port (expected a number from 0 to 65535)")]
    BadPort(String),
    #[error("`{0}` has an empty host")]
    EmptyHost(String),
    #[error("`{0}`: port 0 is only meaningful for a listening address")]
    PortZero(String),
    #[error("`{0}` names no socket path after `unix:`")]
    EmptyPath(String),
    #[error("`{0}` has an unclosed `[`")]
    UnclosedBracket(String),
}

/// A host name or an IP address, as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

impl Host {
    /// `127.0.0.1`, `::1`, `[::1]` (brackets are allowed) or a host name.
    pub fn parse(text: &str) -> Host {
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(text.to_string()),
        }
    }
}

/// Where the relay accepts connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// A TCP address; port 0 lets the system pick a free port. A host name is resolved when
    /// binding (its first IPv4 address, else its first address; `localhost` is 127.0.0.1).
    Tcp { host: Host, port: u16 },
    /// A Unix stream socket, created with mode 0600.
    Unix(PathBuf),
}

impl ListenAddr {
    /// Loopback on `port` (0: a free port).
    pub fn loopback(port: u16) -> ListenAddr {
        ListenAddr::Tcp {
            host: Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            port,
        }
    }

    /// Whether this only accepts connections from the same host (loopback or a Unix socket).
    pub fn is_local_only(&self) -> bool {
        match self {
            ListenAddr::Tcp {
                host: Host::Ip(ip), ..
            } => ip.is_loopback(),
            ListenAddr::Tcp {
                host: Host::Name(name),
                ..
            } => name == "localhost",
            ListenAddr::Unix(_) => true,
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl FromStr for ListenAddr {
    type Err = EndpointError;

    /// `PORT` (loopback), `HOST:PORT`, `[IPV6]:PORT`, `*:PORT` (every interface) or
    /// `unix:/path`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = parse_unix(text)? {
            return Ok(ListenAddr::Unix(path));
        }
        if let Ok(port) = text.parse::<u16>() {
            return Ok(ListenAddr::loopback(port));
        }
        let (host, port) = split_host_port(text)?;
        let host = match host {
            Host::Name(name) if name == "*" => Host::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            host => host,
        };
        Ok(ListenAddr::Tcp { host, port })
    }
}

/// Where the relay connects each accepted connection to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A TCP address; a host name is resolved again for every connection.
    Tcp { host: Host, port: u16 },
    /// A Unix stream socket.
    Unix(PathBuf),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl FromStr for Target {
    type Err = EndpointError;

    /// `HOST:PORT`, `[IPV6]:PORT` or `unix:/path`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = parse_unix(text)? {
            return Ok(Target::Unix(path));
        }
        let (host, port) = split_host_port(text)?;
        if port == 0 {
            return Err(EndpointError::PortZero(text.to_string()));
        }
        Ok(Target::Tcp { host, port })
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Target {
        Target::Tcp {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> ListenAddr {
        ListenAddr::Tcp {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }
}

fn parse_unix(text: &str) -> Result<Option<PathBuf>, EndpointError> {
    match text.strip_prefix("unix:") {
        Some("") => Err(EndpointError::EmptyPath(text.to_string())),
        Some(path) => Ok(Some(PathBuf::from(path))),
        None => Ok(None),
    }
}

fn split_host_port(text: &str) -> Result<(Host, u16), EndpointError> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| EndpointError::UnclosedBracket(text.into()))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| EndpointError::MissingPort(text.into()))?;
        (Host::parse(ip), port)
    } else {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| EndpointError::MissingPort(text.into()))?;
        if host.contains(':') {
            // A bare IPv6 address without brackets: `::1:80` is ambiguous, ask for brackets.
            return Err(EndpointError::MissingPort(text.into()));
        }
        (Host::parse(host), port)
    };
    if matches!(&host, Host::Name(name) if name.is_empty()) {
        return Err(EndpointError::EmptyHost(text.into()));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| EndpointError::BadPort(text.into()))?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn listen_addresses() {
        assert_eq!("11111".parse(), Ok(ListenAddr::loopback(11111)));
        assert_eq!(
            "0.0.0.0:0".parse(),
            Ok(ListenAddr::Tcp {
                host: Host::Ip(Ipv4Addr::UNSPECIFIED.into()),
                port: 0
            })
        );
        assert_eq!(
            "*:11111".parse(),
            Ok(ListenAddr::Tcp {
                host: Host::Ip(Ipv4Addr::UNSPECIFIED.into()),
                port: 11111
            })
        );
        assert_eq!(
            "[::1]:5".parse(),
            Ok(ListenAddr::Tcp {
                host: Host::Ip(Ipv6Addr::LOCALHOST.into()),
                port: 5
            })
        );
        assert_eq!(
            "login-1:22221".parse(),
            Ok(ListenAddr::Tcp {
                host: Host::Name("login-1".into()),
                port: 22221
            })
        );
        assert_eq!(
            "unix:/tmp/x.sock".parse(),
            Ok(ListenAddr::Unix("/tmp/x.sock".into()))
        );
        assert!(ListenAddr::loopback(1).is_local_only());
        assert!(!"0.0.0.0:1".parse::<ListenAddr>().unwrap().is_local_only());
    }

    #[test]
    fn targets() {
        assert_eq!(
            "client:11111".parse(),
            Ok(Target::Tcp {
                host: Host::Name("client".into()),
                port: 11111
            })
        );
        assert_eq!(
            "[::1]:80".parse::<Target>().unwrap().to_string(),
            "[::1]:80"
        );
        assert_eq!(
            "unix:/run/a".parse::<Target>().unwrap().to_string(),
            "unix:/run/a"
        );
    }

    #[test]
    fn bad_endpoints_say_what_is_wrong() {
        assert_eq!(
            "client".parse::<Target>(),
            Err(EndpointError::MissingPort("client".into()))
        );
        assert_eq!(
            "client:x".parse::<Target>(),
            Err(EndpointError::BadPort("client:x".into()))
        );
        assert_eq!(
            "client:0".parse::<Target>(),
            Err(EndpointError::PortZero("client:0".into()))
        );
        assert_eq!(
            ":80".parse::<Target>(),
            Err(EndpointError::EmptyHost(":80".into()))
        );
        assert_eq!(
            "::1:80".parse::<Target>(),
            Err(EndpointError::MissingPort("::1:80".into()))
        );
        assert_eq!(
            "[::1:80".parse::<Target>(),
            Err(EndpointError::UnclosedBracket("[::1:80".into()))
        );
        assert_eq!(
            "unix:".parse::<ListenAddr>(),
            Err(EndpointError::EmptyPath("unix:".into()))
        );
        assert_eq!(
            "h:70000".parse::<ListenAddr>(),
            Err(EndpointError::BadPort("h:70000".into()))
        );
    }
}
