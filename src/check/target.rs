//! The targets of an active check: what the command line names, and
//! nothing else.
//!
//! Owns: parsing `HOST`, `HOST:PORT`, `[IPv6]:PORT`, a bare IPv6 address
//! and `CIDR` targets and the `--ports` list; resolving host names; the
//! `--max-targets` cap on distinct addresses; the address family of
//! `--source`. Every problem is an error before anything is sent.
//!
//! Must not: connect anywhere, or add an address that was neither named
//! nor inside a named network (a name's own addresses count as named).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use ipnet::IpNet;

/// The ports checked on a target named without one (the command line's
/// default is written in `main.rs`; only the tests use this one).
#[cfg(test)]
pub const DEFAULT_PORTS: [u16; 2] = [209, 628];

/// One address and port to check, with the target it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// The target as the command line named it (`mail.example.net`,
    /// `192.0.2.0/28`).
    pub target: String,
    pub addr: SocketAddr,
}

/// `209,628,7000`: each port 1–65535, duplicates dropped, order kept.
pub fn parse_ports(s: &str) -> Result<Vec<u16>, String> {
    let mut v = Vec::new();
    for p in s.split(',') {
        let p = p.trim();
        let port = parse_port(p).map_err(|e| format!("--ports: {e}"))?;
        if !v.contains(&port) {
            v.push(port);
        }
    }
    Ok(v)
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u32>() {
        Ok(n) if (1..=65_535).contains(&n) => Ok(n as u16),
        _ => Err(format!("bad port {p:?} (1 to 65535)")),
    }
}

/// What one command-line target names, before resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Spec {
    Net(IpNet),
    Host(String, Option<u16>),
    Ip(IpAddr, Option<u16>),
}

fn parse_spec(t: &str) -> Result<Spec, String> {
    let t = t.trim();
    if t.is_empty() {
        return Err("empty target".into());
    }
    if t.contains('/') {
        let bare = t.replace(['[', ']'], "");
        let net: IpNet = bare
            .parse()
            .map_err(|_| format!("bad network {t:?} (e.g. 192.0.2.0/28 or 2001:db8::/120)"))?;
        return Ok(Spec::Net(net.trunc()));
    }
    if let Some(rest) = t.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("bad target {t:?}: no closing ]"))?;
        let ip: Ipv6Addr = ip
            .parse()
            .map_err(|_| format!("bad target {t:?}: not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(parse_port(p.strip_prefix(':').ok_or_else(|| {
                format!("bad target {t:?}: expected :PORT after ]")
            })?)?),
        };
        return Ok(Spec::Ip(IpAddr::V6(ip), port));
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(Spec::Ip(ip, None));
    }
    let (host, port) = match t.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(parse_port(p)?)),
        Some(_) => {
            return Err(format!(
                "bad target {t:?}: write an IPv6 address with a port as [ADDR]:PORT"
            ))
        }
        None => (t, None),
    };
    if host.is_empty() {
        return Err(format!("bad target {t:?}: no host"));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Spec::Ip(ip, port));
    }
    let ok = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !ok || host.len() > 253 {
        return Err(format!("bad target {t:?}: not a host name or address"));
    }
    Ok(Spec::Host(host.to_string(), port))
}

/// The addresses of a network: for IPv4 shorter than /31 without its
/// network and broadcast addresses (as `ipnet` counts hosts), for IPv6
/// every address.
fn net_size(net: &IpNet) -> u128 {
    match net {
        IpNet::V4(n) => {
            let all = 1u128 << (32 - u32::from(n.prefix_len()));
            if n.prefix_len() < 31 {
                all - 2
            } else {
                all
            }
        }
        IpNet::V6(n) => {
            let bits = 128 - u32::from(n.prefix_len());
            if bits >= 128 {
                u128::MAX
            } else {
                1u128 << bits
            }
        }
    }
}

