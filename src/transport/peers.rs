//! Open connections per client address, shared by every worker of the node: the cap that
//! keeps one address from holding the server's connections (slow or not).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Counts of open connections by client address.
#[derive(Clone, Default)]
pub struct Peers {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One admitted connection; dropping it frees its place.
pub struct PeerSlot {
    peers: Peers,
    key: IpAddr,
}

/// The address a cap counts by: an IPv4 address as is (also when it arrives IPv4-mapped), an
/// IPv6 address by its /64, the block one subscriber is normally given.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Peers {
    /// A place for one more connection from `ip`, or `None` when it already holds `cap`
    /// (0: no cap).
    pub fn admit(&self, ip: IpAddr, cap: usize) -> Option<PeerSlot> {
        let key = key(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(key).or_insert(0);
        if cap != 0 && *n >= cap {
            if *n == 0 {
                open.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(PeerSlot { peers: self.clone(), key })
    }

    /// Connections `ip` holds now.
    pub fn open(&self, ip: IpAddr) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).get(&key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.peers.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Idle addresses leave the table, so its size is the number of addresses
                // holding a connection, never every address ever seen.
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_the_cap_and_a_closed_connection_frees_its_place() {
        let peers = Peers::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let a = peers.admit(ip, 2);
        let b = peers.admit(ip, 2);
        assert!(a.is_some() && b.is_some());
        assert!(peers.admit(ip, 2).is_none(), "a third connection is over the cap");
        assert!(peers.admit("192.0.2.8".parse().unwrap(), 2).is_some(), "other addresses are not affected");
        drop(a);
        assert!(peers.admit(ip, 2).is_some(), "a closed connection frees its place");
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_ipv4_as_ipv4() {
        let peers = Peers::default();
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let two: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let _a = peers.admit(one, 1);
        assert!(peers.admit(two, 1).is_none(), "same /64");
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let _b = peers.admit(v4, 1);
        assert!(peers.admit(mapped, 1).is_none(), "an IPv4-mapped address is the IPv4 address");
    }

    #[test]
    fn zero_means_no_cap_and_the_table_forgets_idle_addresses() {
        let peers = Peers::default();
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let slots: Vec<_> = (0..1000).filter_map(|_| peers.admit(ip, 0)).collect();
        assert_eq!(slots.len(), 1000);
        assert_eq!(peers.open(ip), 1000);
        drop(slots);
        assert_eq!(peers.open(ip), 0);
        assert!(peers.open.lock().unwrap_or_else(PoisonError::into_inner).is_empty());
    }
}
