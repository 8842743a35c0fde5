//! CIDR arithmetic on plain addresses, with `ipnet` underneath: parsing `addr/prefix`,
//! the network of an address, netmasks, membership, and the integer form host-local
//! allocates in. Pure functions: it opens no socket and knows no CNI or fast-path type.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};

/// `addr/prefix` with the host bits kept (CNI addresses carry them), or `None` when `s`
/// is not one or the prefix is too long for the family.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = s.split_once('/')?;
    let net = IpNet::new(addr.parse().ok()?, prefix.parse().ok()?).ok()?;
    Some((net.addr(), net.prefix_len()))
}

/// `ip/prefix` as an `IpNet`, the prefix cut to the family's length.
fn net(ip: IpAddr, prefix: u8) -> IpNet {
    let max = if ip.is_ipv6() { 128 } else { 32 };
    IpNet::new(ip, prefix.min(max)).unwrap_or_else(|_| IpNet::from(ip))
}

/// The network address of `ip/prefix` (the host bits cleared).
pub fn network(ip: IpAddr, prefix: u8) -> IpAddr {
    net(ip, prefix).network()
}

/// The network address of an IPv4 `ip/prefix`.
pub fn network_v4(ip: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Net::new(ip, prefix.min(32)).map_or(ip, |n| n.network())
}

/// The IPv4 netmask of a prefix length (`24` is `255.255.255.0`).
pub fn netmask_v4(prefix: u8) -> Ipv4Addr {
    Ipv4Net::new(Ipv4Addr::UNSPECIFIED, prefix.min(32)).map_or(Ipv4Addr::BROADCAST, |n| n.netmask())
}

/// Whether `ip` lies in `net/prefix` (never across families).
pub fn same_net(net_addr: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    net(net_addr, prefix).contains(&ip)
}

/// An address as one integer (IPv4 in the low 32 bits).
pub fn to_int(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The inverse of [`to_int`] for the given family (IPv4 takes the low 32 bits).
pub fn from_int(x: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(x))
    } else {
        IpAddr::V4(Ipv4Addr::from(x as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn cidrs_parse_with_their_host_bits() {
        let cases = [
            ("10.88.0.2/16", Some((ip("10.88.0.2"), 16))),
            ("fd00::1/64", Some((ip("fd00::1"), 64))),
            ("10.0.0.0/0", Some((ip("10.0.0.0"), 0))),
            ("10.0.0.1/33", None),
            ("fd00::/129", None),
            ("10.0.0.1", None),
            ("10.0.0.1/x", None),
            ("nope/8", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_cidr(s), want, "{s}");
        }
    }

    #[test]
    fn networks_masks_and_membership() {
        assert_eq!(network(ip("10.99.7.5"), 24), ip("10.99.7.0"));
        assert_eq!(network(ip("fd00::1:2"), 112), ip("fd00::1:0"));
        assert_eq!(
            network_v4("224.1.2.3".parse().expect("ip"), 4),
            Ipv4Addr::new(224, 0, 0, 0)
        );
        assert_eq!(
            network_v4(Ipv4Addr::new(10, 0, 0, 1), 0),
            Ipv4Addr::UNSPECIFIED
        );
        assert_eq!(netmask_v4(20), Ipv4Addr::new(255, 255, 240, 0));
        assert_eq!(netmask_v4(32), Ipv4Addr::BROADCAST);
        assert_eq!(netmask_v4(0), Ipv4Addr::UNSPECIFIED);
        assert!(same_net(ip("10.1.0.1"), 16, ip("10.1.255.3")));
        assert!(!same_net(ip("10.1.0.1"), 16, ip("10.2.0.1")));
        assert!(!same_net(ip("10.1.0.1"), 0, ip("::1")));
        let v6 = ip("fd00::7");
        assert_eq!(from_int(to_int(v6), true), v6);
        assert_eq!(from_int(to_int(ip("10.0.0.9")), false), ip("10.0.0.9"));
    }
}
