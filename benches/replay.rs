//! End to end: `pipeline::replay` over a generated Ethernet pcap with bulk
//! HTTP-like downloads, many short non-QMTP connections, and QMTP and QMQP
//! sessions, with 1 and 2 workers.

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qmwatch::detect::policy::Policy;
use qmwatch::flow::FlowConfig;
use qmwatch::pipeline::{replay, ReplayConfig, ReplayReport};
use qmwatch::sink::Output;

/// Generates the capture: packets built with etherparse, framed as classic
/// pcap (microsecond timestamps, LINKTYPE_ETHERNET) by hand.
mod gen {
    use etherparse::{PacketBuilder, TcpOptionElement};

    pub const MSS: usize = 1448;

    /// What the capture holds, to check the replay against.
    #[derive(Debug, Default)]
    pub struct Mix {
        pub packets: u64,
        pub bulk_flows: u64,
        pub short_flows: u64,
        pub qmtp_sessions: u64,
        pub qmtp_packages: u64,
        pub qmqp_messages: u64,
    }

    struct Packet {
        ts_ns: u64,
        frame: Vec<u8>,
    }

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    struct Endpoint {
        mac: [u8; 6],
        ip: [u8; 4],
        port: u16,
        /// Next sequence number this endpoint sends.
        seq: u32,
    }

    /// One TCP connection being written, with correct seq/ack on both sides.
    struct Conn {
        ends: [Endpoint; 2],
        ts_ns: u64,
    }

    const CLIENT: usize = 0;
    const SERVER: usize = 1;
    const SYN: u8 = 1;
    const FIN: u8 = 2;
    const PSH: u8 = 4;

    impl Conn {
        fn new(rng: &mut Rng, client: ([u8; 4], u16), server: ([u8; 4], u16), ts_ns: u64) -> Self {
            let end = |rng: &mut Rng, (ip, port): ([u8; 4], u16)| Endpoint {
                mac: [0x02, 0, ip[0], ip[1], ip[2], ip[3]],
                ip,
                port,
                seq: rng.next() as u32,
            };
            Conn {
                ends: [end(rng, client), end(rng, server)],
                ts_ns,
            }
        }

        /// One segment from `from`; SYN and FIN take a sequence number.
        fn packet(&mut self, out: &mut Vec<Packet>, from: usize, flags: u8, payload: &[u8]) {
            let (src, dst) = (&self.ends[from], &self.ends[1 - from]);
            let mut b = PacketBuilder::ethernet2(src.mac, dst.mac)
                .ipv4(src.ip, dst.ip, 64)
                .tcp(src.port, dst.port, src.seq, 64_240);
            if flags & SYN != 0 {
                b = b.syn();
            }
            // Everything but the client's SYN acknowledges the peer.
            if !(flags & SYN != 0 && from == CLIENT) {
                b = b.ack(dst.seq);
            }
            if flags & FIN != 0 {
                b = b.fin();
            }
            if flags & PSH != 0 {
                b = b.psh();
            }
            let tsval = (self.ts_ns / 1_000_000) as u32;
            let b = b
                .options(&[
                    TcpOptionElement::Noop,
                    TcpOptionElement::Noop,
                    TcpOptionElement::Timestamp(tsval, tsval.wrapping_sub(1)),
                ])
                .expect("timestamp option fits");
            let mut frame = Vec::with_capacity(b.size(payload.len()));
            b.write(&mut frame, payload).expect("write frame");
            out.push(Packet {
                ts_ns: self.ts_ns,
                frame,
            });
            let used = payload.len() as u32 + u32::from(flags & (SYN | FIN) != 0);
            let src = &mut self.ends[from];
            src.seq = src.seq.wrapping_add(used);
            self.ts_ns += 20_000;
        }

        fn handshake(&mut self, out: &mut Vec<Packet>) {
            self.packet(out, CLIENT, SYN, b"");
            self.packet(out, SERVER, SYN, b"");
            self.packet(out, CLIENT, 0, b"");
        }

        /// `data` from `from` in MSS-sized segments; the receiver ACKs every
        /// second segment and the end of the write.
        fn send(&mut self, out: &mut Vec<Packet>, from: usize, data: &[u8]) {
            let n = data.chunks(MSS).len();
            for (i, seg) in data.chunks(MSS).enumerate() {
                let last = i + 1 == n;
                self.packet(out, from, if last { PSH } else { 0 }, seg);
                if i % 2 == 1 || last {
                    self.packet(out, 1 - from, 0, b"");
                }
            }
        }

        /// FIN from `first`, FIN from the other side, last ACK.
        fn close(&mut self, out: &mut Vec<Packet>, first: usize) {
            self.packet(out, first, FIN, b"");
            self.packet(out, 1 - first, FIN, b"");
            self.packet(out, first, 0, b"");
        }
    }

    pub fn ns(content: &[u8]) -> Vec<u8> {
        let mut v = format!("{}:", content.len()).into_bytes();
        v.extend_from_slice(content);
        v.push(b',');
        v
    }

