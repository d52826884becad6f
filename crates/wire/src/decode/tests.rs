use super::*;

const SRC4: [u8; 4] = [192, 0, 2, 1];
const DST4: [u8; 4] = [198, 51, 100, 2];
const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// Where the frame sits in its buffer.
const AT: usize = 1000;
const TS: u64 = 77;
const PAYLOAD: &[u8] = b"64:16:A simple message,18:sender@example.org,16:rcpt@example.net,,";

/// A TCP header (with `opts`, a multiple of 4 bytes) followed by `payload`.
fn tcp(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0);
    let mut v = Vec::new();
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&ack.to_be_bytes());
    v.push((((20 + opts.len()) / 4) as u8) << 4);
    v.push(flags);
    v.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, checksum, urgent
    v.extend_from_slice(opts);
    v.extend_from_slice(payload);
    v
}

fn simple_tcp(payload: &[u8]) -> Vec<u8> {
    tcp(40000, 628, 0x1000_0001, 0x2000_0002, 0x18, &[], payload)
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// IPv4 header (no options) + payload. `frag` is the flags/offset field.
fn ipv4_with(src: [u8; 4], dst: [u8; 4], proto: u8, id: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = ip_checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_with(SRC4, DST4, proto, 0x1234, 0x4000, payload)
}

/// IPv6 header + payload (which starts with header `next`).
fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&SRC6);
    h.extend_from_slice(&DST6);
    h.extend_from_slice(payload);
    h
}

fn ether(ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    v.extend_from_slice(&ether_type.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Decodes `frame` placed at [`AT`] in a larger buffer; returns the buffer too.
fn decode_in(d: &mut Decoder, lt: u32, frame: &[u8], wire_len: u32) -> (Decoded, Vec<u8>) {
    let mut buf = vec![0xee; AT];
    buf.extend_from_slice(frame);
    buf.extend_from_slice(&[0xdd; 9]);
    let r = d.decode(TS, lt, &buf[AT..AT + frame.len()], AT as u32, wire_len);
    (r, buf)
}

fn seg(r: Decoded) -> Segment {
    match r {
        Decoded::Segment(s) => s,
        other => panic!("expected a segment, got {other:?}"),
    }
}

fn payload_in<'a>(s: &Segment, buf: &'a [u8]) -> &'a [u8] {
    &buf[s.payload_start as usize..][..s.payload_len as usize]
}

fn v4_segment(payload_start: usize, payload_len: usize, flags: u8) -> Segment {
    Segment {
        ts: TS,
        src: addr_from_ip(IpAddr::from(SRC4)),
        dst: addr_from_ip(IpAddr::from(DST4)),
        v4: true,
        sport: 40000,
        dport: 628,
        seq: 0x1000_0001,
        ack: 0x2000_0002,
        flags,
        payload_start: payload_start as u32,
        payload_len: payload_len as u32,
        tcp_header_len: 20,
        ttl: 64,
        ..Segment::default()
    }
}

fn v6_segment(payload_start: usize, payload_len: usize, flags: u8) -> Segment {
    Segment {
        src: addr_from_ip(IpAddr::from(SRC6)),
        dst: addr_from_ip(IpAddr::from(DST6)),
        v4: false,
        ..v4_segment(payload_start, payload_len, flags)
    }
}

/// Decodes a whole frame and checks the segment and that its payload range
/// holds exactly `PAYLOAD`.
fn check(lt: u32, frame: &[u8], expected: Segment) {
    let mut d = Decoder::default();
    let (r, buf) = decode_in(&mut d, lt, frame, frame.len() as u32);
    let s = seg(r);
    // Decoding summed the checksum of this small data segment: the test
    // frames carry a zero field, neither right nor the pseudo-header sum.
    assert_eq!(s.csum, CSUM_SUMMED, "link type {lt}");
    assert_eq!(Segment { csum: 0, ..s }, expected, "link type {lt}");
    assert_eq!(payload_in(&s, &buf), PAYLOAD);
    assert_eq!((d.stats.frames, d.stats.tcp_segments), (1, 1));
    assert_eq!(d.stats.bytes, frame.len() as u64);
}

#[test]
fn checksum_verification() {
    // etherparse's builder writes correct checksums.
    let t = tcp(40000, 628, 7, 9, 0x18, &[], PAYLOAD);
    let frame = ether(0x0800, &ipv4(6, &t));
    let mut d = Decoder::default();
    let (r, buf) = decode_in(&mut d, LINKTYPE_ETHERNET, &frame, frame.len() as u32);
    let mut s = seg(r);
    let start = s.payload_start as usize - usize::from(s.tcp_header_len);
    let tcp_bytes = &buf[start..s.payload_start as usize + s.payload_len as usize];
    // What decoding summed is not asked again: below, other bytes are.
    s.csum = 0;
    let _ = s.checksum_ok(tcp_bytes);
    // Recompute over a copy with the checksum field set correctly by hand.
    let mut fixed = tcp_bytes.to_vec();
    fixed[16] = 0;
    fixed[17] = 0;
    let mut sum: u32 = 0;
    let mut words = SRC4.to_vec();
    words.extend_from_slice(&DST4);
    words.extend_from_slice(&[0, 6]);
    words.extend_from_slice(&(fixed.len() as u16).to_be_bytes());
    words.extend_from_slice(&fixed);
    if words.len() % 2 == 1 {
        words.push(0);
    }
    for w in words.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    fixed[16..18].copy_from_slice(&c.to_be_bytes());
    assert!(s.checksum_ok(&fixed));
    fixed[25] ^= 0x40;
    assert!(!s.checksum_ok(&fixed));
    // IPv6 too.
    let mut v6 = s;
    v6.v4 = false;
    assert!(!v6.checksum_ok(&fixed));
}

/// `t` (a TCP segment from [`tcp`]) with its checksum field set to
/// `field(pseudo-header sum, right checksum)`, over [`SRC4`] and [`DST4`].
fn with_checksum(mut t: Vec<u8>, field: impl Fn(u16, u16) -> u16) -> Vec<u8> {
    t[16] = 0;
    t[17] = 0;
    let right = reference_checksum(&SRC4, &DST4, &t);
    // The pseudo-header's words (addresses, protocol, TCP length), folded.
    let mut words = SRC4.to_vec();
    words.extend_from_slice(&DST4);
    words.extend_from_slice(&[0, 6]);
    words.extend_from_slice(&(t.len() as u16).to_be_bytes());
    let mut sum: u32 = words
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    t[16..18].copy_from_slice(&field(sum as u16, right).to_be_bytes());
    t
}

