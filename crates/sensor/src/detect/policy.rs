//! Site policy: local domains, trusted client networks, sanctioned servers.
//!
//! Owns: the relay policy words (docs/protocols.md, "Relay: the policy words") as data —
//! qmail `rcpthosts` semantics for local domains (`example.net` exact,
//! `.example.net` any subdomain, case-insensitive), CIDR networks of trusted
//! clients (qmail `RELAYCLIENT`, Postfix `mynetworks`), and the servers a site
//! runs on purpose — read from flags, a TOML policy file, or a qmail
//! `control/rcpthosts` file. A bad entry is an error naming its source, line
//! and entry; nothing starts with a half-read policy.
//!
//! Must not: look at traffic, or guess silently: when something is not
//! configured the default is stated ([`Policy::describe`]) and carried on
//! every relay event.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::Deserialize;

use qmwatch_proto::Protocol;

/// A policy error: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

/// One `rcpthosts`-style entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainRule {
    /// `example.net`: exactly this domain.
    Exact(String),
    /// `.example.net`: any subdomain of example.net (stored with the dot).
    Subdomains(String),
}

/// A server the site runs on purpose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sanctioned {
    pub ip: IpAddr,
    pub port: Option<u16>,
    pub protocol: Option<Protocol>,
}

impl Sanctioned {
    pub fn matches(&self, server: SocketAddr, protocol: Protocol) -> bool {
        self.ip == server.ip()
            && self.port.is_none_or(|p| p == server.port())
            && self.protocol.is_none_or(|p| p == protocol)
    }
}

/// Networks counted as trusted clients when none are configured: private,
/// loopback and link-local (what scanners take as "not external").
pub(crate) const DEFAULT_TRUSTED: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

/// The site policy that judges relaying.
#[derive(Clone, Debug)]
pub struct Policy {
    pub local_domains: Vec<DomainRule>,
    pub trusted: Vec<IpNet>,
    pub sanctioned: Vec<Sanctioned>,
    /// No local domain was configured.
    pub local_domains_defaulted: bool,
    /// No trusted network was configured (the defaults apply).
    pub trusted_defaulted: bool,
    /// Where the policy came from, for events and reports.
    pub sources: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        PolicyBuilder::default().build()
    }
}

/// Reserved example domains (RFC 2606/6761): never a real site's mail.
pub(crate) fn is_reserved_example(domain: &str) -> bool {
    let d = domain.trim_end_matches('.');
    // `d` is `e` or ends with `.e` (no string built per name: this runs
    // for every recipient of every relay attempt).
    let under = |e: &str| {
        d.strip_suffix(e)
            .is_some_and(|p| p.is_empty() || p.ends_with('.'))
    };
    [
        "example.com",
        "example.net",
        "example.org",
        "example",
        "test",
        "invalid",
    ]
    .into_iter()
    .any(under)
}

/// The domain of an envelope address, lower-cased; `None` without `@`.
/// Borrowed when it is lower case already (most are: no string to build
/// for each recipient judged).
pub(crate) fn domain_of(address: &str) -> Option<Cow<'_, str>> {
    let at = address.rfind('@')?;
    let d = address.get(at + 1..)?;
    let d = d.trim_end_matches(['>', ',', ' ']).trim_end_matches('.');
    Some(if d.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(d.to_ascii_lowercase())
    } else {
        Cow::Borrowed(d)
    })
}

