//! cargo-fuzz target `suricata_flow`: the functions behind the Suricata
//! plugin's FFI entry points (crates/suricata-core), fed the
//! `protocol_chunks` input format and seeds:
//! `[opts][parser][k][schedule: k bytes][client_len u16 LE][client][server]`.
//!
//! The schedule cuts and interleaves the two streams (each schedule byte:
//! bit 7 the direction, bit 6 a gap instead of data, bit 5 an end of
//! direction after it, bits 0-4 the length - 1); `opts` picks the protocol
//! the flow was detected as and the server port. Checks: nothing panics —
//! probe, data, gap, end, finish, every transaction's buffers and EVE
//! record, and the event ids of its anomalies.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;
use qmwatch_suricata_core::eve::{log, StringWriter};
use qmwatch_suricata_core::{events, probe, FlowState, Protocol};

fuzz_target!(|data: &[u8]| {
    let harness::ChunksInput {
        opts,
        schedule,
        client,
        server,
        ..
    } = harness::chunks_input(data);
    let streams = [client, server];
    let protocol = if opts & 1 == 0 {
        Protocol::Qmtp
    } else {
        Protocol::Qmqp
    };
    let dp = [209u16, 628, 2209, 6628][usize::from(opts >> 1 & 3)];
    let _ = (probe(client, true, dp), probe(server, false, dp));
    let mut f = FlowState::new(protocol, 40000, dp);
    let mut pos = [0usize; 2];
    let mut steps = schedule.iter().copied().chain(std::iter::repeat(0x1f));
    while pos[0] < client.len() || pos[1] < server.len() {
        let s = steps.next().unwrap_or(0x1f);
        let mut dir = usize::from(s >> 7);
        if pos[dir] >= streams[dir].len() {
            dir = 1 - dir;
        }
        let n = (usize::from(s & 0x1f) + 1).min(streams[dir].len() - pos[dir]);
        // As the plugin does: Suricata's offset of the chunk first (ahead
        // of what was given when the schedule says so), then how much may
        // wait.
        let ahead = if s & 0x60 == 0x60 { n as u64 } else { 0 };
        f.catch_up(dir, pos[dir] as u64 + ahead, 1);
        let _ = f.body_ahead(dir);
        if s & 0x40 != 0 {
            f.gap(dir, n as u64, 1);
        } else {
            f.data(dir, &streams[dir][pos[dir]..pos[dir] + n], 1);
        }
        pos[dir] += n;
        if s & 0x20 != 0 && opts & 0x10 != 0 {
            f.eof(dir, 2);
        }
    }
    if opts & 0x20 == 0 {
        f.eof(0, 3);
        f.eof(1, 3);
    } else {
        f.finish(3);
    }
    for id in 0..f.tx_count() {
        if let Some(tx) = f.tx(id) {
            let _ = (tx.sender(), tx.message_start());
            for i in 0..4 {
                let _ = (
                    tx.rcpt(i),
                    tx.reply_code(i),
                    tx.reply_text(i),
                    tx.rcpt_reply(i),
                    tx.anomaly(i),
                );
            }
            let mut w = StringWriter::new();
            let _ = log(tx, &mut w);
            for (kind, _) in &tx.anomalies {
                assert_eq!(events::kind(events::id(*kind)), Some(*kind));
            }
        }
    }
});