#[test]
fn decoding_sums_small_segments_and_answers_from_that() {
    let decode = |t: &[u8]| {
        let frame = ether(0x0800, &ipv4(6, t));
        let (r, buf) = decode_in(
            &mut Decoder::default(),
            LINKTYPE_ETHERNET,
            &frame,
            frame.len() as u32,
        );
        let s = seg(r);
        let start = s.payload_start as usize - usize::from(s.tcp_header_len);
        (
            s,
            buf[start..s.payload_start as usize + s.payload_len as usize].to_vec(),
        )
    };
    let data = tcp(40000, 628, 7, 9, 0x18, &[], PAYLOAD);
    // A right checksum, a corrupted segment, an offloading sender's field.
    let right = with_checksum(data.clone(), |_, c| c);
    let mut corrupted = right.clone();
    corrupted[25] ^= 0x40;
    let offloaded = with_checksum(data.clone(), |p, _| p);
    for (t, want) in [
        (&right, CSUM_SUMMED | CSUM_SUM_OK),
        (&corrupted, CSUM_SUMMED),
        (&offloaded, CSUM_SUMMED | CSUM_FIELD_PSEUDO),
    ] {
        let (s, bytes) = decode(t);
        assert_eq!(s.csum, want);
        // The answers are those of the bytes, summed afresh.
        let fresh = Segment { csum: 0, ..s };
        assert_eq!(s.checksum_ok(&bytes), fresh.checksum_ok(&bytes));
        assert_eq!(
            s.checksum_offloaded(&bytes),
            fresh.checksum_offloaded(&bytes)
        );
    }
    // A decoder told not to sum leaves it to the flow table.
    let frame = ether(0x0800, &ipv4(6, &corrupted));
    let mut quiet = Decoder::default();
    quiet.set_presum(false);
    let (r, buf) = decode_in(&mut quiet, LINKTYPE_ETHERNET, &frame, frame.len() as u32);
    let s = seg(r);
    assert_eq!(s.csum, 0);
    let start = s.payload_start as usize - usize::from(s.tcp_header_len);
    assert!(!s.checksum_ok(&buf[start..s.payload_start as usize + s.payload_len as usize]));
    // A bare ACK's checksum does not matter; a segment larger than
    // PRESUM_MAX is left to the flow table: neither is summed.
    let ack = with_checksum(tcp(40000, 628, 7, 9, 0x10, &[], &[]), |_, c| c);
    assert_eq!(decode(&ack).0.csum, 0);
    let big = vec![b'x'; PRESUM_MAX];
    let large = with_checksum(tcp(40000, 628, 7, 9, 0x18, &[], &big), |_, c| c);
    let (s, bytes) = decode(&large);
    assert_eq!(s.csum, 0);
    assert!(s.checksum_ok(&bytes));
    // Just small enough: summed.
    let edge = vec![b'x'; PRESUM_MAX - 20];
    let (s, _) = decode(&with_checksum(
        tcp(40000, 628, 7, 9, 0x18, &[], &edge),
        |_, c| c,
    ));
    assert_eq!(s.csum, CSUM_SUMMED | CSUM_SUM_OK);
}

#[test]
fn ethernet_ipv4_tcp_with_options() {
    // NOP NOP timestamp: a 32-byte TCP header.
    let opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    let t = tcp(40000, 628, 0x1000_0001, 0x2000_0002, 0x18, &opts, PAYLOAD);
    let frame = ether(0x0800, &ipv4(6, &t));
    let e = Segment {
        tcp_header_len: 32,
        ..v4_segment(AT + 14 + 20 + 32, PAYLOAD.len(), TCP_ACK)
    };
    check(LINKTYPE_ETHERNET, &frame, e);
    // The timestamp is read from the header bytes when asked for.
    assert_eq!(e.tsval_in(Some(&t)), Some(1));
    assert_eq!(e.tsval_in(None), None);
    assert_eq!(e.src_socket(), "192.0.2.1:40000".parse().unwrap());
    assert_eq!(e.dst_socket(), "198.51.100.2:628".parse().unwrap());
    assert!(e.ack_flag() && !e.syn() && !e.fin() && !e.rst());
}

#[test]
fn ethernet_three_stacked_vlan_tags() {
    let t = tcp(40000, 628, 0x1000_0001, 0x2000_0002, 0x11, &[], PAYLOAD);
    let mut l3 = vec![
        0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x81, 0x00, 0x00, 0x1e, 0x08, 0x00,
    ];
    l3.extend(ipv4(6, &t));
    let frame = ether(0x88a8, &l3);
    let e = v4_segment(AT + 14 + 12 + 20 + 20, PAYLOAD.len(), TCP_FIN | TCP_ACK);
    check(LINKTYPE_ETHERNET, &frame, e);
    assert!(e.fin());
}

#[test]
fn linux_sll_and_sll2() {
    let ip4 = ipv4(6, &simple_tcp(PAYLOAD));
    let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
    sll.extend_from_slice(&ip4);
    check(
        LINKTYPE_LINUX_SLL,
        &sll,
        v4_segment(AT + 16 + 40, PAYLOAD.len(), TCP_ACK),
    );

    let t6 = tcp(40000, 628, 0x1000_0001, 0x2000_0002, 0x04, &[], PAYLOAD);
    let mut sll2 = vec![
        0x86, 0xdd, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0,
    ];
    assert_eq!(sll2.len(), 20);
    sll2.extend(ipv6(6, &t6));
    let e = v6_segment(AT + 20 + 40 + 20, PAYLOAD.len(), TCP_RST);
    check(LINKTYPE_LINUX_SLL2, &sll2, e);
    assert!(e.rst());
    assert_eq!(e.src_socket(), "[2001:db8::1]:40000".parse().unwrap());
}

#[test]
fn bsd_null_loop_and_raw_ip() {
    let ip4 = ipv4(6, &simple_tcp(PAYLOAD));
    let ip6 = ipv6(6, &simple_tcp(PAYLOAD));
    // NULL: AF_INET (2) in host byte order; LOOP: network byte order.
    let mut null = vec![2, 0, 0, 0];
    null.extend_from_slice(&ip4);
    check(
        LINKTYPE_NULL,
        &null,
        v4_segment(AT + 4 + 40, PAYLOAD.len(), TCP_ACK),
    );
    let mut lo6 = vec![0, 0, 0, 30];
    lo6.extend_from_slice(&ip6);
    check(
        LINKTYPE_LOOP,
        &lo6,
        v6_segment(AT + 4 + 60, PAYLOAD.len(), TCP_ACK),
    );
    check(
        LINKTYPE_RAW,
        &ip4,
        v4_segment(AT + 40, PAYLOAD.len(), TCP_ACK),
    );
    check(
        LINKTYPE_RAW,
        &ip6,
        v6_segment(AT + 60, PAYLOAD.len(), TCP_ACK),
    );
    check(
        LINKTYPE_IPV4,
        &ip4,
        v4_segment(AT + 40, PAYLOAD.len(), TCP_ACK),
    );
    check(
        LINKTYPE_IPV6,
        &ip6,
        v6_segment(AT + 60, PAYLOAD.len(), TCP_ACK),
    );
}