    /// A mail message of exactly `len` bytes.
    fn message(len: usize, crlf: bool, seed: u64) -> Vec<u8> {
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut m = format!(
            "Received: from client{seed}.example.org{eol}Message-ID: <{seed}.bench@example.org>{eol}\
             From: sender{seed}@example.org{eol}To: team@example.net{eol}Subject: report {seed}{eol}{eol}"
        )
        .into_bytes();
        let line = format!("Quarterly numbers and the usual attachments follow, id {seed}.{eol}");
        while m.len() < len {
            m.extend_from_slice(line.as_bytes());
        }
        m.truncate(len);
        m
    }

    fn ip(net: u8, i: u64) -> [u8; 4] {
        [net, (i >> 16) as u8, (i >> 8) as u8, i as u8]
    }

    fn bulk(rng: &mut Rng, out: &mut Vec<Packet>, i: u64, ts: u64) {
        let mut c = Conn::new(
            rng,
            (ip(10, 0x1000 + i), 40_000 + i as u16),
            ([198, 51, 100, 80], 80),
            ts,
        );
        c.handshake(out);
        c.send(out, CLIENT, b"GET /files/archive.tar HTTP/1.1\r\nHost: downloads.example.com\r\nAccept: */*\r\n\r\n");
        let body_len = 1_500_000 + rng.below(200_000) as usize;
        let mut body =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\n\r\n").into_bytes();
        body.extend((0..body_len).map(|k| (k as u64 ^ i).wrapping_mul(2_654_435_761) as u8));
        c.send(out, SERVER, &body);
        c.close(out, SERVER);
    }

    fn short(rng: &mut Rng, out: &mut Vec<Packet>, i: u64, ts: u64) {
        let port = [80, 8080, 443][i as usize % 3];
        let mut c = Conn::new(
            rng,
            (ip(10, 0x2_0000 + i), 32_768 + (i % 28_000) as u16),
            ([203, 0, 113, (i % 64) as u8 + 1], port),
            ts,
        );
        c.handshake(out);
        c.send(
            out,
            CLIENT,
            b"GET / HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: probe/1.0\r\n\r\n",
        );
        c.send(
            out,
            SERVER,
            b"HTTP/1.1 204 No Content\r\nServer: nginx\r\n\r\n",
        );
        c.close(out, CLIENT);
    }

    /// One QMTP session: 1-3 packages (4 KiB or 64 KiB, 1-5 recipients),
    /// pipelined or one at a time, one reply per recipient; client closes.
    fn qmtp(rng: &mut Rng, out: &mut Vec<Packet>, i: u64, ts: u64, mix: &mut Mix) {
        // Every fifth server listens on a non-standard port.
        let port = if i % 5 == 4 { 10_209 } else { 209 };
        let server = ([192, 0, 2, 25 + (i % 4) as u8], port);
        let mut c = Conn::new(rng, (ip(172, 0x10_0000 + i), 50_000 + i as u16), server, ts);
        c.handshake(out);
        let packages = 1 + rng.below(3);
        let pipelined = i % 2 == 0;
        let mut pending_replies = Vec::new();
        for p in 0..packages {
            let crlf = rng.below(2) == 0;
            let len = if rng.below(4) == 0 {
                64 * 1024
            } else {
                4 * 1024
            };
            let mut msg = vec![if crlf { b'\r' } else { b'\n' }];
            msg.extend(message(len, crlf, i * 10 + p));
            let mut pkg = ns(&msg);
            pkg.extend(ns(format!("sender{i}@example.org").as_bytes()));
            let rcpts = 1 + rng.below(5);
            let mut list = Vec::new();
            for r in 0..rcpts {
                let foreign = r == 4;
                let domain = if foreign {
                    "example.com"
                } else {
                    "example.net"
                };
                list.extend(ns(format!("user{r}@{domain}").as_bytes()));
                let reply = if foreign {
                    "Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)".to_string()
                } else {
                    format!("Kok {} qp {}", 1_795_238_274 + i, 15_000 + r)
                };
                pending_replies.extend(ns(reply.as_bytes()));
            }
            pkg.extend(ns(&list));
            c.send(out, CLIENT, &pkg);
            mix.qmtp_packages += 1;
            if !pipelined {
                c.send(out, SERVER, &std::mem::take(&mut pending_replies));
            }
        }
        if pipelined {
            c.send(out, SERVER, &pending_replies);
        }
        c.close(out, CLIENT);
        mix.qmtp_sessions += 1;
    }

