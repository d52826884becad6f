//! Frames as they appear on an Ethernet wire, and the classic pcap file they
//! are written to.
//!
//! Ethernet II, IPv4 (DF, correct header checksum) or IPv6, TCP or UDP with
//! correct checksums; frames shorter than 60 bytes are zero-padded to 60 as
//! a NIC would (the padding is outside the IP length). The pcap file is
//! classic little-endian, microsecond timestamps, `LINKTYPE_ETHERNET`.

use std::net::IpAddr;

/// Shortest Ethernet frame without its FCS.
pub const MIN_FRAME: usize = 60;
/// Snap length written in the pcap header.
pub const SNAPLEN: u32 = qmwatch_testkit::pcap::PcapFormat::MICROS.snaplen;

// TCP flags, written out here rather than taken from the decoder: the
// generator stays independent of the code it tests.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
/// PSH: the decoder ignores it; generated segments carry it as stacks do.
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// The one pcap writer of the tests and the generator (classic pcap,
/// little-endian, microseconds, Ethernet, snap length [`SNAPLEN`]).
pub use qmwatch_testkit::pcap::PcapWriter;

/// One side of a conversation at the link and network layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Host {
    pub mac: [u8; 6],
    pub ip: IpAddr,
    pub ttl: u8,
}

impl Host {
    /// A host with a locally administered MAC address derived from its IP.
    pub fn new(ip: IpAddr, ttl: u8) -> Self {
        let b = match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                [o[0], o[1], o[2], o[3]]
            }
            IpAddr::V6(v6) => {
                let o = v6.octets();
                [o[12] ^ o[4], o[13] ^ o[5], o[14], o[15]]
            }
        };
        Host {
            mac: [0x02, 0x00, b[0], b[1], b[2], b[3]],
            ip,
            ttl,
        }
    }
}

/// Header fields of one TCP segment.
#[derive(Clone, Copy, Debug)]
pub struct TcpFields<'a> {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Options, a multiple of 4 bytes.
    pub options: &'a [u8],
    pub ip_id: u16,
    /// IPv6 flow label.
    pub flow_label: u32,
}

/// Ones' complement sum of `data` (as big-endian 16-bit words, an odd last
/// byte padded with zero) added to `acc`, not yet folded.
pub fn sum_be(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (v >> 32) + (v & 0xffff_ffff);
    }
    let rest = chunks.remainder();
    let mut pad = [0u8; 8];
    pad[..rest.len()].copy_from_slice(rest);
    let v = u64::from_be_bytes(pad);
    acc + (v >> 32) + (v & 0xffff_ffff)
}

/// Folds a sum to 16 bits and complements it.
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn ip_bytes(ip: IpAddr) -> ([u8; 16], usize) {
    match ip {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            (b, 4)
        }
        IpAddr::V6(v6) => (v6.octets(), 16),
    }
}

/// Writes Ethernet and IP headers for `l4_len` bytes of protocol `proto`;
/// returns the offset where the L4 header starts.
fn ip_headers(
    frame: &mut Vec<u8>,
    src: &Host,
    dst: &Host,
    proto: u8,
    l4_len: usize,
    ip_id: u16,
    flow_label: u32,
) -> usize {
    frame.clear();
    frame.extend_from_slice(&dst.mac);
    frame.extend_from_slice(&src.mac);
    let (s, n) = ip_bytes(src.ip);
    let (d, _) = ip_bytes(dst.ip);
    if n == 4 {
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        let start = frame.len();
        let total = (20 + l4_len) as u16;
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&total.to_be_bytes());
        frame.extend_from_slice(&ip_id.to_be_bytes());
        frame.extend_from_slice(&0x4000u16.to_be_bytes());
        frame.extend_from_slice(&[src.ttl, proto, 0, 0]);
        frame.extend_from_slice(&s[..4]);
        frame.extend_from_slice(&d[..4]);
        let c = fold(sum_be(&frame[start..start + 20], 0));
        frame[start + 10..start + 12].copy_from_slice(&c.to_be_bytes());
    } else {
        frame.extend_from_slice(&0x86ddu16.to_be_bytes());
        let first = (6u32 << 28) | (flow_label & 0xf_ffff);
        frame.extend_from_slice(&first.to_be_bytes());
        frame.extend_from_slice(&(l4_len as u16).to_be_bytes());
        frame.extend_from_slice(&[proto, src.ttl]);
        frame.extend_from_slice(&s);
        frame.extend_from_slice(&d);
    }
    frame.len()
}

/// The transport checksum over the pseudo-header and `l4` (checksum field zero).
fn l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> u16 {
    let (s, n) = ip_bytes(src);
    let (d, _) = ip_bytes(dst);
    let mut acc = sum_be(&s[..n], 0);
    acc = sum_be(&d[..n], acc);
    acc += u64::from(proto) + l4.len() as u64;
    fold(sum_be(l4, acc))
}