#[test]
fn ipv6_hop_by_hop_before_tcp() {
    // Hop-by-hop: next header TCP, length 0 (8 bytes), PadN over 6 bytes.
    let mut ext = vec![6, 0, 1, 4, 0, 0, 0, 0];
    ext.extend(simple_tcp(PAYLOAD));
    let ip = ipv6(0, &ext);
    check(
        LINKTYPE_IPV6,
        &ip,
        v6_segment(AT + 40 + 8 + 20, PAYLOAD.len(), TCP_ACK),
    );
    let frame = ether(0x86dd, &ip);
    check(
        LINKTYPE_ETHERNET,
        &frame,
        v6_segment(AT + 14 + 68, PAYLOAD.len(), TCP_ACK),
    );
}

#[test]
fn truncated_ethernet_frame_at_every_length() {
    let frame = ether(0x0800, &ipv4(6, &simple_tcp(PAYLOAD)));
    let full = frame.len();
    let hdr = 14 + 20 + 20;
    let mut d = Decoder::default();
    for cut in 0..=full {
        let (r, buf) = decode_in(&mut d, LINKTYPE_ETHERNET, &frame[..cut], full as u32);
        match r {
            Decoded::Segment(s) => {
                assert!(cut >= hdr, "segment from {cut} bytes");
                assert_eq!(s.payload_len as usize, cut - hdr);
                assert_eq!(s.missing as usize, full - cut, "cut {cut}");
                assert_eq!(payload_in(&s, &buf), &PAYLOAD[..cut - hdr]);
            }
            Decoded::Skip(k) => {
                assert!(cut < hdr, "cut {cut} skipped as {k:?}");
                assert_eq!(k, Skip::Truncated, "cut {cut}");
            }
            Decoded::Reassembled(..) => panic!("cut {cut}"),
        }
    }
    assert_eq!(d.stats.frames, full as u64 + 1);
    assert_eq!(d.stats.skipped(Skip::Truncated), hdr as u64);
    assert_eq!(d.stats.tcp_segments, (full - hdr + 1) as u64);
    assert_eq!(d.stats.bytes, (full as u64) * (full as u64 + 1));
}

#[test]
fn truncated_frames_of_every_link_type_never_panic() {
    let mut vlan = vec![0, 1, 0x81, 0, 0, 2, 0x08, 0];
    vlan.extend(ipv4(6, &simple_tcp(PAYLOAD)));
    let mut hbh = vec![6, 0, 1, 4, 0, 0, 0, 0];
    hbh.extend(simple_tcp(PAYLOAD));
    let mut sll2 = vec![0x86, 0xdd];
    sll2.extend_from_slice(&[0; 18]);
    sll2.extend(ipv6(0, &hbh));
    let mut null = vec![2, 0, 0, 0];
    null.extend(ipv4(6, &simple_tcp(PAYLOAD)));
    let frames = [
        (LINKTYPE_ETHERNET, ether(0x88a8, &vlan)),
        (LINKTYPE_LINUX_SLL2, sll2),
        (LINKTYPE_NULL, null),
        (LINKTYPE_RAW, ipv6(0, &hbh)),
    ];
    for (lt, frame) in frames {
        let full = frame.len();
        let hdr = full - PAYLOAD.len();
        let mut d = Decoder::default();
        for cut in 0..=full {
            for wire in [cut, full] {
                match decode_in(&mut d, lt, &frame[..cut], wire as u32).0 {
                    Decoded::Segment(s) => {
                        assert!(cut >= hdr, "lt {lt}: segment from {cut} bytes");
                        assert_eq!(s.payload_len as usize, cut - hdr);
                    }
                    Decoded::Skip(_) => assert!(cut < hdr || wire == cut, "lt {lt} cut {cut}"),
                    Decoded::Reassembled(..) => panic!("lt {lt} cut {cut}"),
                }
            }
        }
        let skipped: u64 = Skip::ALL.iter().map(|&k| d.stats.skipped(k)).sum();
        assert_eq!(d.stats.frames, 2 * (full as u64 + 1));
        assert_eq!(skipped + d.stats.tcp_segments, d.stats.frames, "lt {lt}");
    }
}

#[test]
fn snaplen_cut_counts_missing_payload() {
    let frame = ether(0x0800, &ipv4(6, &simple_tcp(PAYLOAD)));
    let keep = 14 + 40 + 10;
    let mut d = Decoder::default();
    let (r, buf) = decode_in(
        &mut d,
        LINKTYPE_ETHERNET,
        &frame[..keep],
        frame.len() as u32,
    );
    let s = seg(r);
    let mut e = v4_segment(AT + 54, 10, TCP_ACK);
    e.missing = (PAYLOAD.len() - 10) as u32;
    assert_eq!(s, e);
    assert_eq!(payload_in(&s, &buf), &PAYLOAD[..10]);
    assert_eq!(d.stats.bytes, frame.len() as u64);
}

