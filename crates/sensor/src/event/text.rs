//! Addresses and protocol names as events write them in fields and
//! messages.
//!
//! Owns: IPv4 addresses (and IPv4 socket addresses) in dotted decimal
//! without `core::fmt`, whose `Display` writes each octet through the
//! integer formatter (about 1,400 instructions an address, several an
//! event); the upper-case protocol names of messages. Must not: write
//! anything other than what `Display` and `to_uppercase` write (IPv6 goes
//! to `Display`, whose zero compression this does not repeat).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use qmwatch_proto::Protocol;

/// Room for the longest IPv4 socket address, `255.255.255.255:65535`.
struct Buf {
    b: [u8; 21],
    n: usize,
}

impl Buf {
    fn new() -> Buf {
        Buf { b: [0; 21], n: 0 }
    }

    fn push(&mut self, c: u8) {
        if let Some(slot) = self.b.get_mut(self.n) {
            *slot = c;
            self.n += 1;
        }
    }

    /// `v` in decimal, no leading zeros.
    fn dec(&mut self, v: u16) {
        let mut started = false;
        for p in [10_000, 1_000, 100, 10, 1] {
            let d = (v / p % 10) as u8;
            started |= d != 0 || p == 1;
            if started {
                self.push(b'0' + d);
            }
        }
    }

    fn v4(&mut self, ip: Ipv4Addr) {
        let [a, b, c, d] = ip.octets();
        self.dec(a.into());
        for o in [b, c, d] {
            self.push(b'.');
            self.dec(o.into());
        }
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits, dots and colons are written.
        std::str::from_utf8(self.b.get(..self.n).unwrap_or_default()).unwrap_or_default()
    }
}

/// An IP address as `Display` writes it.
pub(super) struct Ip(pub IpAddr);

impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(ip) => {
                let mut b = Buf::new();
                b.v4(ip);
                f.pad(b.as_str())
            }
            IpAddr::V6(ip) => fmt::Display::fmt(&ip, f),
        }
    }
}

/// A socket address as `Display` writes it (`a.b.c.d:port`, `[v6]:port`).
pub(super) struct Addr(pub SocketAddr);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            SocketAddr::V4(a) => {
                let mut b = Buf::new();
                b.v4(*a.ip());
                b.push(b':');
                b.dec(a.port());
                f.pad(b.as_str())
            }
            SocketAddr::V6(a) => fmt::Display::fmt(&a, f),
        }
    }
}

/// `ip.to_string()`.
pub(super) fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => {
            let mut b = Buf::new();
            b.v4(ip);
            b.as_str().to_owned()
        }
        IpAddr::V6(ip) => ip.to_string(),
    }
}

/// The protocol's name in upper case, as messages write it.
pub(super) fn upper_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Qmtp => "QMTP",
        Protocol::Qmqp => "QMQP",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn addresses_as_display_writes_them() {
        for a in [
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "192.0.2.1:209",
            "10.0.100.9:10000",
            "1.20.3.40:628",
            "[2001:db8::1]:209",
            "[::ffff:192.0.2.1]:628",
            "[fe80::1%3]:1",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(Addr(a).to_string(), a.to_string());
            assert_eq!(Ip(a.ip()).to_string(), a.ip().to_string());
            assert_eq!(ip_text(a.ip()), a.ip().to_string());
            assert_eq!(format!("<{:>24}>", Addr(a)), format!("<{a:>24}>"));
        }
        for p in [Protocol::Qmtp, Protocol::Qmqp] {
            assert_eq!(upper_name(p), p.name().to_uppercase());
        }
    }

    proptest! {
        #[test]
        fn any_address_as_display_writes_it(a in any::<SocketAddr>()) {
            prop_assert_eq!(Addr(a).to_string(), a.to_string());
            prop_assert_eq!(Ip(a.ip()).to_string(), a.ip().to_string());
            prop_assert_eq!(ip_text(a.ip()), a.ip().to_string());
        }
    }
}