    /// One QMQP session: one message, one reply; the server closes first.
    fn qmqp(rng: &mut Rng, out: &mut Vec<Packet>, i: u64, ts: u64, mix: &mut Mix) {
        let mut c = Conn::new(
            rng,
            (ip(172, 0x20_0000 + i), 51_000 + i as u16),
            ([192, 0, 2, 53], 628),
            ts,
        );
        c.handshake(out);
        let len = if i % 4 == 3 { 64 * 1024 } else { 4 * 1024 };
        let mut inner = ns(&message(len, false, 1_000 + i));
        inner.extend(ns(format!("cron@node{i}.example.org").as_bytes()));
        for r in 0..1 + rng.below(3) {
            inner.extend(ns(format!("ops{r}@example.net").as_bytes()));
        }
        c.send(out, CLIENT, &ns(&inner));
        c.send(
            out,
            SERVER,
            &ns(format!("Kok {} qp {}", 1_795_300_000 + i, 20_000 + i).as_bytes()),
        );
        c.close(out, SERVER);
        mix.qmqp_messages += 1;
    }

    /// Writes the capture to `path`; returns what it holds.
    pub fn write_capture(path: &std::path::Path) -> std::io::Result<Mix> {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut mix = Mix::default();
        let mut packets = Vec::new();
        // Connections start over 20 s of packet time and overlap.
        let start = |rng: &mut Rng| 1_700_000_000_000_000_000 + rng.below(20_000_000_000);
        for i in 0..16 {
            let ts = start(&mut rng);
            bulk(&mut rng, &mut packets, i, ts);
            mix.bulk_flows += 1;
        }
        for i in 0..4000 {
            let ts = start(&mut rng);
            short(&mut rng, &mut packets, i, ts);
            mix.short_flows += 1;
        }
        for i in 0..40 {
            let ts = start(&mut rng);
            qmtp(&mut rng, &mut packets, i, ts, &mut mix);
        }
        for i in 0..40 {
            let ts = start(&mut rng);
            qmqp(&mut rng, &mut packets, i, ts, &mut mix);
        }
        packets.sort_by_key(|p| p.ts_ns);
        mix.packets = packets.len() as u64;

        let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
        use std::io::Write;
        // Classic pcap header: magic, v2.4, thiszone, sigfigs, snaplen, Ethernet.
        w.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        w.write_all(&2u16.to_le_bytes())?;
        w.write_all(&4u16.to_le_bytes())?;
        w.write_all(&0i32.to_le_bytes())?;
        w.write_all(&0u32.to_le_bytes())?;
        w.write_all(&65_535u32.to_le_bytes())?;
        w.write_all(&1u32.to_le_bytes())?;
        for p in &packets {
            let len = p.frame.len() as u32;
            w.write_all(&((p.ts_ns / 1_000_000_000) as u32).to_le_bytes())?;
            w.write_all(&((p.ts_ns % 1_000_000_000 / 1_000) as u32).to_le_bytes())?;
            w.write_all(&len.to_le_bytes())?;
            w.write_all(&len.to_le_bytes())?;
            w.write_all(&p.frame)?;
        }
        w.flush()?;
        Ok(mix)
    }
}

fn run(capture: &Path, events: &Path, workers: usize) -> ReplayReport {
    let cfg = ReplayConfig {
        files: vec![capture.to_string_lossy().into_owned()],
        workers,
        output: Output::File(events.to_path_buf()),
        progress: false,
        flow: FlowConfig::default(),
        block_size: 1 << 20,
        policy: Arc::new(Policy::default()),
        alert_window_ns: None,
    };
    let report = replay(cfg, Arc::new(AtomicBool::new(false))).expect("replay");
    assert!(
        report.errors.is_empty(),
        "replay errors: {:?}",
        report.errors
    );
    report
}

fn bench_replay(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let capture = dir.path().join("mix.pcap");
    let events = dir.path().join("events.jsonl");
    let mix = gen::write_capture(&capture).expect("write capture");
    let file_bytes = std::fs::metadata(&capture).expect("capture size").len();
    assert!(file_bytes > 1 << 20);

    // Once, before measuring: check the replay and print wire-rate figures.
    for workers in [1, 2] {
        let r = run(&capture, &events, workers);
        let secs = r.wall.as_secs_f64();
        eprintln!(
            "replay {workers} worker(s): {} packets, {} wire bytes ({file_bytes} file bytes) in {:.3} s: \
             {:.3} Gbit/s, {:.0} packets/s; {} transactions, flows {} (candidates {}, rejected {})",
            r.decode.frames,
            r.decode.bytes,
            secs,
            r.decode.bytes as f64 * 8.0 / secs / 1e9,
            r.decode.frames as f64 / secs,
            r.detect.transactions,
            r.flows.flows_created,
            r.flows.flows_candidate,
            r.flows.flows_rejected,
        );
        assert_eq!(r.decode.frames, mix.packets);
        assert_eq!(r.decode.tcp_segments, mix.packets);
        assert_eq!(
            r.detect.transactions,
            mix.qmtp_packages + mix.qmqp_messages,
            "{mix:?}"
        );
        assert_eq!(
            r.flows.flows_created,
            mix.bulk_flows + mix.short_flows + mix.qmtp_sessions + mix.qmqp_messages
        );
    }

    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(file_bytes));
    for workers in [1, 2] {
        group.bench_function(BenchmarkId::new("workers", workers), |b| {
            b.iter(|| black_box(run(&capture, &events, workers).decode.frames))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_replay);
criterion_main!(benches);