#[test]
fn udp_arp_and_unknown_link_types_are_skipped() {
    let mut d = Decoder::default();
    let udp = [0x9c, 0x40, 0x00, 0x35, 0, 12, 0, 0, 1, 2, 3, 4];
    let (r, _) = decode_in(
        &mut d,
        LINKTYPE_ETHERNET,
        &ether(0x0800, &ipv4(17, &udp)),
        46,
    );
    assert!(matches!(r, Decoded::Skip(Skip::NotTcp)), "{r:?}");
    let (r, _) = decode_in(&mut d, LINKTYPE_IPV6, &ipv6(17, &udp), 52);
    assert!(matches!(r, Decoded::Skip(Skip::NotTcp)), "{r:?}");
    let arp = [
        0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 192, 0, 2, 2,
    ];
    let (r, _) = decode_in(&mut d, LINKTYPE_ETHERNET, &ether(0x0806, &arp), 42);
    assert!(matches!(r, Decoded::Skip(Skip::NotIp)), "{r:?}");
    // Raw link type whose first nibble is neither 4 nor 6.
    let (r, _) = decode_in(&mut d, LINKTYPE_RAW, &[0x50; 40], 40);
    assert!(matches!(r, Decoded::Skip(Skip::NotIp)), "{r:?}");
    let ip = ipv4(6, &simple_tcp(PAYLOAD));
    let (r, _) = decode_in(&mut d, 147, &ip, ip.len() as u32);
    assert!(
        matches!(r, Decoded::Skip(Skip::UnsupportedLinkType)),
        "{r:?}"
    );
    assert!(!supported_link_type(147));
    assert!(supported_link_type(LINKTYPE_LINUX_SLL2));
    assert_eq!(link_payload(147, &ip), Err(Skip::UnsupportedLinkType));
    assert_eq!(link_payload(LINKTYPE_RAW, &ip), Ok(&ip[..]));
    assert_eq!(
        link_payload(LINKTYPE_LINUX_SLL, &[0; 15]),
        Err(Skip::Truncated)
    );
    assert_eq!(d.stats.frames, 5);
    assert_eq!(d.stats.skipped(Skip::NotTcp), 2);
    assert_eq!(d.stats.skipped(Skip::NotIp), 2);
    assert_eq!(d.stats.skipped(Skip::UnsupportedLinkType), 1);
    assert_eq!(d.stats.tcp_segments, 0);
}

#[test]
fn ipv4_fragments_out_of_order_reassembled() {
    let payload: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
    let whole = simple_tcp(&payload);
    assert_eq!(whole.len(), 60);
    // 0..24 and 24..48 with More Fragments, 48..60 last (offsets in 8-byte units).
    let frag = |from: usize, to: usize, more: bool| {
        let field = if more { 0x2000 } else { 0 } | (from / 8) as u16;
        ether(
            0x0800,
            &ipv4_with(SRC4, DST4, 6, 0x4242, field, &whole[from..to]),
        )
    };
    let frames = [frag(48, 60, false), frag(0, 24, true), frag(24, 48, true)];
    let mut d = Decoder::default();
    for f in &frames[..2] {
        let (r, _) = decode_in(&mut d, LINKTYPE_ETHERNET, f, f.len() as u32);
        assert!(matches!(r, Decoded::Skip(Skip::FragmentHeld)), "{r:?}");
    }
    let f = &frames[2];
    let (r, _) = decode_in(&mut d, LINKTYPE_ETHERNET, f, f.len() as u32);
    let Decoded::Reassembled(s, bytes) = r else {
        panic!("expected reassembly, got {r:?}");
    };
    let mut e = v4_segment(20, 40, TCP_ACK);
    e.reassembled = true;
    // The TTL of a reassembled datagram is unknown; 24-byte fragments are tiny.
    e.ttl = 0;
    e.frag_notes = FRAG_NOTE_TINY;
    assert_eq!(s, e);
    assert_eq!(bytes, whole);
    assert_eq!(&bytes[20..], &payload[..]);
    assert_eq!(d.stats.skipped(Skip::FragmentHeld), 2);
    assert_eq!(d.stats.tcp_segments, 1);
    assert_eq!(d.stats.frames, 3);
}

#[test]
fn the_two_directions_decode_to_mirrored_sockets() {
    let mut d = Decoder::default();
    let a = ether(0x0800, &ipv4(6, &simple_tcp(b"x")));
    let b_tcp = tcp(628, 40000, 7, 8, 0x10, &[], b"");
    let b = ether(0x0800, &ipv4_with(DST4, SRC4, 6, 1, 0x4000, &b_tcp));
    let c_tcp = tcp(40001, 628, 7, 8, 0x10, &[], b"");
    let c = ether(0x0800, &ipv4(6, &c_tcp));
    let sa = seg(decode_in(&mut d, LINKTYPE_ETHERNET, &a, a.len() as u32).0);
    let sb = seg(decode_in(&mut d, LINKTYPE_ETHERNET, &b, b.len() as u32).0);
    let sc = seg(decode_in(&mut d, LINKTYPE_ETHERNET, &c, c.len() as u32).0);
    assert_eq!((sb.sport, sb.dport), (628, 40000));
    assert_eq!(sb.src_socket(), sa.dst_socket());
    assert_eq!(sb.dst_socket(), sa.src_socket());
    assert_ne!(sc.src_socket(), sa.src_socket());
    // The flow tag itself (direction-free, computed from these sockets) is
    // qmwatch-sensor's: `flow::tests::flow_tag_is_direction_free`.
}

#[test]
fn an_ip_length_that_lies_is_not_a_snaplen_gap() {
    // Captured whole (wire length = captured length) but the IPv4 total
    // length claims 950 more bytes: malformed, skipped, never a "gap".
    let t = tcp(40000, 628, 7, 9, 0x18, &[], PAYLOAD);
    let mut ip = ipv4(6, &t);
    let claimed = (ip.len() + 950) as u16;
    ip[2..4].copy_from_slice(&claimed.to_be_bytes());
    let frame = ether(0x0800, &ip);
    let mut d = Decoder::default();
    let (r, _) = decode_in(&mut d, LINKTYPE_ETHERNET, &frame, frame.len() as u32);
    assert!(matches!(r, Decoded::Skip(Skip::BadIp)), "{r:?}");
    // The same frame cut by the snap length from a 950-byte-longer packet is a gap.
    let (r, _) = decode_in(&mut d, LINKTYPE_ETHERNET, &frame, frame.len() as u32 + 950);
    assert_eq!(seg(r).missing, 950);
}

/// Every frame of every fixture (`derived/` too), with its record, in
/// file order.
fn fixture_frames() -> Vec<(crate::capture::file::PacketRecord, Vec<u8>)> {
    use crate::capture::file::{CaptureReader, PacketRecord};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.extend(
        std::fs::read_dir(dir.join("derived"))
            .unwrap()
            .map(|e| e.unwrap().path()),
    );
    files.sort();
    let mut frames = Vec::new();
    for f in files
        .iter()
        .filter(|p| p.to_string_lossy().contains(".pcap"))
    {
        let mut r = CaptureReader::new(
            f.display().to_string(),
            std::fs::File::open(f).unwrap(),
            supported_link_type,
        )
        .unwrap();
        let mut block = Vec::new();
        let mut recs: Vec<PacketRecord> = Vec::new();
        while r.next_block(&mut block, &mut recs).unwrap() {
            for rec in recs.drain(..) {
                let start = rec.data_start as usize;
                frames.push((rec, block[start..start + rec.caplen as usize].to_vec()));
            }
        }
    }
    frames
}