impl Policy {
    /// Is `address` for one of the local domains? An address without `@`
    /// is local (qmail treats it so). With no local domain configured,
    /// nothing is known to be local.
    pub fn is_local(&self, address: &str) -> bool {
        let Some(domain) = domain_of(address) else {
            return true;
        };
        self.local_domains.iter().any(|r| match r {
            DomainRule::Exact(d) => *domain == **d,
            DomainRule::Subdomains(suffix) => domain.ends_with(suffix.as_str()),
        })
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    pub fn is_sanctioned(&self, server: SocketAddr, protocol: Protocol) -> bool {
        self.sanctioned.iter().any(|s| s.matches(server, protocol))
    }

    /// One line saying what judges relaying, e.g. for events.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.local_domains_defaulted {
            parts.push(
                "local domains: none configured (every recipient counts as foreign)".to_string(),
            );
        } else {
            parts.push(format!("local domains: {}", self.local_domains.len()));
        }
        if self.trusted_defaulted {
            parts.push("trusted clients: default (private, loopback, link-local)".to_string());
        } else {
            parts.push(format!("trusted networks: {}", self.trusted.len()));
        }
        parts.push(format!("sanctioned servers: {}", self.sanctioned.len()));
        if !self.sources.is_empty() {
            parts.push(format!("from {}", self.sources.join(", ")));
        }
        parts.join("; ")
    }
}

/// Collects policy entries from several sources, checking each.
#[derive(Default, Debug)]
pub struct PolicyBuilder {
    local: Vec<DomainRule>,
    trusted: Vec<IpNet>,
    sanctioned: Vec<Sanctioned>,
    sources: Vec<String>,
}

/// Parses one local-domain entry (`example.net` or `.example.net`).
pub(crate) fn parse_domain(entry: &str) -> Result<DomainRule, String> {
    let e = entry.trim();
    let (sub, body) = match e.strip_prefix('.') {
        Some(rest) => (true, rest),
        None => (false, e),
    };
    let body = body.trim_end_matches('.');
    let ok = !body.is_empty()
        && body.len() <= 253
        && body.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !ok {
        return Err(format!("not a domain: {entry:?}"));
    }
    let body = body.to_ascii_lowercase();
    Ok(if sub {
        DomainRule::Subdomains(format!(".{body}"))
    } else {
        DomainRule::Exact(body)
    })
}

/// Parses a network: CIDR, or a bare address (one host).
pub(crate) fn parse_net(entry: &str) -> Result<IpNet, String> {
    let e = entry.trim();
    // Postfix writes IPv6 networks in brackets: [::1]/128.
    let unbracketed = e.replacen('[', "", 1).replacen(']', "", 1);
    if let Ok(n) = unbracketed.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!("not an IP network: {entry:?}"))
}

/// Parses a sanctioned server: `IP`, `IP:PORT`, `[IPv6]:PORT`, each
/// optionally followed by `/qmtp` or `/qmqp`.
pub(crate) fn parse_sanctioned(entry: &str) -> Result<Sanctioned, String> {
    let e = entry.trim();
    let (addr, protocol) = match e.rsplit_once('/') {
        Some((a, p)) => {
            let proto = match p.to_ascii_lowercase().as_str() {
                "qmtp" => Protocol::Qmtp,
                "qmqp" => Protocol::Qmqp,
                _ => {
                    return Err(format!(
                        "unknown protocol {p:?} in {entry:?} (qmtp or qmqp)"
                    ))
                }
            };
            (a, Some(proto))
        }
        None => (e, None),
    };
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(Sanctioned {
            ip: sa.ip(),
            port: Some(sa.port()),
            protocol,
        });
    }
    let bare = addr.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => Ok(Sanctioned {
            ip,
            port: None,
            protocol,
        }),
        Err(_) => Err(format!("not a server address: {entry:?} (IP, IP:PORT or [IPv6]:PORT, optionally /qmtp or /qmqp)")),
    }
}

/// The TOML policy file: the same names as the flags.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default, rename = "local-domain")]
    local_domain: Vec<toml::Spanned<String>>,
    #[serde(default, rename = "trusted-net")]
    trusted_net: Vec<toml::Spanned<String>>,
    #[serde(default)]
    sanctioned: Vec<toml::Spanned<String>>,
    #[serde(default)]
    rcpthosts: Option<toml::Spanned<String>>,
}