fn net_addrs(net: &IpNet) -> Vec<IpAddr> {
    match net {
        IpNet::V4(n) => n.hosts().map(IpAddr::V4).collect(),
        IpNet::V6(n) => {
            let first = u128::from(n.network());
            let count = net_size(net);
            (0..count)
                .map(|i| IpAddr::V6(Ipv6Addr::from(first.wrapping_add(i))))
                .collect()
        }
    }
}

/// Resolves and expands the targets into jobs (address × port), in the
/// order named. `family` is `--source`'s: addresses of the other family
/// are an error when named literally, and skipped when a name resolves to
/// both. More than `max_targets` distinct addresses is an error.
// Long: resolution and expansion, the family and cap rules applied in the order targets are named.
pub fn expand(
    targets: &[String],
    ports: &[u16],
    max_targets: usize,
    source: Option<IpAddr>,
) -> Result<Vec<Job>, String> {
    let mut addrs: Vec<IpAddr> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    let same_family = |ip: &IpAddr| source.is_none_or(|s| s.is_ipv4() == ip.is_ipv4());
    let family_error = |t: &str, ip: &IpAddr| {
        format!(
            "target {t} is {} but --source {} is not",
            if ip.is_ipv4() { "IPv4" } else { "IPv6" },
            source.map(|s| s.to_string()).unwrap_or_default()
        )
    };
    for t in targets {
        let spec = parse_spec(t)?;
        let (ips, port): (Vec<IpAddr>, Option<u16>) = match spec {
            Spec::Net(net) => {
                let fresh = max_targets.saturating_sub(addrs.len()) as u128;
                let size = net_size(&net);
                if size > fresh {
                    return Err(format!(
                        "{t} holds {} addresses, more than --max-targets {max_targets}{}",
                        if size == u128::MAX {
                            "2^128".to_string()
                        } else {
                            size.to_string()
                        },
                        if addrs.is_empty() {
                            String::new()
                        } else {
                            format!(" allows after the {} before it", addrs.len())
                        }
                    ));
                }
                if !same_family(&net.network()) {
                    return Err(family_error(t, &net.network()));
                }
                (net_addrs(&net), None)
            }
            Spec::Ip(ip, port) => {
                if !same_family(&ip) {
                    return Err(family_error(t, &ip));
                }
                (vec![ip], port)
            }
            Spec::Host(host, port) => {
                let resolved: Vec<IpAddr> = (host.as_str(), 0u16)
                    .to_socket_addrs()
                    .map_err(|e| format!("cannot resolve {host}: {e}"))?
                    .map(|a| a.ip())
                    .collect();
                let mut ips: Vec<IpAddr> = Vec::new();
                for ip in resolved.into_iter().filter(|ip| same_family(ip)) {
                    if !ips.contains(&ip) {
                        ips.push(ip);
                    }
                }
                if ips.is_empty() {
                    return Err(format!(
                        "cannot resolve {host}: no {} address",
                        match source {
                            Some(IpAddr::V4(_)) => "IPv4",
                            Some(IpAddr::V6(_)) => "IPv6",
                            None => "",
                        }
                    ));
                }
                (ips, port)
            }
        };
        for ip in ips {
            if !addrs.contains(&ip) {
                addrs.push(ip);
                if addrs.len() > max_targets {
                    return Err(format!(
                        "more than --max-targets {max_targets} addresses (at {t})"
                    ));
                }
            }
            let ports: Vec<u16> = match port {
                Some(p) => vec![p],
                None => ports.to_vec(),
            };
            for p in ports {
                let addr = SocketAddr::new(ip, p);
                if !jobs.iter().any(|j| j.addr == addr) {
                    jobs.push(Job {
                        target: t.trim().to_string(),
                        addr,
                    });
                }
            }
        }
    }
    Ok(jobs)
}