fn pad(frame: &mut Vec<u8>) {
    if frame.len() < MIN_FRAME {
        frame.resize(MIN_FRAME, 0);
    }
}

/// Builds a TCP frame into `frame`. `payload_len` bytes of payload are
/// appended by `fill`, which must append exactly that many.
pub fn tcp_frame(
    frame: &mut Vec<u8>,
    src: &Host,
    dst: &Host,
    f: &TcpFields<'_>,
    payload_len: usize,
    fill: impl FnOnce(&mut Vec<u8>),
) {
    let hlen = 20 + f.options.len();
    let l4 = ip_headers(
        frame,
        src,
        dst,
        6,
        hlen + payload_len,
        f.ip_id,
        f.flow_label,
    );
    frame.extend_from_slice(&f.sport.to_be_bytes());
    frame.extend_from_slice(&f.dport.to_be_bytes());
    frame.extend_from_slice(&f.seq.to_be_bytes());
    frame.extend_from_slice(&f.ack.to_be_bytes());
    frame.push(((hlen / 4) as u8) << 4);
    frame.push(f.flags);
    frame.extend_from_slice(&f.window.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(f.options);
    fill(frame);
    debug_assert_eq!(frame.len(), l4 + hlen + payload_len);
    let c = l4_checksum(src.ip, dst.ip, 6, &frame[l4..]);
    frame[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
    pad(frame);
}

/// Builds a UDP frame into `frame`.
pub fn udp_frame(
    frame: &mut Vec<u8>,
    src: (&Host, u16),
    dst: (&Host, u16),
    ip_id: u16,
    payload: &[u8],
) {
    let len = 8 + payload.len();
    let l4 = ip_headers(frame, src.0, dst.0, 17, len, ip_id, 0);
    frame.extend_from_slice(&src.1.to_be_bytes());
    frame.extend_from_slice(&dst.1.to_be_bytes());
    frame.extend_from_slice(&(len as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(payload);
    let mut c = l4_checksum(src.0.ip, dst.0.ip, 17, &frame[l4..]);
    if c == 0 {
        c = 0xffff;
    }
    frame[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
    pad(frame);
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketHeaders, TransportHeader};

    fn hosts(v6: bool) -> (Host, Host) {
        if v6 {
            (
                Host::new("2001:db8:1::1000".parse().unwrap(), 64),
                Host::new("2001:db8:1::25".parse().unwrap(), 64),
            )
        } else {
            (
                Host::new("192.0.2.100".parse().unwrap(), 64),
                Host::new("192.0.2.25".parse().unwrap(), 64),
            )
        }
    }

    #[test]
    fn tcp_checksums_verify_and_short_frames_are_padded() {
        for v6 in [false, true] {
            for payload in [&b""[..], b"x", b"21:Kok 838640135 qp 1390,"] {
                let (a, b) = hosts(v6);
                let opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
                let f = TcpFields {
                    sport: 40_000,
                    dport: 209,
                    seq: 0xdead_beef,
                    ack: 7,
                    flags: TCP_ACK | TCP_PSH,
                    window: 502,
                    options: &opts,
                    ip_id: 9,
                    flow_label: 0x12345,
                };
                let mut frame = Vec::new();
                tcp_frame(&mut frame, &a, &b, &f, payload.len(), |v| {
                    v.extend_from_slice(payload)
                });
                assert!(frame.len() >= MIN_FRAME);
                let h = PacketHeaders::from_ethernet_slice(&frame).unwrap();
                assert_eq!(h.payload.slice(), payload);
                let Some(TransportHeader::Tcp(t)) = h.transport else {
                    panic!("not tcp")
                };
                let expect = match h.net.unwrap() {
                    etherparse::NetHeaders::Ipv4(ip, _) => {
                        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
                        t.calc_checksum_ipv4(&ip, payload).unwrap()
                    }
                    etherparse::NetHeaders::Ipv6(ip, _) => {
                        t.calc_checksum_ipv6(&ip, payload).unwrap()
                    }
                    _ => unreachable!(),
                };
                assert_eq!(t.checksum, expect);
            }
        }
    }

    #[test]
    fn udp_checksum_verifies() {
        let (a, b) = hosts(false);
        let mut frame = Vec::new();
        udp_frame(&mut frame, (&a, 5353), (&b, 53), 1, b"\x12\x34query");
        let h = PacketHeaders::from_ethernet_slice(&frame).unwrap();
        let Some(TransportHeader::Udp(u)) = h.transport else {
            panic!("not udp")
        };
        let etherparse::NetHeaders::Ipv4(ip, _) = h.net.unwrap() else {
            panic!()
        };
        assert_eq!(
            u.checksum,
            u.calc_checksum_ipv4(&ip, b"\x12\x34query").unwrap()
        );
    }
}
