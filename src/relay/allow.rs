//! Who may connect: networks (`10.0.0.0/8`, `fd00::/8`), single addresses and host names.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::str::FromStr;

use thiserror::Error;

/// A malformed `--allow` value.
#[derive(Debug, Error)]
pub enum AllowError {
    #[error("`{text}`: prefix length must be 0 to {max} for this address")]
    BadPrefix { text: String, max: u8 },
    #[error("`{0}`: a prefix length needs an IP address, not a host name")]
    NamePrefix(String),
    #[error("`{text}`: cannot resolve host name: {source}")]
    Resolve {
        text: String,
        source: std::io::Error,
    },
    #[error("`{text}`: host name resolves to no address")]
    NoAddress { text: String },
}

/// An IP network: an address and a prefix length (host bits are cleared: `10.1.2.3/8` is
/// `10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// `None` when `prefix` is longer than the address (32 bits for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        let addr = addr.to_canonical();
        if prefix > max_prefix(addr) {
            return None;
        }
        let addr = match addr {
            IpAddr::V4(ip) => IpAddr::V4(Ipv4Addr::from(u32::from(ip) & mask32(prefix))),
            IpAddr::V6(ip) => IpAddr::V6(Ipv6Addr::from(u128::from(ip) & mask128(prefix))),
        };
        Some(IpNet { addr, prefix })
    }

    /// The network holding exactly `addr`.
    pub fn host(addr: IpAddr) -> IpNet {
        let addr = addr.to_canonical();
        IpNet {
            addr,
            prefix: max_prefix(addr),
        }
    }

    /// Every address of both families.
    pub fn any() -> [IpNet; 2] {
        [
            IpNet {
                addr: IpAddr::from([0u8; 4]),
                prefix: 0,
            },
            IpNet {
                addr: IpAddr::from([0u16; 8]),
                prefix: 0,
            },
        ]
    }

    /// Whether `ip` (IPv4-mapped IPv6 addresses count as IPv4) lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(net) == u32::from(ip) & mask32(self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(net) == u128::from(ip) & mask128(self.prefix)
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One `--allow` entry: a network, an address or a host name (resolved once, at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowSpec {
    Net(IpNet),
    Host(String),
}

impl FromStr for AllowSpec {
    type Err = AllowError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let Ok(ip) = addr.parse::<IpAddr>() else {
            if prefix.is_some() {
                // `node1/24` is legal in portfwd's files but surprising on a command line.
                return Err(AllowError::NamePrefix(text.into()));
            }
            return Ok(AllowSpec::Host(text.to_string()));
        };
        let max = max_prefix(ip.to_canonical());
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().map_err(|_| AllowError::BadPrefix {
                text: text.into(),
                max,
            })?,
        };
        IpNet::new(ip, prefix)
            .map(AllowSpec::Net)
            .ok_or(AllowError::BadPrefix {
                text: text.into(),
                max,
            })
    }
}

impl AllowSpec {
    /// The networks this entry stands for; a host name becomes one network per address.
    pub fn resolve(&self) -> Result<Vec<IpNet>, AllowError> {
        match self {
            AllowSpec::Net(net) => Ok(vec![*net]),
            AllowSpec::Host(name) => {
                let addrs = resolve_host(name).map_err(|source| AllowError::Resolve {
                    text: name.clone(),
                    source,
                })?;
                if addrs.is_empty() {
                    return Err(AllowError::NoAddress { text: name.clone() });
                }
                Ok(addrs.into_iter().map(IpNet::host).collect())
            }
        }
    }
}

/// Every address `name` resolves to (system resolver: /etc/hosts, DNS, ...), without
/// duplicates, in the resolver's order.
pub fn resolve_host(name: &str) -> std::io::Result<Vec<IpAddr>> {
    let mut out: Vec<IpAddr> = Vec::new();
    for addr in (name, 0u16).to_socket_addrs()? {
        if !out.contains(&addr.ip()) {
            out.push(addr.ip());
        }
    }
    Ok(out)
}

