//! The network policy: which addresses a webhook may be delivered to.
//!
//! Tenants choose their webhook URLs, so without a guard a tenant could make the registry
//! send requests into its own network: to loopback services, to private ranges, or to the
//! cloud metadata address (169.254.169.254) that hands out credentials. This module says
//! no to every address that is not public unicast, unless the operator has allowed its
//! network explicitly (for tests, or for receivers on an internal network on purpose).
//!
//! IPv6 addresses that carry an IPv4 address inside them (IPv4-mapped, IPv4-compatible,
//! NAT64, 6to4) are judged by the IPv4 address they carry, since that is where the packets
//! may end up.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// IPv4 networks refused unless allowed, as (network, prefix length).
const REFUSED_V4: [(Ipv4Addr, u8); 15] = [
    // "This network", including the unspecified address 0.0.0.0.
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    // Private.
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    // Shared address space (carrier-grade NAT).
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    // Loopback.
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    // Link-local, including the cloud metadata address 169.254.169.254.
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    // Private.
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    // IETF protocol assignments.
    (Ipv4Addr::new(192, 0, 0, 0), 24),
    // Documentation (TEST-NET-1).
    (Ipv4Addr::new(192, 0, 2, 0), 24),
    // The deprecated 6to4 relay anycast.
    (Ipv4Addr::new(192, 88, 99, 0), 24),
    // Private.
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    // Benchmarking.
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    // Documentation (TEST-NET-2).
    (Ipv4Addr::new(198, 51, 100, 0), 24),
    // Documentation (TEST-NET-3).
    (Ipv4Addr::new(203, 0, 113, 0), 24),
    // Multicast.
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    // Reserved, including the broadcast address 255.255.255.255.
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// IPv6 networks refused inside global unicast (2000::/3); everything outside it is refused
/// anyway, once the forms that carry an IPv4 address have been judged by that address.
const REFUSED_V6: [(Ipv6Addr, u8); 3] = [
    // IETF protocol assignments, including Teredo 2001::/32 and benchmarking 2001:2::/48.
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    // Documentation.
    (Ipv6Addr::new(0x2001, 0x0db8, 0, 0, 0, 0, 0, 0), 32),
    // Documentation (the newer block).
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),
];

/// Which addresses deliveries may go to.
///
/// Public unicast addresses are permitted. Every other address (loopback, private,
/// link-local, multicast, documentation, reserved, ...) is refused unless it lies inside
/// one of the allowed networks. The default policy allows no extra network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    allow: Vec<IpNet>,
}

impl NetworkPolicy {
    /// A policy that also permits the addresses inside the given networks.
    #[must_use]
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// The networks allowed beyond public unicast.
    #[must_use]
    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    /// Whether a delivery may connect to this address.
    ///
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the IPv4 address itself, so it is
    /// also permitted when an allowed IPv4 network contains it.
    #[must_use]
    pub fn permits(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        let allowed = self
            .allow
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical));
        allowed || !is_refused(ip)
    }
}

/// Whether an address is refused by default: anything that is not public unicast.
fn is_refused(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_refused_v4(v4),
        IpAddr::V6(v6) => is_refused_v6(v6),
    }
}

fn is_refused_v4(ip: Ipv4Addr) -> bool {
    REFUSED_V4.iter().any(|&(net, len)| in_v4_net(ip, net, len))
}

fn is_refused_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_refused_v4(v4);
    }
    let global_unicast = in_v6_net(ip, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3);
    !global_unicast || REFUSED_V6.iter().any(|&(net, len)| in_v6_net(ip, net, len))
}

/// The IPv4 address carried by an IPv6 address of a form that embeds one: IPv4-mapped
/// (`::ffff:0:0/96`), IPv4-compatible (`::/96`, which also holds `::` and `::1`), NAT64
/// (`64:ff9b::/96`) and 6to4 (`2002::/16`, the address in bits 16 to 48).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let mapped = Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0);
    let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);
    if in_v6_net(ip, mapped, 96)
        || in_v6_net(ip, Ipv6Addr::UNSPECIFIED, 96)
        || in_v6_net(ip, nat64, 96)
    {
        Some(last)
    } else if in_v6_net(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]))
    } else {
        None
    }
}