#[test]
fn fast_path_agrees_with_the_general_path_on_every_fixture_frame() {
    let mut fast = 0;
    for (rec, frame) in fixture_frames() {
        let frame = &frame[..];
        let mut general = Decoder::default();
        let Ok(ip) = link_payload(rec.link_type, frame) else {
            continue;
        };
        let slow = general.decode_ip(rec.ts_nanos, frame, ip, rec.data_start, rec.origlen);
        match fast_tcp(rec.ts_nanos, frame, ip, rec.data_start, true) {
            Some(seg) => {
                fast += 1;
                assert!(
                    matches!(slow, Decoded::Segment(s) if s == seg),
                    "{rec:?}: {seg:?} vs {slow:?}"
                );
            }
            None => assert!(
                !matches!(slow, Decoded::Segment(s) if s.missing == 0 && !s.reassembled && s.payload_len > 0 && frame.len() as u32 == rec.origlen && ip[0] >> 4 == 4),
                "{rec:?}: fast path refused a plain segment"
            ),
        }
    }
    assert!(fast > 300, "{fast}");
}

/// `decode_into` and `decode`, fed the same frames, say the same of each:
/// the segment it pushed is the one `decode` returns, anything else is
/// returned alike, and the counters agree. The frames: every fixture's,
/// then a flow whose datagram was lost, so that notes wait (the path
/// `decode_into` hands to `decode`'s).
#[test]
fn decode_into_pushes_what_decode_returns() {
    let mut frames: Vec<(u32, Vec<u8>, u32)> = fixture_frames()
        .into_iter()
        .map(|(rec, frame)| (rec.link_type, frame, rec.origlen))
        .collect();
    let whole = simple_tcp(&[1u8; 100]);
    let head = v4_fragment(9, &whole, 0, 64);
    let reply = tcp(628, 40000, 7, 8, 0x10, &[], b"");
    let reply = ether(0x0800, &ipv4_with(DST4, SRC4, 6, 1, 0x4000, &reply));
    let lost_at = frames.len();
    frames.push((LINKTYPE_ETHERNET, head.clone(), head.len() as u32));
    frames.push((LINKTYPE_ETHERNET, reply.clone(), 60));
    frames.push((LINKTYPE_ETHERNET, reply.clone(), 60));
    let (mut one, mut other) = (Decoder::default(), Decoder::default());
    let mut segs = Vec::new();
    let (mut pushed, mut noted) = (0, 0);
    for (i, (link, frame, wire)) in frames.iter().enumerate() {
        if i == lost_at + 1 {
            one.expire(TS + 31_000_000_000);
            other.expire(TS + 31_000_000_000);
            assert!(!other.notes.is_empty(), "a note waits");
        }
        let at = AT as u32;
        let want = one.decode(TS, *link, frame, at, *wire);
        let before = segs.len();
        match other.decode_into(TS, *link, frame, at, *wire, &mut segs) {
            None => {
                pushed += 1;
                assert_eq!(segs.len(), before + 1);
                let got = segs.last().copied();
                assert!(
                    matches!(want, Decoded::Segment(s) if Some(s) == got),
                    "frame {i}: {want:?} vs {got:?}"
                );
            }
            Some(got) => {
                noted += usize::from(matches!(&got, Decoded::Segment(s) if s.frag_notes != 0));
                assert_eq!(segs.len(), before, "frame {i}");
                assert_eq!(format!("{want:?}"), format!("{got:?}"), "frame {i}");
            }
        }
    }
    assert!(pushed > 300, "{pushed}");
    assert_eq!(noted, 1, "the noted segment went through decode's path");
    assert_eq!(format!("{:?}", one.stats), format!("{:?}", other.stats));
}