fn line_of(text: &str, byte: usize) -> usize {
    text.get(..byte.min(text.len()))
        .map_or(1, |t| t.bytes().filter(|&b| b == b'\n').count() + 1)
}

impl PolicyBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn local_domain(&mut self, entry: &str, origin: &str) -> Result<(), PolicyError> {
        let r = parse_domain(entry).map_err(|e| PolicyError(format!("{origin}: {e}")))?;
        self.local.push(r);
        Ok(())
    }

    pub fn trusted_net(&mut self, entry: &str, origin: &str) -> Result<(), PolicyError> {
        let n = parse_net(entry).map_err(|e| PolicyError(format!("{origin}: {e}")))?;
        self.trusted.push(n);
        Ok(())
    }

    pub fn sanctioned(&mut self, entry: &str, origin: &str) -> Result<(), PolicyError> {
        let s = parse_sanctioned(entry).map_err(|e| PolicyError(format!("{origin}: {e}")))?;
        self.sanctioned.push(s);
        Ok(())
    }

    pub fn note_source(&mut self, s: impl Into<String>) {
        self.sources.push(s.into());
    }

    /// Reads a qmail `control/rcpthosts` file as it is: one domain per line,
    /// blank lines and `#` comments ignored.
    pub(crate) fn rcpthosts_text(&mut self, name: &str, text: &str) -> Result<(), PolicyError> {
        for (i, line) in text.lines().enumerate() {
            let entry = line.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            self.local_domain(entry, &format!("{name}: line {}", i + 1))?;
        }
        self.note_source(format!("rcpthosts {name}"));
        Ok(())
    }

    pub fn rcpthosts_file(&mut self, path: &str) -> Result<(), PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError(format!("{path}: cannot read rcpthosts: {e}")))?;
        self.rcpthosts_text(path, &text)
    }

    /// Reads a TOML policy file with the keys `local-domain`, `trusted-net`,
    /// `sanctioned` (lists of strings) and `rcpthosts` (a path).
    pub fn policy_text(&mut self, name: &str, text: &str) -> Result<(), PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            PolicyError(format!("{name}: line {line}: {}", e.message()))
        })?;
        let at =
            |s: &toml::Spanned<String>| format!("{name}: line {}", line_of(text, s.span().start));
        for d in &file.local_domain {
            self.local_domain(d.get_ref(), &at(d))?;
        }
        for n in &file.trusted_net {
            self.trusted_net(n.get_ref(), &at(n))?;
        }
        for s in &file.sanctioned {
            self.sanctioned(s.get_ref(), &at(s))?;
        }
        if let Some(r) = &file.rcpthosts {
            let path = std::path::Path::new(name)
                .parent()
                .map(|dir| dir.join(r.get_ref()))
                .unwrap_or_else(|| r.get_ref().into());
            self.rcpthosts_file(&path.to_string_lossy())
                .map_err(|e| PolicyError(format!("{}: {e}", at(r))))?;
        }
        self.note_source(format!("policy {name}"));
        Ok(())
    }

    pub fn policy_file(&mut self, path: &str) -> Result<(), PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError(format!("{path}: cannot read policy: {e}")))?;
        self.policy_text(path, &text)
    }

    pub fn build(self) -> Policy {
        let trusted_defaulted = self.trusted.is_empty();
        let trusted = if trusted_defaulted {
            DEFAULT_TRUSTED
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect()
        } else {
            self.trusted
        };
        Policy {
            local_domains_defaulted: self.local.is_empty(),
            local_domains: self.local,
            trusted,
            trusted_defaulted,
            sanctioned: self.sanctioned,
            sources: self.sources,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcpthosts_semantics() {
        let mut b = PolicyBuilder::new();
        b.rcpthosts_text(
            "rcpthosts",
            "# our domains\nexample.net\n\n  .Example.ORG  \n# end\n",
        )
        .unwrap();
        let p = b.build();
        assert!(p.is_local("joe@example.net"));
        assert!(p.is_local("JOE@EXAMPLE.NET"));
        assert!(!p.is_local("joe@sub.example.net"));
        assert!(p.is_local("joe@sub.example.org"));
        assert!(
            !p.is_local("joe@example.org"),
            "a dot entry matches subdomains only"
        );
        assert!(!p.is_local("joe@badexample.org"));
        assert!(!p.is_local("victim@example.com"));
        assert!(p.is_local("postmaster"), "no @: local");
        assert!(!p.local_domains_defaulted);
        assert!(p.trusted_defaulted);
    }

    #[test]
    fn bad_rcpthosts_entry_names_line() {
        let mut b = PolicyBuilder::new();
        let e = b
            .rcpthosts_text("control/rcpthosts", "example.net\nbad domain here\n")
            .unwrap_err();
        assert_eq!(
            e.0,
            "control/rcpthosts: line 2: not a domain: \"bad domain here\""
        );
    }

    #[test]
    fn networks_v4_v6_and_mapped() {
        let mut b = PolicyBuilder::new();
        b.trusted_net("127.0.0.0/24", "flag").unwrap();
        b.trusted_net("[::1]/128", "flag").unwrap();
        b.trusted_net("2001:db8::/32", "flag").unwrap();
        b.trusted_net("192.0.2.7", "flag").unwrap();
        let p = b.build();
        assert!(p.is_trusted("127.0.0.5".parse().unwrap()));
        assert!(!p.is_trusted("127.66.0.5".parse().unwrap()));
        assert!(p.is_trusted("::1".parse().unwrap()));
        assert!(p.is_trusted("2001:db8:1::9".parse().unwrap()));
        assert!(p.is_trusted("::ffff:127.0.0.9".parse().unwrap()));
        assert!(p.is_trusted("192.0.2.7".parse().unwrap()));
        assert!(!p.is_trusted("192.0.2.8".parse().unwrap()));
        assert!(!p.trusted_defaulted);
        assert!(PolicyBuilder::new()
            .trusted_net("10.0.0.0/33", "x")
            .is_err());
    }

    #[test]
    fn default_trust_is_private_loopback_link_local() {
        let p = Policy::default();
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "::1",
            "fe80::1",
            "fd00::1",
        ] {
            assert!(p.is_trusted(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["203.0.113.9", "198.51.100.1", "2001:db8::1"] {
            assert!(!p.is_trusted(ip.parse().unwrap()), "{ip}");
        }
        assert!(p.local_domains_defaulted);
    }

    #[test]
    fn sanctioned_forms() {
        let s = parse_sanctioned("198.51.100.25:209/qmtp").unwrap();
        assert!(s.matches("198.51.100.25:209".parse().unwrap(), Protocol::Qmtp));
        assert!(!s.matches("198.51.100.25:209".parse().unwrap(), Protocol::Qmqp));
        let s = parse_sanctioned("[2001:db8::25]:628").unwrap();
        assert!(s.matches("[2001:db8::25]:628".parse().unwrap(), Protocol::Qmqp));
        let s = parse_sanctioned("198.51.100.25").unwrap();
        assert!(s.matches("198.51.100.25:2209".parse().unwrap(), Protocol::Qmtp));
        let s = parse_sanctioned("2001:db8::25/qmqp").unwrap();
        assert!(s.matches("[2001:db8::25]:6628".parse().unwrap(), Protocol::Qmqp));
        assert!(parse_sanctioned("mail.example.net:209").is_err());
        assert!(parse_sanctioned("198.51.100.25:209/smtp").is_err());
    }

    #[test]
    fn toml_policy_and_errors_with_lines() {
        let text = "local-domain = [\"example.net\", \".example.org\"]\ntrusted-net = [\n  \"192.0.2.0/24\",\n  \"2001:db8::/32\",\n]\nsanctioned = [\"198.51.100.25:209/qmtp\"]\n";
        let mut b = PolicyBuilder::new();
        b.policy_text("site.toml", text).unwrap();
        let p = b.build();
        assert_eq!(p.local_domains.len(), 2);
        assert_eq!(p.trusted.len(), 2);
        assert_eq!(p.sanctioned.len(), 1);
        let bad = "local-domain = [\"example.net\"]\ntrusted-net = [\n  \"192.0.2.0/24\",\n  \"not-a-net\",\n]\n";
        let e = PolicyBuilder::new()
            .policy_text("site.toml", bad)
            .unwrap_err();
        assert_eq!(e.0, "site.toml: line 4: not an IP network: \"not-a-net\"");
        let e = PolicyBuilder::new()
            .policy_text("site.toml", "trusted_nets = []\n")
            .unwrap_err();
        assert!(e.0.starts_with("site.toml: line 1:"), "{}", e.0);
    }

    #[test]
    fn reserved_examples() {
        for d in [
            "example.com",
            "mail.example.net",
            "example.org",
            "x.example",
            "host.test",
            "a.invalid",
        ] {
            assert!(is_reserved_example(d), "{d}");
        }
        for d in ["examples.com", "gmail.com", "example.com.evil.net"] {
            assert!(!is_reserved_example(d), "{d}");
        }
    }

    #[test]
    fn domain_labels_take_hyphens_and_underscores() {
        for d in [
            "mail-1.example.net",
            "_dmarc.example.net",
            "a-b_c.example.net.",
        ] {
            assert!(parse_domain(d).is_ok(), "{d}");
        }
        for d in ["mail+1.example.net", "a..example.net", "", "."] {
            assert!(parse_domain(d).is_err(), "{d:?}");
        }
    }

    #[test]
    fn describe_says_what_judges_relaying() {
        assert_eq!(
            Policy::default().describe(),
            "local domains: none configured (every recipient counts as foreign); \
             trusted clients: default (private, loopback, link-local); sanctioned servers: 0"
        );
        let mut b = PolicyBuilder::new();
        b.local_domain("example.net", "flag").unwrap();
        b.rcpthosts_text("rcpthosts", "example.org\n.example.org\n")
            .unwrap();
        b.trusted_net("192.0.2.0/24", "flag").unwrap();
        b.sanctioned("198.51.100.25:209/qmtp", "flag").unwrap();
        b.note_source("flags");
        assert_eq!(
            b.build().describe(),
            "local domains: 3; trusted networks: 1; sanctioned servers: 1; \
             from rcpthosts rcpthosts, flags"
        );
    }

    #[test]
    fn policy_and_rcpthosts_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rcpthosts"), "example.net\n").unwrap();
        let site = dir.path().join("site.toml");
        std::fs::write(
            &site,
            "rcpthosts = \"rcpthosts\"\nlocal-domain = [\".example.org\"]\n",
        )
        .unwrap();
        let mut b = PolicyBuilder::new();
        b.policy_file(&site.to_string_lossy()).unwrap();
        let p = b.build();
        assert!(p.is_local("joe@example.net"));
        assert!(p.is_local("joe@mail.example.org"));
        assert!(!p.is_local("joe@example.com"));
        // Missing files are errors that name them.
        let missing = dir.path().join("nowhere.toml");
        let e = PolicyBuilder::new()
            .policy_file(&missing.to_string_lossy())
            .unwrap_err();
        assert!(
            e.to_string().contains("nowhere.toml: cannot read policy"),
            "{e}"
        );
        let e = PolicyBuilder::new()
            .rcpthosts_file(&missing.to_string_lossy())
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("nowhere.toml: cannot read rcpthosts"),
            "{e}"
        );
        std::fs::write(&site, "rcpthosts = \"gone\"\n").unwrap();
        let e = PolicyBuilder::new()
            .policy_file(&site.to_string_lossy())
            .unwrap_err();
        assert!(
            e.to_string().contains("line 1: ")
                && e.to_string().contains("gone: cannot read rcpthosts"),
            "{e}"
        );
    }
}
