#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, made from the fixtures.

    python3 make_seeds.py FIXTURES_DIR CORPUS_DIR

writes CORPUS_DIR/TARGET/seed-* for every target (deterministic: same
fixtures, same seeds). Input formats are those documented in harness.rs:

- capture_reader: every capture file whole, and cut to its first records,
  behind a header choosing a tiny block size and short reads;
- decode_frame: frames taken from the captures (one frame per seed, with the
  link-type selector byte), several-frame seeds, and IPv4/IPv6 fragments
  made from real packets, other link types and VLAN tags;
- protocol_chunks: the client and server byte streams of every TCP
  connection in the captures, with a few chunk schedules;
- reassembly_model: synthetic segment sequences (in order, reordered,
  duplicated, overlapping, snap-cut, with acknowledgements and small caps);
- flow_table: whole conversations (QMTP, QMQP, HTTP, IPv6; in pieces, with
  urgent data, a forged RST, chaff, snap cuts, timestamps, tight caps, an
  expiry pass) and random op sequences over the harness's connections.
"""

import glob
import os
import random
import struct
import sys

LINK_TYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276]


# ------------------------------------------------------------ capture files


def read_capture(data):
    """Yields (link_type, frame) of a classic pcap or pcapng file."""
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        end = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        end = ">"
    elif magic == b"\x0a\x0d\x0d\x0a":
        yield from read_pcapng(data)
        return
    else:
        return
    link = struct.unpack(end + "I", data[20:24])[0] & 0xFFFF
    pos = 24
    while pos + 16 <= len(data):
        caplen = struct.unpack(end + "I", data[pos + 8 : pos + 12])[0]
        yield link, data[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen


def read_pcapng(data):
    pos, end, links = 0, "<", []
    while pos + 12 <= len(data):
        btype = struct.unpack(end + "I", data[pos : pos + 4])[0]
        if data[pos : pos + 4] == b"\x0a\x0d\x0d\x0a":
            end = "<" if data[pos + 8 : pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            links = []
            btype = 0x0A0D0D0A
        blen = struct.unpack(end + "I", data[pos + 4 : pos + 8])[0]
        if blen < 12:
            return
        body = data[pos : pos + blen]
        if btype == 1:
            links.append(struct.unpack(end + "H", body[8:10])[0])
        elif btype == 6:
            iface, = struct.unpack(end + "I", body[8:12])
            caplen, = struct.unpack(end + "I", body[20:24])
            if iface < len(links):
                yield links[iface], body[28 : 28 + caplen]
        pos += blen


def first_records(data, n):
    """The capture cut after its first n packet records (whole file if shorter)."""
    magic = data[:4]
    if magic == b"\x0a\x0d\x0d\x0a":
        pos, end, seen = 0, "<", 0
        while pos + 12 <= len(data) and seen < n:
            if data[pos : pos + 4] == b"\x0a\x0d\x0d\x0a":
                end = "<" if data[pos + 8 : pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            btype, blen = struct.unpack(end + "II", data[pos : pos + 8])
            if blen < 12:
                break
            seen += btype in (2, 3, 6)
            pos += blen
        return data[:pos]
    end = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    pos = 24
    for _ in range(n):
        if pos + 16 > len(data):
            break
        caplen = struct.unpack(end + "I", data[pos + 8 : pos + 12])[0]
        pos += 16 + caplen
    return data[:pos]


# -------------------------------------------------------------- packet bits


def ip_of(link, frame):
    """(ip packet, link header) of a frame, or None."""
    if link == 1:
        off, et = 14, frame[12:14]
        while et in (b"\x81\x00", b"\x88\xa8"):
            et, off = frame[off + 2 : off + 4], off + 4
        return (frame[off:], frame[:off]) if et in (b"\x08\x00", b"\x86\xdd") else None
    if link == 113:
        return (frame[16:], frame[:16]) if frame[14:16] in (b"\x08\x00", b"\x86\xdd") else None
    if link == 276:
        return (frame[20:], frame[:20]) if frame[0:2] in (b"\x08\x00", b"\x86\xdd") else None
    if link in (0, 108):
        return frame[4:], frame[:4]
    if link in (12, 14, 101, 228, 229):
        return frame, b""
    return None


def tcp_of(ip):
    """(src, dst, sport, dport, seq, flags, payload) of an IPv4/IPv6 TCP packet."""
    if not ip:
        return None
    if ip[0] >> 4 == 4:
        ihl = (ip[0] & 15) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        if ip[9] != 6:
            return None
        src, dst, tcp = ip[12:16], ip[16:20], ip[ihl:total]
    elif ip[0] >> 4 == 6:
        if ip[6] != 6:
            return None
        plen = struct.unpack(">H", ip[4:6])[0]
        src, dst, tcp = ip[8:24], ip[24:40], ip[40 : 40 + plen]
    else:
        return None
    if len(tcp) < 20:
        return None
    sport, dport, seq = struct.unpack(">HHI", tcp[:8])
    doff = (tcp[12] >> 4) * 4
    return src, dst, sport, dport, seq, tcp[13], tcp[doff:]


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(">%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def v4_fragments(ip, size, ident):
    """IPv4 fragments (payload pieces of `size` bytes, a multiple of 8)."""
    ihl = (ip[0] & 15) * 4
    total = struct.unpack(">H", ip[2:4])[0]
    hdr, body = bytearray(ip[:ihl]), ip[ihl:total]
    out = []
    for off in range(0, len(body), size):
        piece = body[off : off + size]
        h = bytearray(hdr)
        more = off + size < len(body)
        struct.pack_into(">HHH", h, 2, ihl + len(piece), ident, (off // 8) | (0x2000 if more else 0))
        struct.pack_into(">H", h, 10, 0)
        struct.pack_into(">H", h, 10, csum(bytes(h)))
        out.append(bytes(h) + piece)
    return out


def v6_fragments(ip, size, ident):
    """IPv6 fragments (fragment extension header) of a plain IPv6 TCP packet."""
    plen = struct.unpack(">H", ip[4:6])[0]
    hdr, body = bytearray(ip[:40]), ip[40 : 40 + plen]
    out = []
    for off in range(0, len(body), size):
        piece = body[off : off + size]
        more = off + size < len(body)
        h = bytearray(hdr)
        struct.pack_into(">H", h, 4, 8 + len(piece))
        h[6] = 44
        frag = struct.pack(">BBHI", 6, 0, off | (1 if more else 0), ident)
        out.append(bytes(h) + frag + piece)
    return out


def multi(sel, frames, cut=0, dt=0):
    out = bytes([sel | 0x80])
    for f in frames:
        out += struct.pack("<HBB", len(f), cut, dt) + f
    return out


# -------------------------------------------------------------------- seeds


def write(corpus, target, name, data):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def main():
    fixtures, corpus = sys.argv[1], sys.argv[2]
    files = sorted(glob.glob(os.path.join(fixtures, "*.pcap*")))
    files += sorted(glob.glob(os.path.join(fixtures, "derived", "*.pcap")))
    rng = random.Random(209)
    counts = {}

    def add(target, name, data):
        write(corpus, target, name, data)
        counts[target] = counts.get(target, 0) + 1

    frames_by_link = {}
    conns = {}
    for path in files:
        base = os.path.basename(path).split(".")[0]
        data = open(path, "rb").read()
        # capture_reader: [block size][mode][sizes][file]
        add("capture_reader", base, bytes([0, 0]) + data)
        add("capture_reader", base + "-head", bytes([0, 3, 1, 7, 200]) + first_records(data, 6))
        add("capture_reader", base + "-head-any", bytes([40, 0x11, 0]) + first_records(data, 3))
        seen = set()
        for i, (link, frame) in enumerate(read_capture(data)):
            if link not in LINK_TYPES:
                continue
            frames_by_link.setdefault(link, []).append(frame)
            ip = ip_of(link, frame)
            t = tcp_of(ip[0]) if ip else None
            if t is None:
                continue
            src, dst, sport, dport, seq, flags, payload = t
            # decode_frame: a few frames of each kind per capture.
            kind = (link, flags, len(payload) > 0, len(ip[0]) and ip[0][0] >> 4)
            if kind not in seen:
                seen.add(kind)
                add("decode_frame", "%s-%d" % (base, i), bytes([LINK_TYPES.index(link)]) + frame)
            # protocol_chunks: collect each connection's streams.
            key = (base,) + tuple(sorted([(src, sport), (dst, dport)]))
            c = conns.setdefault(key, {"client": None, "data": {}})
            if c["client"] is None and (flags & 0x12) == 0x02:
                c["client"] = (src, sport)
            if c["client"] is None and payload:
                c["client"] = (src, sport)
            side = c["data"].setdefault((src, sport), {})
            if payload:
                side.setdefault(seq, payload)

    # decode_frame: several frames in a row, small caps, fragments.
    for link, frames in sorted(frames_by_link.items()):
        idx = LINK_TYPES.index(link)
        add("decode_frame", "multi-%d" % link, multi(idx, frames[:6], dt=3))
        add("decode_frame", "multi-cut-%d" % link, multi(idx | 0x40, frames[3:7], cut=20, dt=1))
    for link, frames in sorted(frames_by_link.items()):
        for n, frame in enumerate(frames):
            ip, head = ip_of(link, frame) or (None, None)
            t = tcp_of(ip) if ip else None
            if not t or len(t[6]) < 40:
                continue
            version = ip[0] >> 4
            pieces = v4_fragments(ip, 24, 0x1234 + n) if version == 4 else v6_fragments(ip, 24, 0x99 + n)
            idx = LINK_TYPES.index(link)
            add("decode_frame", "frag-%d-%d" % (link, n), multi(idx, [head + p for p in pieces]))
            rev = [head + p for p in reversed(pieces)]
            add("decode_frame", "frag-rev-%d-%d" % (link, n), multi(idx | 0x40, rev, dt=8))
            raw = 8 if version == 4 else 9  # 228 IPV4 / 229 IPV6
            dup = pieces[:2] + pieces[1:]
            add("decode_frame", "frag-raw-%d-%d" % (link, n), multi(raw, dup))
            # The same packet under other link layers.
            ethertype = b"\x08\x00" if version == 4 else b"\x86\xdd"
            null = struct.pack("<I", 2 if version == 4 else 24)
            add("decode_frame", "null-%d" % n, bytes([0]) + null + ip)
            add("decode_frame", "loop-%d" % n, bytes([5]) + struct.pack(">I", 2 if version == 4 else 30) + ip)
            vlan = b"\x02" * 12 + b"\x88\xa8\x00\x05\x81\x00\x00\x07" + ethertype + ip
            add("decode_frame", "qinq-%d" % n, bytes([1]) + vlan)
            sll = b"\x00\x00\x03\x04\x00\x06" + b"\x02" * 8 + ethertype + ip
            add("decode_frame", "sll-%d" % n, bytes([6]) + sll)
            sll2 = ethertype + b"\x00\x00" + b"\x00\x00\x00\x01" + b"\x03\x04\x00\x06" + b"\x02" * 8 + ip
            add("decode_frame", "sll2-%d" % n, bytes([9]) + sll2)
            add("decode_frame", "raw-%d" % n, bytes([4]) + ip)
            break

    # protocol_chunks: [opts][parser][k][schedule][client_len][client][server]
    schedules = [b"", bytes([0x05, 0x85, 0x20, 0x90]), bytes([0x00, 0x80, 0x3F, 0xBF, 0x02]),
                 bytes([0x10, 0x63, 0x7F, 0x81])]
    for n, (key, c) in enumerate(sorted(conns.items(), key=lambda kv: repr(kv[0]))):
        if c["client"] is None:
            continue
        streams = []
        for who in [c["client"]] + [s for s in c["data"] if s != c["client"]][:1]:
            segs = c["data"].get(who, {})
            if not segs:
                streams.append(b"")
                continue
            first = min(segs)
            buf = bytearray()
            for seq in sorted(segs):
                off, p = seq - first, segs[seq]
                if off > len(buf):
                    break  # a hole: keep the stream up to it
                if off + len(p) > len(buf):
                    buf += p[len(buf) - off :]
            streams.append(bytes(buf))
        while len(streams) < 2:
            streams.append(b"")
        client, server = streams[0][:65535], streams[1]
        if not client and not server:
            continue
        port = [p for (_, p) in key[1:] if (_, p) != c["client"]]
        port = port[0] if port else 0
        opts = {209: 0, 628: 1, 2209: 2}.get(port, 3)
        for j, sched in enumerate(schedules[: 2 if n % 3 else 4]):
            o = opts | (0x04 if j == 3 else 0) | (0x40 if j == 1 else 0)
            data = bytes([o, 0x01, len(sched)]) + sched + struct.pack("<H", len(client)) + client + server
            add("protocol_chunks", "%s-%d-%d" % (key[0], n, j), data)

    # reassembly_model: [caps][limits][prefill][seed][isn] then 4-byte ops.
    def seg(pos, length, syn=False, fin=False, corrupt=False, missing=False, scale=0):
        kind = (0x04 if syn else 0) | (0x08 if fin else 0) | (0x10 if corrupt else 0)
        kind |= (0x20 if missing else 0) | (scale << 6)
        return struct.pack("<BHB", kind, pos, length)

    def ack(pos):
        return struct.pack("<BHB", 2, pos, 0)

    def header(caps, limits, prefill=0, seed=7, isn=1000):
        return bytes([caps, limits, prefill, seed]) + struct.pack("<I", isn)

    roomy = (7) | (7 << 3) | (3 << 6)  # 256 KiB, 256 pieces, 2 KiB window
    tight = 3 | (2 << 3) | (2 << 6)  # 64 bytes, 2 pieces, 16-byte window
    budget_all = 7 | (7 << 3)
    budget_small = 7 | (2 << 3)
    cases = {
        "inorder": header(roomy, budget_all) + seg(0, 0, syn=True) + b"".join(seg(1 + 50 * i, 50) for i in range(8)) + seg(401, 0, fin=True),
        "reversed": header(roomy, budget_all) + seg(0, 0, syn=True) + b"".join(seg(1 + 40 * i, 40) for i in reversed(range(8))),
        "overlap": header(roomy, budget_all) + seg(0, 0, syn=True) + seg(21, 30) + seg(1, 40) + seg(11, 60) + seg(1, 100, fin=True),
        "conflict": header(roomy, budget_all) + seg(0, 0, syn=True) + seg(1, 40) + seg(21, 40, corrupt=True) + seg(61, 30) + seg(41, 30, corrupt=True),
        "caps": header(tight, budget_small, prefill=4) + seg(0, 0, syn=True) + seg(101, 30) + seg(51, 30) + seg(161, 40) + seg(11, 200) + seg(1, 20),
        "cap-hole": header(3 | (1 << 3), budget_all) + seg(10, 10) + seg(30, 10) + seg(15, 40) + seg(0, 10),
        "ack-gap": header(roomy, budget_all) + seg(0, 0, syn=True) + seg(1, 10) + seg(31, 10) + ack(41) + seg(11, 20),
        "snapcut": header(roomy, budget_all) + seg(5, 20, missing=True) + seg(70, 10) + seg(30, 60) + seg(5, 90, scale=1),
        "midstream": header(roomy, 4 | (7 << 3), isn=0xFFFFFF00) + seg(500, 100) + seg(300, 250, scale=1) + seg(600, 10, fin=True) + seg(0, 0, syn=True),
        "wrap": header(1 | (3 << 6) | (1 << 3), 2 | (3 << 3), isn=0xFFFFFFF0) + seg(0, 0, syn=True) + seg(1, 30) + seg(64, 20) + seg(200, 20) + b"\x03\x00\x00\x00" + seg(31, 255, scale=3),
    }
    for name, data in cases.items():
        add("reassembly_model", name, data)
    for i in range(12):
        ops = [seg(0, 0, syn=True)]
        for _ in range(rng.randrange(4, 24)):
            r = rng.random()
            pos = rng.randrange(0, 600)
            if r < 0.1:
                ops.append(ack(pos))
            else:
                ops.append(seg(pos, rng.randrange(0, 80), fin=rng.random() < 0.05,
                               corrupt=rng.random() < 0.05, missing=rng.random() < 0.05))
        caps = rng.randrange(256)
        limits = rng.randrange(256)
        add("reassembly_model", "random-%d" % i, header(caps, limits, rng.randrange(4), i) + b"".join(ops))

    # flow_table: [caps][isn] then 4-byte ops [kind][len][seqsel][extra];
    # kind = conn | dir << 3 | flags index << 4 (15: expiry pass; with the
    # dir bit, a new connection on that four-tuple).
    def fop(conn, d, flags, length=0, seqsel=0, extra=1):
        return bytes([conn | (d << 3) | (flags << 4), length, seqsel, extra])

    def conversation(conn, request, reply, caps=0x3F, isn=7, middle=b""):
        ops = fop(conn, 0, 2) + fop(conn, 1, 3) + fop(conn, 0, 0)
        ops += request + middle + fop(conn, 1, 1, reply)
        ops += fop(conn, 0, 4) + fop(conn, 1, 4) + fop(conn, 0, 0)
        return bytes([caps, isn]) + ops

    flow_cases = {
        "qmtp": conversation(0, fop(0, 0, 1, 71), 37),
        "qmtp-pieces": conversation(0, fop(0, 0, 1, 20) + fop(0, 0, 1, 20, 3) + fop(0, 0, 1, 27) + fop(0, 0, 1, 24), 37),
        "qmtp-urgent": conversation(0, fop(0, 0, 7, 1, 0, 0x41) + fop(0, 0, 1, 71), 37),
        "qmtp-rst-forged": conversation(0, fop(0, 0, 5, 0, 4) + fop(0, 0, 1, 71), 37),
        "qmtp-chaff": conversation(0, fop(0, 0, 1, 71, 0x80 | 0x40, 0x09) + fop(0, 0, 1, 71), 37),
        "qmtp-snapcut": conversation(0, fop(0, 0, 1, 71, 0, 0x05), 37),
        "qmtp-ts": conversation(0, fop(0, 0, 1, 40, 0, 0x21) + fop(0, 0, 1, 31, 0, 0x21), 37),
        "qmqp": conversation(2, fop(2, 0, 1, 51), 27),
        "http": conversation(4, fop(4, 0, 1, 37), 24),
        "v6": conversation(6, fop(6, 0, 1, 71), 37),
        "tight-caps": conversation(0, fop(0, 0, 1, 30, 3) + fop(0, 0, 1, 71), 37, caps=0x15),
        "expiry": conversation(1, fop(1, 0, 1, 71) + bytes([0xF0, 0, 0, 3]), 37),
        # A QMTP package whose answer and end the capture lost, then a new
        # connection on the four-tuple with its own package.
        "reuse-unseen-end": conversation(0, fop(0, 0, 1, 71), 37)[:2 + 4 * 4] + fop(0, 1, 15, 9)
        + conversation(0, fop(0, 0, 1, 71), 37)[2:],
    }
    for name, data in flow_cases.items():
        add("flow_table", name, data)
    for i in range(16):
        ops = b""
        for _ in range(rng.randrange(8, 60)):
            conn = rng.randrange(8)
            ops += fop(conn, rng.randrange(2), rng.choice([0, 1, 1, 1, 2, 3, 4, 5, 7, 8, 15]),
                       rng.choice([0, 0, 10, 40, 71, 200]), rng.randrange(256), rng.randrange(256))
        add("flow_table", "random-%d" % i, bytes([rng.randrange(256), i]) + ops)

    for t, n in sorted(counts.items()):
        print("seeds: %-17s %d" % (t, n))


if __name__ == "__main__":
    main()