/// The sources a listener accepts. Empty means everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    nets: Vec<IpNet>,
}

impl AllowList {
    /// Accept every source.
    pub fn any() -> AllowList {
        AllowList::default()
    }

    pub fn new(nets: Vec<IpNet>) -> AllowList {
        AllowList { nets }
    }

    /// Whether the list restricts anything.
    pub fn is_restricted(&self) -> bool {
        !self.nets.is_empty()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        self.nets.is_empty() || self.nets.iter().any(|net| net.contains(ip))
    }
}

/// A portfwd `from` filter: a network and a range of source ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFilter {
    pub net: Option<IpNet>,
    pub ports: RangeInclusive<u16>,
}

impl SourceFilter {
    /// Any address, any port.
    pub fn any() -> SourceFilter {
        SourceFilter {
            net: None,
            ports: 0..=u16::MAX,
        }
    }

    pub fn matches(&self, peer: SocketAddr) -> bool {
        self.net.is_none_or(|net| net.contains(peer.ip())) && self.ports.contains(&peer.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_match_by_prefix() {
        let net = IpNet::new(ip("127.0.0.3"), 30).unwrap();
        assert!(net.contains(ip("127.0.0.1")));
        assert!(!net.contains(ip("127.0.0.4")));
        assert!(
            IpNet::new(ip("127.0.0.255"), 24)
                .unwrap()
                .contains(ip("127.0.0.1"))
        );
        assert!(
            !IpNet::new(ip("127.0.1.1"), 24)
                .unwrap()
                .contains(ip("127.0.0.1"))
        );
        assert!(
            IpNet::new(ip("0.0.0.0"), 0)
                .unwrap()
                .contains(ip("8.8.8.8"))
        );
        assert!(!IpNet::new(ip("0.0.0.0"), 0).unwrap().contains(ip("::2")));
        assert!(IpNet::new(ip("fd00::"), 8).unwrap().contains(ip("fd12::1")));
        assert!(IpNet::host(ip("10.1.2.3")).contains(ip("::ffff:10.1.2.3")));
        assert!(IpNet::new(ip("10.0.0.0"), 33).is_none());
        assert_eq!(
            IpNet::new(ip("10.1.2.3"), 8).unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn allow_specs() {
        assert_eq!(
            "10.0.0.0/8".parse::<AllowSpec>().unwrap(),
            AllowSpec::Net(IpNet::new(ip("10.0.0.0"), 8).unwrap())
        );
        assert_eq!(
            "10.1.2.3".parse::<AllowSpec>().unwrap(),
            AllowSpec::Net(IpNet::host(ip("10.1.2.3")))
        );
        assert_eq!(
            "node1".parse::<AllowSpec>().unwrap(),
            AllowSpec::Host("node1".into())
        );
        let err = "10.0.0.0/40".parse::<AllowSpec>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "`10.0.0.0/40`: prefix length must be 0 to 32 for this address"
        );
        assert!("::1/129".parse::<AllowSpec>().is_err());
        let nets = "localhost".parse::<AllowSpec>().unwrap().resolve().unwrap();
        assert!(
            nets.iter()
                .any(|n| n.contains(ip("127.0.0.1")) || n.contains(ip("::1")))
        );
    }

    #[test]
    fn allow_list_and_source_filters() {
        let list = AllowList::new(vec![IpNet::new(ip("192.168.0.0"), 16).unwrap()]);
        assert!(list.permits(ip("192.168.7.7")));
        assert!(!list.permits(ip("127.0.0.1")));
        assert!(AllowList::any().permits(ip("127.0.0.1")));
        let filter = SourceFilter {
            net: Some(IpNet::host(ip("127.0.0.1"))),
            ports: 0..=5000,
        };
        assert!(filter.matches("127.0.0.1:4000".parse().unwrap()));
        assert!(!filter.matches("127.0.0.1:6000".parse().unwrap()));
        assert!(!filter.matches("127.0.0.2:4000".parse().unwrap()));
        assert!(SourceFilter::any().matches("[::1]:1".parse().unwrap()));
    }
}
