//! Addresses and protocol names as events write them in fields and
//! messages.
//!
//! Owns: IP addresses and socket addresses as `Display` writes them
//! (dotted decimal; IPv6 in lower-case hex with the longest run of two or
//! more zero groups, the first of equal runs, as `::`, and IPv4-mapped
//! addresses as `::ffff:a.b.c.d`), without `core::fmt`, whose `Display`
//! writes each octet or group through the integer formatter (1,400 to
//! 1,700 instructions an address, several an event); the upper-case
//! protocol names of messages. Must not: write anything other than what
//! `Display` and `to_uppercase` write (tests hold it to them).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use qmwatch_proto::Protocol;

/// Room for the longest socket address,
/// `[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535`.
struct Buf {
    b: [u8; 58],
    n: usize,
}

impl Buf {
    fn new() -> Buf {
        Buf { b: [0; 58], n: 0 }
    }

    fn push_str(&mut self, s: &str) {
        for &c in s.as_bytes() {
            self.push(c);
        }
    }

    fn push(&mut self, c: u8) {
        if let Some(slot) = self.b.get_mut(self.n) {
            *slot = c;
            self.n += 1;
        }
    }

    /// `v` in decimal, no leading zeros.
    fn dec(&mut self, mut v: u32) {
        // Digits from the last, as many as `v` has (a u32 has ten at most).
        let mut d = [0u8; 10];
        let mut n = 0;
        for slot in d.iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
            n += 1;
            if v == 0 {
                break;
            }
        }
        for &c in d.get(d.len() - n..).unwrap_or_default() {
            self.push(c);
        }
    }

    /// `v` in lower-case hex, no leading zeros.
    fn hex(&mut self, v: u16) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut started = false;
        for shift in [12, 8, 4, 0] {
            let d = (v >> shift) & 0xf;
            started |= d != 0 || shift == 0;
            if started {
                self.push(HEX[usize::from(d)]);
            }
        }
    }

    /// Groups separated by `:`.
    fn groups(&mut self, g: &[u16]) {
        for (i, &v) in g.iter().enumerate() {
            if i > 0 {
                self.push(b':');
            }
            self.hex(v);
        }
    }

    fn v6(&mut self, ip: Ipv6Addr) {
        if let Some(v4) = ip.to_ipv4_mapped() {
            self.push_str("::ffff:");
            return self.v4(v4);
        }
        let g = ip.segments();
        // The longest run of zero groups, the first of equal ones.
        let (mut best, mut run) = ((0, 0), (0, 0));
        for (i, &v) in g.iter().enumerate() {
            run = if v == 0 {
                (run.0, run.1 + 1)
            } else {
                (i + 1, 0)
            };
            if run.1 > best.1 {
                best = run;
            }
        }
        match (g.get(..best.0), g.get(best.0 + best.1..)) {
            (Some(head), Some(tail)) if best.1 > 1 => {
                self.groups(head);
                self.push_str("::");
                self.groups(tail);
            }
            _ => self.groups(&g),
        }
    }

    fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(ip) => self.v4(ip),
            IpAddr::V6(ip) => self.v6(ip),
        }
    }

    fn addr(&mut self, a: SocketAddr) {
        match a {
            SocketAddr::V4(a) => self.v4(*a.ip()),
            SocketAddr::V6(a) => {
                self.push(b'[');
                self.v6(*a.ip());
                if a.scope_id() != 0 {
                    self.push(b'%');
                    self.dec(a.scope_id());
                }
                self.push(b']');
            }
        }
        self.push(b':');
        self.dec(a.port().into());
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
        let mut b = Buf::new();
        b.ip(self.0);
        f.pad(b.as_str())
    }
}

/// A socket address as `Display` writes it (`a.b.c.d:port`, `[v6]:port`).
pub(super) struct Addr(pub SocketAddr);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut b = Buf::new();
        b.addr(self.0);
        f.pad(b.as_str())
    }
}

/// `ip.to_string()`.
pub(super) fn ip_text(ip: IpAddr) -> String {
    let mut b = Buf::new();
    b.ip(ip);
    b.as_str().to_owned()
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
            "[fe80::1%4294967295]:65535",
            "[::]:1",
            "[::1]:2",
            "[1::]:3",
            "[1:0:1::]:4",
            "[1:0:0:1:0:0:1:0]:5",
            "[0:1:0:0:1:0:0:0]:6",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:7",
            "[::192.0.2.1]:8",
            "[::ffff:0.0.0.0]:9",
            "[64:ff9b::c000:201]:10",
            "[2001:db8:0:0:1:0:0:1]:11",
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

    /// IPv6 groups drawn mostly from 0, 1 and 0xffff, so that runs of
    /// zeros of every length and place, and IPv4-mapped addresses, come up.
    fn v6_addr() -> impl Strategy<Value = SocketAddr> {
        let group = prop_oneof![Just(0u16), Just(1), Just(0xffff), any::<u16>()];
        (prop::array::uniform8(group), any::<u16>(), any::<u32>()).prop_map(|(g, port, scope)| {
            let scope = if scope % 2 == 0 { 0 } else { scope };
            SocketAddr::V6(std::net::SocketAddrV6::new(g.into(), port, 0, scope))
        })
    }

    proptest! {
        #[test]
        fn v6_addresses_as_display_writes_them(a in v6_addr()) {
            prop_assert_eq!(Addr(a).to_string(), a.to_string());
            prop_assert_eq!(ip_text(a.ip()), a.ip().to_string());
        }

        #[test]
        fn any_address_as_display_writes_it(a in any::<SocketAddr>()) {
            prop_assert_eq!(Addr(a).to_string(), a.to_string());
            prop_assert_eq!(Ip(a.ip()).to_string(), a.ip().to_string());
            prop_assert_eq!(ip_text(a.ip()), a.ip().to_string());
        }
    }
}
