//! Where the host connects on a customer's behalf: plugins' outbound HTTP
//! ([`crate::plugins::egress`]) and customers' SIP telephony accounts
//! reach public addresses only, unless the operator allows a range. These
//! are the rules both apply.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// What kind of non-public address `ip` is (loopback, private, link-local,
/// ...); `None` for a public address.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_kind(v4);
            }
            let s = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("unique local (private)")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if s[0] & 0xff00 == 0xff00 {
                Some("multicast")
            } else if s[0] == 0x64 && s[1] == 0xff9b {
                Some("NAT64 (it embeds an IPv4 address)")
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("documentation")
            } else if v6 == Ipv6Addr::from(0u128) || (s[0..6] == [0; 6]) {
                Some("IPv4-compatible (deprecated)")
            } else {
                None
            }
        }
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local (cloud metadata)")
    } else if o[0] == 100 && o[1] & 0xc0 == 64 {
        Some("carrier-grade NAT")
    } else if o[0] == 0 {
        Some("unspecified (\"this network\")")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() || o[0] >= 240 {
        Some("reserved")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("IETF protocol assignment")
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        Some("benchmarking")
    } else if ip.is_documentation() {
        Some("documentation")
    } else {
        None
    }
}

/// The ranges of operator setting `setting` (`10.0.0.0/8`, `127.0.0.1`);
/// the error names the setting, the bad entry and the form expected.
pub fn networks(setting: &str, list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "{setting}: '{s}' is not a network; write a range like \"10.1.0.0/16\" or an address like \"127.0.0.1\""
                    )
                })
        })
        .collect()
}

/// What kind of non-public address `ip` is, unless one of the operator's
/// `allowed` ranges contains it; `None` when it may be reached.
pub fn refused(ip: IpAddr, allowed: &[IpNet]) -> Option<&'static str> {
    non_public(ip).filter(|_| !allowed.iter().any(|n| n.contains(&ip)))
}