fn in_v4_net(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_v6_net(ip: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an IP address")
    }

    /// (address, permitted by the default policy, what it is).
    const DEFAULT_CASES: &[(&str, bool, &str)] = &[
        ("0.0.0.0", false, "unspecified"),
        ("0.1.2.3", false, "this network"),
        ("10.0.0.1", false, "private 10/8"),
        ("10.255.255.255", false, "private 10/8"),
        ("100.63.255.255", true, "just below shared 100.64/10"),
        ("100.64.0.1", false, "shared (CGNAT)"),
        ("100.127.255.255", false, "shared (CGNAT)"),
        ("100.128.0.0", true, "just above shared 100.64/10"),
        ("127.0.0.1", false, "loopback"),
        ("127.255.255.254", false, "loopback"),
        ("169.254.169.254", false, "cloud metadata (link-local)"),
        ("169.254.0.1", false, "link-local"),
        ("172.15.255.255", true, "just below private 172.16/12"),
        ("172.16.0.1", false, "private 172.16/12"),
        ("172.31.255.255", false, "private 172.16/12"),
        ("172.32.0.0", true, "just above private 172.16/12"),
        ("192.0.0.8", false, "IETF protocol assignments"),
        ("192.0.2.10", false, "documentation TEST-NET-1"),
        ("192.88.99.1", false, "6to4 relay anycast"),
        ("192.168.1.1", false, "private 192.168/16"),
        ("198.17.255.255", true, "just below benchmarking 198.18/15"),
        ("198.18.0.1", false, "benchmarking"),
        ("198.19.255.255", false, "benchmarking"),
        ("198.20.0.0", true, "just above benchmarking 198.18/15"),
        ("198.51.100.7", false, "documentation TEST-NET-2"),
        ("203.0.113.9", false, "documentation TEST-NET-3"),
        ("224.0.0.1", false, "multicast"),
        ("239.255.255.250", false, "multicast"),
        ("240.0.0.1", false, "reserved"),
        ("255.255.255.255", false, "broadcast"),
        ("1.1.1.1", true, "public"),
        ("8.8.8.8", true, "public"),
        ("93.184.215.14", true, "public"),
        ("::", false, "IPv6 unspecified"),
        ("::1", false, "IPv6 loopback"),
        ("fc00::1", false, "unique local"),
        ("fd12:3456:789a::1", false, "unique local"),
        ("fe80::1", false, "IPv6 link-local"),
        ("fec0::1", false, "site-local (deprecated)"),
        ("ff02::1", false, "IPv6 multicast"),
        ("2001:db8::1", false, "IPv6 documentation"),
        ("3fff::1", false, "IPv6 documentation (3fff::/20)"),
        ("2001::1", false, "Teredo"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", false, "Teredo"),
        ("2001:2::1", false, "IPv6 benchmarking"),
        ("100::1", false, "discard-only"),
        ("::ffff:127.0.0.1", false, "IPv4-mapped loopback"),
        ("::ffff:169.254.169.254", false, "IPv4-mapped metadata"),
        ("::ffff:10.0.0.1", false, "IPv4-mapped private"),
        ("::ffff:8.8.8.8", true, "IPv4-mapped public"),
        ("::127.0.0.1", false, "IPv4-compatible loopback"),
        ("::10.0.0.1", false, "IPv4-compatible private"),
        ("64:ff9b::a00:1", false, "NAT64 of 10.0.0.1"),
        ("64:ff9b::a9fe:a9fe", false, "NAT64 of 169.254.169.254"),
        ("64:ff9b::808:808", true, "NAT64 of 8.8.8.8"),
        ("64:ff9b:1::a00:1", false, "local-use NAT64"),
        ("2002:7f00:1::", false, "6to4 of 127.0.0.1"),
        ("2002:a9fe:a9fe::1", false, "6to4 of 169.254.169.254"),
        ("2002:808:808::1", true, "6to4 of 8.8.8.8"),
        ("2606:4700:4700::1111", true, "public IPv6"),
        ("2a00:1450:4001:81b::200e", true, "public IPv6"),
    ];

    #[test]
    fn default_policy_refuses_everything_but_public_unicast() {
        let policy = NetworkPolicy::default();
        for &(address, expected, what) in DEFAULT_CASES {
            assert_eq!(
                policy.permits(ip(address)),
                expected,
                "{address} ({what}) should be {}",
                if expected { "permitted" } else { "refused" }
            );
        }
    }

    #[test]
    fn allow_list_opens_only_its_networks() {
        let allow = vec!["127.0.0.0/8".parse().expect("network")];
        let policy = NetworkPolicy::new(allow);
        let cases: &[(&str, bool)] = &[
            ("127.0.0.1", true),
            ("127.1.2.3", true),
            ("::ffff:127.0.0.1", true),
            ("10.0.0.1", false),
            ("::1", false),
            ("169.254.169.254", false),
            ("::ffff:169.254.169.254", false),
            ("64:ff9b::a00:1", false),
            ("8.8.8.8", true),
        ];
        for &(address, expected) in cases {
            assert_eq!(policy.permits(ip(address)), expected, "{address}");
        }
    }

    #[test]
    fn allow_list_of_ipv6_networks() {
        let allow = vec![
            "::1/128".parse().expect("network"),
            "fd00::/8".parse().expect("network"),
        ];
        let policy = NetworkPolicy::new(allow);
        assert!(policy.permits(ip("::1")));
        assert!(policy.permits(ip("fd00::5")));
        assert!(!policy.permits(ip("fc00::5")));
        assert!(!policy.permits(ip("127.0.0.1")));
        assert_eq!(policy.allowed().len(), 2);
    }
}
