//! Caps per peer address: how many handshakes in progress and how many open
//! connections one address may hold, so that one address (one attacker, one broken
//! client in a loop) cannot take every slot of the server-wide caps.
//!
//! A [`Peers`] table counts both per address; a [`PeerClaim`] is one unit of it,
//! given back when dropped (it rides in the handshake permit, or in the connection's
//! slot). An address is an IPv4 address, or an IPv6 /64 (what one IPv6 host is given:
//! counting single IPv6 addresses would let one host take 2⁶⁴ of them); an
//! IPv4-mapped IPv6 address (a dual-stack listener) counts as its IPv4 address.
//!
//! The table holds an entry only for an address with something in progress or open,
//! so it is bounded by the server-wide caps (`max_handshakes + max_connections`
//! entries at most), and an entry is removed with its last claim.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

/// What one peer address holds now (see [`Lifecycle::peer_load`]).
///
/// [`Lifecycle::peer_load`]: crate::Lifecycle::peer_load
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerLoad {
    /// Opening handshakes in progress (between the TCP accept and the end of the
    /// handshake).
    pub handshakes: usize,
    /// Open connections (admitted and not torn down yet).
    pub connections: usize,
}

/// Which count a claim is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Handshake,
    Connection,
}

/// The counts per address, and the caps.
#[derive(Debug)]
pub(crate) struct Peers {
    max_handshakes: usize,
    max_connections: usize,
    table: Mutex<HashMap<IpAddr, PeerLoad>>,
}

impl Peers {
    pub(crate) fn new(max_handshakes: usize, max_connections: usize) -> Arc<Peers> {
        Arc::new(Peers {
            max_handshakes,
            max_connections,
            table: Mutex::new(HashMap::new()),
        })
    }

    /// One more handshake from `peer`: [`PastCap`] past the cap. With no cap
    /// (`usize::MAX`) nothing is counted.
    pub(crate) fn handshake(
        self: &Arc<Self>,
        peer: SocketAddr,
    ) -> Result<Option<PeerClaim>, PastCap> {
        self.claim(peer, Kind::Handshake, self.max_handshakes)
    }

    /// One more open connection from `peer`: [`PastCap`] past the cap. With no cap
    /// (`usize::MAX`) nothing is counted.
    pub(crate) fn connection(
        self: &Arc<Self>,
        peer: SocketAddr,
    ) -> Result<Option<PeerClaim>, PastCap> {
        self.claim(peer, Kind::Connection, self.max_connections)
    }

    fn claim(
        self: &Arc<Self>,
        peer: SocketAddr,
        kind: Kind,
        max: usize,
    ) -> Result<Option<PeerClaim>, PastCap> {
        if max == usize::MAX {
            return Ok(None);
        }
        let key = peer_key(peer.ip());
        let mut table = self.table();
        let load = table.entry(key).or_default();
        let count = match kind {
            Kind::Handshake => &mut load.handshakes,
            Kind::Connection => &mut load.connections,
        };
        if *count >= max {
            if load.handshakes == 0 && load.connections == 0 {
                table.remove(&key);
            }
            return Err(PastCap);
        }
        *count += 1;
        Ok(Some(PeerClaim {
            peers: self.clone(),
            key,
            kind,
        }))
    }

    /// What `ip`'s address holds now.
    pub(crate) fn load(&self, ip: IpAddr) -> PeerLoad {
        self.table().get(&peer_key(ip)).copied().unwrap_or_default()
    }

    fn table(&self) -> MutexGuard<'_, HashMap<IpAddr, PeerLoad>> {
        // Counters only: consistent even after a panic elsewhere.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An address at its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PastCap;

/// One handshake or connection of an address, counted until dropped.
#[derive(Debug)]
pub(crate) struct PeerClaim {
    peers: Arc<Peers>,
    key: IpAddr,
    kind: Kind,
}

impl Drop for PeerClaim {
    fn drop(&mut self) {
        let mut table = self.peers.table();
        let Some(load) = table.get_mut(&self.key) else {
            return;
        };
        match self.kind {
            Kind::Handshake => load.handshakes = load.handshakes.saturating_sub(1),
            Kind::Connection => load.connections = load.connections.saturating_sub(1),
        }
        if load.handshakes == 0 && load.connections == 0 {
            table.remove(&self.key);
        }
    }
}

/// The address a peer counts under: IPv4 as it is (an IPv4-mapped IPv6 address as
/// its IPv4 address), IPv6 as its /64.
pub(crate) fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 1234)
    }

    #[test]
    fn an_address_holds_at_most_its_caps_and_gets_them_back() {
        let peers = Peers::new(2, 1);
        let a = peers.handshake(at("10.0.0.1")).unwrap();
        let b = peers.handshake(at("10.0.0.1")).unwrap();
        assert!(peers.handshake(at("10.0.0.1")).is_err(), "third handshake");
        assert!(
            peers.handshake(at("10.0.0.2")).unwrap().is_some(),
            "another address"
        );
        let c = peers.connection(at("10.0.0.1")).unwrap();
        assert!(
            peers.connection(at("10.0.0.1")).is_err(),
            "second connection"
        );
        let load = peers.load("10.0.0.1".parse().unwrap());
        assert_eq!((load.handshakes, load.connections), (2, 1));
        drop(a);
        assert!(
            peers.handshake(at("10.0.0.1")).unwrap().is_some(),
            "a slot freed"
        );
        drop((b, c));
        assert_eq!(peers.load("10.0.0.1".parse().unwrap()), PeerLoad::default());
        assert!(peers.table().is_empty(), "no entry without a claim");
    }

    #[test]
    fn a_refusal_leaves_no_entry_behind() {
        let peers = Peers::new(0, 0);
        assert!(peers.handshake(at("10.0.0.1")).is_err());
        assert!(peers.table().is_empty());
    }

    #[test]
    fn no_cap_counts_nothing() {
        let peers = Peers::new(usize::MAX, usize::MAX);
        for _ in 0..10 {
            assert!(peers.handshake(at("10.0.0.1")).unwrap().is_none());
        }
        assert!(peers.table().is_empty());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let peers = Peers::new(1, 1);
        let _a = peers.handshake(at("2001:db8:1:2::1")).unwrap();
        assert!(
            peers.handshake(at("2001:db8:1:2:ffff::9")).is_err(),
            "the same /64"
        );
        assert!(
            peers.handshake(at("2001:db8:1:3::1")).unwrap().is_some(),
            "another /64"
        );
        let _b = peers.handshake(at("192.0.2.7")).unwrap();
        assert!(
            peers.handshake(at("::ffff:192.0.2.7")).is_err(),
            "mapped IPv4"
        );
    }
}