/// The checksum as RFC 793 states it: big-endian 16-bit words.
fn reference_checksum(src: &[u8], dst: &[u8], tcp: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut words = |b: &[u8]| {
        for w in b.chunks(2) {
            let hi = u64::from(w[0]);
            let lo = u64::from(*w.get(1).unwrap_or(&0));
            sum += (hi << 8) | lo;
        }
    };
    words(src);
    words(dst);
    words(&[0, 6]);
    words(&(tcp.len() as u16).to_be_bytes());
    words(tcp);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

proptest::proptest! {
    /// The native-order, 8-bytes-at-a-time checksum agrees with the
    /// textbook one on any segment, of any length, IPv4 or IPv6.
    #[test]
    fn checksum_agrees_with_the_textbook(
        v4 in proptest::bool::ANY,
        src in proptest::array::uniform16(proptest::num::u8::ANY),
        dst in proptest::array::uniform16(proptest::num::u8::ANY),
        mut tcp in proptest::collection::vec(proptest::num::u8::ANY, 20..1600),
        fix in proptest::bool::ANY,
    ) {
        let (s, d): (&[u8], &[u8]) = if v4 { (&src[12..], &dst[12..]) } else { (&src, &dst) };
        let addr = |b: &[u8]| if v4 {
            addr_from_ip(IpAddr::from(<[u8; 4]>::try_from(b).unwrap()))
        } else {
            addr_from_ip(IpAddr::from(<[u8; 16]>::try_from(b).unwrap()))
        };
        let seg = Segment { src: addr(s), dst: addr(d), v4, ..v4_segment(0, 0, TCP_ACK) };
        if fix {
            tcp[16] = 0;
            tcp[17] = 0;
            let c = reference_checksum(s, d, &tcp);
            tcp[16..18].copy_from_slice(&c.to_be_bytes());
        }
        let expected = reference_checksum(s, d, &tcp) == 0;
        proptest::prop_assert_eq!(seg.checksum_ok(&tcp), expected);
        if fix {
            proptest::prop_assert!(seg.checksum_ok(&tcp));
        }
        // The sum decoding takes agrees, and so do its answers.
        let summed = presum(seg.v4, seg.src, seg.dst, &tcp);
        proptest::prop_assert_eq!(summed & CSUM_SUM_OK != 0, expected);
        let decoded = Segment { csum: summed, ..seg };
        proptest::prop_assert_eq!(decoded.checksum_ok(&tcp), expected);
        proptest::prop_assert_eq!(decoded.checksum_offloaded(&tcp), seg.checksum_offloaded(&tcp));
    }
}

/// IPv6 with a fragment header (next header TCP) carrying `chunk`.
fn ipv6_fragment(id: u32, offset: usize, more: bool, chunk: &[u8]) -> Vec<u8> {
    let mut fh = vec![6, 0];
    fh.extend_from_slice(&((offset as u16) | u16::from(more)).to_be_bytes());
    fh.extend_from_slice(&id.to_be_bytes());
    fh.extend_from_slice(chunk);
    ipv6(44, &fh)
}

fn v4_fragment(id: u16, whole: &[u8], from: usize, to: usize) -> Vec<u8> {
    let more = to < whole.len();
    let field = if more { 0x2000 } else { 0 } | (from / 8) as u16;
    ether(
        0x0800,
        &ipv4_with(SRC4, DST4, 6, id, field, &whole[from..to]),
    )
}

#[test]
fn ipv6_eight_byte_fragments_reversed_are_tiny() {
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let whole = simple_tcp(&payload);
    let mut d = Decoder::default();
    let mut from = (whole.len() - 1) / 8 * 8;
    let mut got = None;
    loop {
        let to = (from + 8).min(whole.len());
        let f = ether(
            0x86dd,
            &ipv6_fragment(7, from, to < whole.len(), &whole[from..to]),
        );
        match decode_in(&mut d, LINKTYPE_ETHERNET, &f, f.len() as u32).0 {
            Decoded::Skip(Skip::FragmentHeld) => {}
            Decoded::Reassembled(s, bytes) => got = Some((s, bytes)),
            other => panic!("{other:?}"),
        }
        if from == 0 {
            break;
        }
        from -= 8;
    }
    let (s, bytes) = got.expect("reassembled");
    assert_eq!(bytes, whole);
    assert_eq!(s.frag_notes, FRAG_NOTE_TINY);
    assert!(!s.v4);
    assert_eq!(d.stats.fragments_tiny, 1);
    assert_eq!(d.stats.fragment_losses_unreported, 0);
}

#[test]
fn full_size_fragments_are_not_tiny() {
    let payload = vec![7u8; 2900];
    let whole = simple_tcp(&payload);
    let mut d = Decoder::default();
    let a = v4_fragment(1, &whole, 0, 1480);
    let b = v4_fragment(1, &whole, 1480, whole.len());
    assert!(matches!(
        decode_in(&mut d, LINKTYPE_ETHERNET, &a, a.len() as u32).0,
        Decoded::Skip(Skip::FragmentHeld)
    ));
    let Decoded::Reassembled(s, _) = decode_in(&mut d, LINKTYPE_ETHERNET, &b, b.len() as u32).0
    else {
        panic!("not reassembled");
    };
    assert_eq!(s.frag_notes, 0);
    assert_eq!(d.stats.fragments_tiny, 0);
}

/// A datagram that times out flags the next segment of its 4-tuple (its
/// first fragment, with the ports, was held), in either direction.
#[test]
fn timed_out_datagram_flags_next_segment_of_its_flow() {
    let whole = simple_tcp(&[1u8; 100]);
    let mut d = Decoder::default();
    let a = v4_fragment(9, &whole, 0, 64);
    assert!(matches!(
        decode_in(&mut d, LINKTYPE_ETHERNET, &a, a.len() as u32).0,
        Decoded::Skip(Skip::FragmentHeld)
    ));
    assert_eq!(
        d.stats.fragment_losses_unreported, 1,
        "held at end of input"
    );
    d.expire(TS + 31_000_000_000);
    assert_eq!(d.stats.fragment_datagrams_lost, 1);
    assert_eq!(d.stats.fragment_losses_unreported, 1, "not told yet");
    // Another connection of the same hosts is not flagged.
    let other = ether(0x0800, &ipv4(6, &tcp(40001, 628, 1, 2, 0x10, &[], b"")));
    assert_eq!(
        seg(decode_in(&mut d, LINKTYPE_ETHERNET, &other, 60).0).frag_notes,
        0
    );
    // The reply of the flow itself is.
    let reply = tcp(628, 40000, 7, 8, 0x10, &[], b"");
    let reply = ether(0x0800, &ipv4_with(DST4, SRC4, 6, 1, 0x4000, &reply));
    let s = seg(decode_in(&mut d, LINKTYPE_ETHERNET, &reply, 60).0);
    assert_eq!(s.frag_notes, FRAG_NOTE_DROPPED);
    assert_eq!(d.stats.fragment_losses_unreported, 0);
    // Consumed: the next one is not.
    let s = seg(decode_in(&mut d, LINKTYPE_ETHERNET, &reply, 60).0);
    assert_eq!(s.frag_notes, 0);
}

/// The head never arrived (reversed fragments): the address pair's next
/// segments are flagged, tiny fragments named too.
#[test]
fn lost_datagram_without_ports_flags_the_address_pair() {
    let whole = simple_tcp(&[1u8; 100]);
    let mut d = Decoder::new(defrag::DefragConfig {
        max_fragments_per_datagram: 2,
        ..defrag::DefragConfig::default()
    });
    for from in [96, 88, 80] {
        let f = v4_fragment(3, &whole, from, (from + 8).min(whole.len()));
        let _ = decode_in(&mut d, LINKTYPE_ETHERNET, &f, f.len() as u32);
    }
    assert_eq!(d.defrag_stats().dropped_too_many_fragments, 1);
    assert_eq!(d.stats.fragment_datagrams_lost, 1);
    let other = ether(0x0800, &ipv4(6, &tcp(40001, 628, 1, 2, 0x10, &[], b"")));
    for _ in 0..PAIR_NOTE_SEGMENTS {
        let s = seg(decode_in(&mut d, LINKTYPE_ETHERNET, &other, 60).0);
        assert_eq!(s.frag_notes, FRAG_NOTE_DROPPED | FRAG_NOTE_TINY);
    }
    let s = seg(decode_in(&mut d, LINKTYPE_ETHERNET, &other, 60).0);
    assert_eq!(s.frag_notes, 0);
    assert_eq!(d.stats.fragment_losses_unreported, 0);
}

#[test]
fn unclaimed_notes_time_out_and_are_counted() {
    let whole = simple_tcp(&[1u8; 100]);
    let mut d = Decoder::default();
    let a = v4_fragment(9, &whole, 0, 64);
    let _ = decode_in(&mut d, LINKTYPE_ETHERNET, &a, a.len() as u32);
    d.expire(TS + 31_000_000_000);
    d.expire(TS + 31_000_000_000 + FRAG_NOTE_TIMEOUT_NS + 1);
    assert!(d.notes.is_empty());
    assert_eq!(d.stats.fragment_losses_unreported, 1);
}

#[test]
fn timestamp_option_found_in_any_layout() {
    let mut t = tcp(
        1,
        2,
        3,
        4,
        0x10,
        &[1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 0, 9],
        b"",
    );
    assert_eq!(tcp_tsval(&t, 32), Some(256));
    // A Linux SYN: MSS, SACK permitted, timestamp, NOP, window scale.
    t = tcp(
        1,
        2,
        3,
        4,
        0x02,
        &[
            2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 5, 0, 0, 0, 0, 1, 3, 3, 7,
        ],
        b"",
    );
    assert_eq!(tcp_tsval(&t, 40), Some(5));
    // Timestamp first, padded with EOL (fragroute's chaff).
    t = tcp(
        1,
        2,
        3,
        4,
        0x10,
        &[8, 10, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0],
        b"",
    );
    assert_eq!(tcp_tsval(&t, 32), Some(7));
    // None, a bad length, a cut option: no value and no panic.
    t = tcp(1, 2, 3, 4, 0x10, &[1, 1, 1, 0], b"");
    assert_eq!(tcp_tsval(&t, 24), None);
    t = tcp(1, 2, 3, 4, 0x10, &[3, 1, 8, 10], b"");
    assert_eq!(tcp_tsval(&t, 24), None);
    t = tcp(1, 2, 3, 4, 0x10, &[1, 1, 8, 10, 0, 0, 0, 1], b"");
    assert_eq!(tcp_tsval(&t, 28), None);
    assert_eq!(tcp_tsval(&t, 60), None);
    for len in 0..t.len() {
        let _ = tcp_tsval(&t[..len], 28);
    }
}

/// A TCP checksum over documentation IPv6 addresses, computed outside the
/// project (Python, RFC 793 words): all 16 bytes of both addresses are in
/// the pseudo-header, so a change in either half of either address fails.
#[test]
fn ipv6_checksum_covers_whole_addresses() {
    let ip6 = |s: &str| addr_from_ip(s.parse::<IpAddr>().unwrap());
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&40000u16.to_be_bytes());
    tcp.extend_from_slice(&209u16.to_be_bytes());
    tcp.extend_from_slice(&1u32.to_be_bytes());
    tcp.extend_from_slice(&1u32.to_be_bytes());
    tcp.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0x76, 0x94, 0, 0]);
    tcp.extend_from_slice(b"8:\nhello,");
    let seg = |src: &str, dst: &str| Segment {
        src: ip6(src),
        dst: ip6(dst),
        v4: false,
        ..v4_segment(0, 0, TCP_ACK)
    };
    assert!(seg("2001:db8::7", "2001:db8::ffff:0:0:25").checksum_ok(&tcp));
    for (src, dst) in [
        ("2001:db9::7", "2001:db8::ffff:0:0:25"),
        ("2001:db8::8", "2001:db8::ffff:0:0:25"),
        ("2001:db8::7", "2001:db8:1:0:ffff::25"),
        ("2001:db8::7", "2001:db8::ffff:0:0:26"),
        ("2001:db8::7", "2001:db8::fffe:0:0:25"),
    ] {
        assert!(!seg(src, dst).checksum_ok(&tcp), "{src} {dst}");
    }
}

