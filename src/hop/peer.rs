//! Who is on the other end of a loopback TCP connection, from the kernel's own table
//! (`/proc/net/tcp`, `/proc/net/tcp6`: each row has the socket's owner uid). This is how the
//! pvlaunch process beside pvserver on a compute node accepts only pvserver's connection, and
//! never another user's on the same node. Where the table cannot be read (not Linux), the owner
//! is unknown and the caller refuses.

use std::io;
use std::net::{IpAddr, SocketAddr};

/// One row of the kernel's TCP table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRow {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The kernel's state number (`0A` is listening, `01` established).
    pub state: u8,
    /// The owner (absent from a truncated row).
    pub uid: Option<u32>,
    /// The socket's inode (0 when the row has none).
    pub inode: u64,
}

impl TcpRow {
    pub fn listening(&self) -> bool {
        self.state == 0x0A
    }
}

/// Parse `/proc/net/tcp` and `/proc/net/tcp6` text (header lines are skipped).
pub fn parse(text: &str) -> Vec<TcpRow> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _slot = fields.next()?;
            let local = endpoint(fields.next()?)?;
            let remote = endpoint(fields.next()?)?;
            let state = u8::from_str_radix(fields.next()?, 16).ok()?;
            // tx:rx queues, timer, retransmits, then uid, timeout, inode.
            let uid = fields.nth(3).and_then(|u| u.parse().ok());
            let inode = fields.nth(1).and_then(|i| i.parse().ok()).unwrap_or(0);
            Some(TcpRow {
                local,
                remote,
                state,
                uid,
                inode,
            })
        })
        .collect()
}

fn endpoint(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    Some(SocketAddr::new(
        hex_address(addr)?,
        u16::from_str_radix(port, 16).ok()?,
    ))
}

/// An address as the kernel prints it: each 32-bit word in host (little-endian) byte order.
pub fn hex_address(hex: &str) -> Option<IpAddr> {
    if !hex.is_ascii() {
        return None;
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    let mut swapped = Vec::with_capacity(bytes.len());
    for word in bytes.chunks(4) {
        swapped.extend(word.iter().rev());
    }
    match swapped.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(swapped).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(swapped).ok()?)),
        _ => None,
    }
}

/// Whether two addresses are the same, an IPv4 one also matching its IPv4-mapped IPv6 form.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |s: SocketAddr| match s.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(s, |v4| SocketAddr::new(IpAddr::V4(v4), s.port())),
        IpAddr::V4(_) => s,
    };
    canon(a) == canon(b)
}

/// The uid owning the peer's socket of a connection this process accepted on `local` from
/// `peer`, in `rows` (the kernel's table): the row whose local end is `peer` and whose remote
/// end is `local`.
pub fn owner_in(rows: &[TcpRow], peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    rows.iter()
        .find(|r| same(r.local, peer) && same(r.remote, local))
        .and_then(|r| r.uid)
}

/// [`owner_in`] over this machine's table. Only loopback peers have a row here; for any
/// other peer the answer is `None`.
pub fn owner(peer: SocketAddr, local: SocketAddr) -> io::Result<Option<u32>> {
    if !peer.ip().is_loopback() && !peer.ip().to_canonical().is_loopback() {
        return Ok(None);
    }
    let mut text = std::fs::read_to_string("/proc/net/tcp")?;
    if let Ok(six) = std::fs::read_to_string("/proc/net/tcp6") {
        text.push_str(&six);
    }
    Ok(owner_in(&parse(&text), peer, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2B67 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:B3F2 0100007F:2B67 01 00000000:00000000 00:00000000 00000000  1001        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:2B67 0100007F:B3F2 01 00000000:00000000 00:00000000 00000000  1000        0 4444 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn rows_are_read_with_their_owner() {
        let rows = parse(TABLE);
        assert_eq!(rows.len(), 3);
        assert!(rows[0].listening());
        assert_eq!(rows[0].local, "127.0.0.1:11111".parse().unwrap());
        assert_eq!(rows[0].uid, Some(1000));
        assert_eq!(rows[0].inode, 4242);
        assert_eq!(rows[1].remote, "127.0.0.1:11111".parse().unwrap());
    }

    #[test]
    fn the_peer_socket_names_its_owner() {
        let rows = parse(TABLE);
        let local = "127.0.0.1:11111".parse().unwrap();
        let peer = "127.0.0.1:46066".parse().unwrap();
        assert_eq!(owner_in(&rows, peer, local), Some(1001));
        // Our own side of the connection is not the peer.
        assert_eq!(owner_in(&rows, local, peer), Some(1000));
        assert_eq!(owner_in(&rows, "127.0.0.1:1".parse().unwrap(), local), None);
        // IPv4-mapped forms match.
        assert_eq!(
            owner_in(&rows, "[::ffff:127.0.0.1]:46066".parse().unwrap(), local),
            Some(1001)
        );
    }

    #[test]
    fn ipv6_rows_parse() {
        let six = "   0: 00000000000000000000000001000000:2B67 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     7        0 99 1";
        let rows = parse(six);
        assert_eq!(rows[0].local, "[::1]:11111".parse().unwrap());
        assert_eq!(rows[0].uid, Some(7));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_real_loopback_connection_is_ours() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, peer) = l.accept().unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        let me = crate::relay::effective_uid();
        assert_eq!(owner(peer, l.local_addr().unwrap()).unwrap(), Some(me));
        assert_eq!(
            owner("10.0.0.1:5".parse().unwrap(), l.local_addr().unwrap()).unwrap(),
            None
        );
    }
}