/// The unspecified address of `ip`'s family.
pub fn unspecified_like(ip: &IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(jobs: &[Job]) -> Vec<String> {
        jobs.iter().map(|j| j.addr.to_string()).collect()
    }

    #[test]
    fn forms_of_a_target() {
        let j = expand(
            &[
                "192.0.2.25".into(),
                "192.0.2.26:2209".into(),
                "[2001:db8::5]:628".into(),
                "2001:db8::6".into(),
                "[2001:db8::7]".into(),
            ],
            &DEFAULT_PORTS,
            256,
            None,
        )
        .unwrap();
        assert_eq!(
            addrs(&j),
            [
                "192.0.2.25:209",
                "192.0.2.25:628",
                "192.0.2.26:2209",
                "[2001:db8::5]:628",
                "[2001:db8::6]:209",
                "[2001:db8::6]:628",
                "[2001:db8::7]:209",
                "[2001:db8::7]:628",
            ]
        );
        assert_eq!(j[0].target, "192.0.2.25");
    }

    #[test]
    fn networks_and_the_cap() {
        let j = expand(&["192.0.2.0/29".into()], &[209], 256, None).unwrap();
        assert_eq!(j.len(), 6, "network and broadcast addresses left out");
        assert_eq!(j[0].addr.to_string(), "192.0.2.1:209");
        assert_eq!(j[0].target, "192.0.2.0/29");
        let j = expand(
            &["192.0.2.7/32".into(), "2001:db8::/126".into()],
            &[209],
            5,
            None,
        )
        .unwrap();
        assert_eq!(j.len(), 5);
        assert!(expand(&["192.0.2.0/24".into()], &[209], 256, None).is_ok());
        let e = expand(&["198.51.100.0/23".into()], &[209], 256, None).unwrap_err();
        assert!(
            e.contains("510 addresses") && e.contains("--max-targets 256"),
            "{e}"
        );
        let e = expand(&["2001:db8::/32".into()], &[209], 256, None).unwrap_err();
        assert!(e.contains("--max-targets"), "{e}");
        let e = expand(
            &[
                "192.0.2.1".into(),
                "192.0.2.2".into(),
                "192.0.2.8/30".into(),
            ],
            &[209],
            3,
            None,
        )
        .unwrap_err();
        assert!(e.contains("--max-targets 3"), "{e}");
        // The same address named twice counts once.
        let j = expand(
            &["192.0.2.1".into(), "192.0.2.1:628".into()],
            &[209],
            1,
            None,
        )
        .unwrap();
        assert_eq!(addrs(&j), ["192.0.2.1:209", "192.0.2.1:628"]);
    }

    #[test]
    fn bad_targets_are_errors() {
        for (t, want) in [
            ("192.0.2.1:0", "bad port"),
            ("192.0.2.1:65536", "bad port"),
            ("192.0.2.1:smtp", "bad port"),
            ("[2001:db8::1]:x", "bad port"),
            ("[2001:db8::1", "no closing"),
            ("2001:db8::1:209x", "IPv6"),
            ("192.0.2.0/33", "bad network"),
            ("host name", "not a host name"),
            (":209", "no host"),
            ("", "empty"),
        ] {
            let e = expand(&[t.into()], &[209], 256, None).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
        assert!(parse_ports("209,0").is_err());
        assert!(parse_ports("209,,628").is_err());
        assert_eq!(parse_ports("628, 209,628").unwrap(), [628, 209]);
    }

    #[test]
    fn source_family() {
        let v4 = Some("198.51.100.9".parse().unwrap());
        let e = expand(&["[2001:db8::1]:209".into()], &[209], 256, v4).unwrap_err();
        assert!(e.contains("IPv6") && e.contains("--source"), "{e}");
        assert!(expand(&["192.0.2.1".into()], &[209], 256, v4).is_ok());
    }

    #[test]
    fn names_resolve_or_fail() {
        let j = expand(&["localhost:209".into()], &[628], 256, None).unwrap();
        assert!(j
            .iter()
            .all(|j| j.addr.ip().is_loopback() && j.addr.port() == 209));
        let e = expand(&["no-such-host.invalid".into()], &[209], 256, None).unwrap_err();
        assert!(e.starts_with("cannot resolve no-such-host.invalid"), "{e}");
    }
}