/// Which segments are worth summing: those carrying bytes, opening a
/// direction or resetting it, and only when whole.
#[test]
fn checksum_matters_for_data_syn_and_rst_when_whole() {
    let s = |len: usize, flags: u8| v4_segment(0, len, flags);
    assert!(s(1, TCP_ACK).checksum_matters());
    assert!(s(0, TCP_SYN).checksum_matters());
    assert!(s(0, TCP_RST | TCP_ACK).checksum_matters());
    assert!(!s(0, TCP_ACK).checksum_matters());
    assert!(!s(0, TCP_FIN | TCP_ACK).checksum_matters());
    let cut = Segment {
        missing: 1,
        ..s(1, TCP_ACK)
    };
    assert!(!cut.checksum_matters());
    let rebuilt = Segment {
        reassembled: true,
        ..s(1, TCP_ACK)
    };
    assert!(!rebuilt.checksum_matters());
}

/// RFC 1071's sum, 16-bit big-endian words one at a time: what
/// [`ones_sum`]'s eight-byte native-order words must agree with.
fn reference_sum(b: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for w in b.chunks(2) {
        let hi = u64::from(w[0]);
        let lo = w.get(1).map_or(0, |&x| u64::from(x));
        sum += hi << 8 | lo;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

proptest::proptest! {
    /// The pseudo-header sum (which the offloaded-checksum test compares
    /// with the field) is RFC 1071's over the pseudo-header's bytes.
    #[test]
    fn pseudo_sum_agrees_with_rfc1071(
        v4 in proptest::bool::ANY,
        src in proptest::array::uniform16(proptest::num::u8::ANY),
        dst in proptest::array::uniform16(proptest::num::u8::ANY),
        len in 0usize..65536,
    ) {
        let (s, d): (&[u8], &[u8]) = if v4 { (&src[12..], &dst[12..]) } else { (&src, &dst) };
        let addr = |b: &[u8]| if v4 {
            addr_from_ip(IpAddr::from(<[u8; 4]>::try_from(b).unwrap()))
        } else {
            addr_from_ip(IpAddr::from(<[u8; 16]>::try_from(b).unwrap()))
        };
        let seg = Segment { src: addr(s), dst: addr(d), v4, ..v4_segment(0, 0, TCP_ACK) };
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(s);
        pseudo.extend_from_slice(d);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(len as u16).to_be_bytes());
        proptest::prop_assert_eq!(seg.pseudo_sum(len), reference_sum(&pseudo));
    }
}

/// The folding loop [`fold16`] replaced: its four fixed steps must give
/// the same number for every input.
fn fold16_by_loop(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[test]
fn fold16_agrees_with_the_loop_at_the_edges() {
    for x in [
        0,
        1,
        0xfffe,
        0xffff,
        0x1_0000,
        0x1_0001,
        0x2_fffe,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_ffff_fffe,
        u64::MAX,
        u64::MAX - 1,
        0x8000_0000_0000_0000,
        0xffff_0000_ffff_0000,
    ] {
        assert_eq!(fold16(x), fold16_by_loop(x), "{x:#x}");
    }
}

proptest::proptest! {
    #[test]
    fn fold16_agrees_with_the_loop(x in proptest::num::u64::ANY, small in 0u64..0x4_0000) {
        proptest::prop_assert_eq!(fold16(x), fold16_by_loop(x));
        proptest::prop_assert_eq!(fold16(small), fold16_by_loop(small));
    }

    /// Sums of the largest pieces `ones_sum` and the pseudo-header add
    /// (carries of every lane) fold as the loop does.
    #[test]
    fn ones_sum_of_all_ones_folds_as_before(len in 0usize..200) {
        let b = vec![0xff; len];
        let s = ones_sum(&b);
        proptest::prop_assert!(s < 1 << 34);
        proptest::prop_assert_eq!(fold16(s + 0xffff), fold16_by_loop(s + 0xffff));
    }
}

proptest::proptest! {
    /// Every length (short, odd, a remainder of each size) and content
    /// folds to RFC 1071's sum: the native-order words meet the big-endian
    /// sum after one swap.
    #[test]
    fn ones_sum_agrees_with_rfc1071(
        b in proptest::collection::vec(proptest::num::u8::ANY, 0..1600),
        ones in proptest::bool::ANY,
    ) {
        // All-ones bytes push every lane and carry to its limit.
        let b = if ones { vec![0xff; b.len()] } else { b };
        let ours = u16::from_be(fold16(ones_sum(&b)));
        let want = reference_sum(&b);
        // 0 and 0xffff are the same number in one's complement.
        let norm = |x: u16| if x == 0xffff { 0 } else { x };
        proptest::prop_assert_eq!(norm(ours), norm(want));
    }
}

/// Only frames that touch no reassembly state, and only while no note of
/// a lost datagram waits, may be decoded elsewhere; such a frame decodes
/// the same in a fresh decoder as here.
#[test]
fn frames_deferred_to_another_decoder_decode_the_same() {
    let whole = simple_tcp(&[1u8; 100]);
    let d = Decoder::default();
    let plain4 = ether(0x0800, &ipv4(6, &tcp(40000, 628, 1, 2, 0x18, &[], PAYLOAD)));
    let dont_fragment = ether(
        0x0800,
        &ipv4_with(
            DST4,
            SRC4,
            6,
            1,
            0x4000,
            &tcp(628, 40000, 7, 8, 0x10, &[], b""),
        ),
    );
    let udp4 = ether(0x0800, &ipv4(17, &[0u8; 12]));
    let plain6 = ether(0x86dd, &ipv6(6, &tcp(40000, 209, 1, 2, 0x18, &[], PAYLOAD)));
    let raw6 = ipv6(6, &tcp(40000, 209, 1, 2, 0x18, &[], PAYLOAD));
    for (name, lt, f) in [
        ("IPv4 TCP", LINKTYPE_ETHERNET, &plain4),
        ("IPv4 TCP, DF set", LINKTYPE_ETHERNET, &dont_fragment),
        ("IPv4 UDP", LINKTYPE_ETHERNET, &udp4),
        ("IPv6 TCP", LINKTYPE_ETHERNET, &plain6),
        ("raw IPv6 TCP", LINKTYPE_RAW, &raw6),
    ] {
        assert!(d.may_defer(lt, f), "{name}");
        let mut here = Decoder::default();
        let mut there = Decoder::default();
        let a = decode_in(&mut here, lt, f, f.len() as u32);
        let b = decode_in(&mut there, lt, f, f.len() as u32);
        assert_eq!(format!("{:?}", a.0), format!("{:?}", b.0), "{name}");
    }
    let first = v4_fragment(9, &whole, 0, 64);
    let last = v4_fragment(9, &whole, 64, whole.len());
    let frag6 = ether(0x86dd, &ipv6_fragment(7, 0, true, &whole[..64]));
    let hop_by_hop = ether(0x86dd, &ipv6(0, &[6, 0, 1, 4, 0, 0, 0, 0]));
    let arp = ether(0x0806, &[0u8; 28]);
    let cut = ether(0x0800, &[0x45, 0, 0]);
    for (name, f) in [
        ("first IPv4 fragment", &first),
        ("last IPv4 fragment", &last),
        ("IPv6 fragment", &frag6),
        ("IPv6 extension header", &hop_by_hop),
        ("not IP", &arp),
        ("IPv4 header cut short", &cut),
    ] {
        assert!(!d.may_defer(LINKTYPE_ETHERNET, f), "{name}");
    }
    // A note of a lost datagram waits: every frame is decoded here.
    let mut noted = Decoder::default();
    let _ = decode_in(&mut noted, LINKTYPE_ETHERNET, &first, first.len() as u32);
    assert!(
        noted.may_defer(LINKTYPE_ETHERNET, &plain4),
        "held, not lost yet"
    );
    noted.expire(TS + 31_000_000_000);
    assert!(!noted.may_defer(LINKTYPE_ETHERNET, &plain4));
}

/// The endpoints read from the headers of a frame that may be deferred are
/// the ones its segment gets when decoded; fragments, non-TCP and pending
/// notes give none.
#[test]
fn deferred_endpoints_are_the_segments() {
    let d = Decoder::default();
    let with_opts = ether(
        0x0800,
        &ipv4(
            6,
            &tcp(
                40000,
                628,
                1,
                2,
                0x18,
                &[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7],
                PAYLOAD,
            ),
        ),
    );
    for (lt, f) in [
        (
            LINKTYPE_ETHERNET,
            ether(0x0800, &ipv4(6, &tcp(40000, 628, 1, 2, 0x18, &[], PAYLOAD))),
        ),
        (LINKTYPE_ETHERNET, with_opts),
        (
            LINKTYPE_ETHERNET,
            ether(0x86dd, &ipv6(6, &tcp(40000, 209, 1, 2, 0x18, &[], PAYLOAD))),
        ),
        (
            LINKTYPE_RAW,
            ipv6(6, &tcp(209, 40000, 1, 2, 0x10, &[], b"")),
        ),
        (
            LINKTYPE_RAW,
            ipv4(6, &tcp(628, 40001, 1, 2, 0x10, &[], b"")),
        ),
    ] {
        let mut here = Decoder::default();
        let s = seg(decode_in(&mut here, lt, &f, f.len() as u32).0);
        assert_eq!(
            d.deferred_endpoints(lt, &f),
            Some((s.src, s.sport, s.dst, s.dport))
        );
    }
    let whole = simple_tcp(&[1u8; 100]);
    let udp = ether(0x0800, &ipv4(17, &[0u8; 12]));
    let frag = v4_fragment(9, &whole, 0, 64);
    let frag6 = ether(0x86dd, &ipv6_fragment(7, 0, true, &whole[..64]));
    let no_ports = ether(0x0800, &ipv4(6, &[0x9c, 0x40]));
    for f in [&udp, &frag, &frag6, &no_ports] {
        assert_eq!(d.deferred_endpoints(LINKTYPE_ETHERNET, f), None);
    }
    let mut noted = Decoder::default();
    let _ = decode_in(&mut noted, LINKTYPE_ETHERNET, &frag, frag.len() as u32);
    noted.expire(TS + 31_000_000_000);
    let plain = ether(0x0800, &ipv4(6, &tcp(40000, 628, 1, 2, 0x18, &[], PAYLOAD)));
    assert_eq!(noted.deferred_endpoints(LINKTYPE_ETHERNET, &plain), None);
}
