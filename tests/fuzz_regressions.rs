//! Replays the fuzzers' saved inputs: every file under `fuzz/regressions/`
//! (a crash or hang found by `fuzz/run.sh`, minimised) goes through the
//! code path of every fuzz target, with the targets' own checks: the
//! harnesses in `fuzz/harness.rs` are compiled into this test as they are.
//! A file in `fuzz/regressions/TARGET/` is the input that broke TARGET; it is
//! fed to the other targets too, since each must accept any input.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

type Harness = fn(&[u8]);

const TARGETS: [(&str, Harness); 5] = [
    ("decode_frame", harness::decode_frame),
    ("capture_reader", harness::capture_reader),
    ("protocol_chunks", harness::protocol_chunks),
    ("reassembly_model", harness::reassembly_model),
    ("flow_table", harness::flow_table),
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let path = e.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.file_name().is_some_and(|n| n != "README.md") {
            out.push(path);
        }
    }
}

fn regressions() -> Vec<PathBuf> {
    let mut v = Vec::new();
    files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions"),
        &mut v,
    );
    v.sort();
    v
}

fn replay(path: &Path, name: &str, target: Harness) {
    let data = std::fs::read(path).unwrap();
    let result = std::panic::catch_unwind(|| target(&data));
    assert!(
        result.is_ok(),
        "{} fails the {name} target (replay: cd fuzz && cargo fuzz run {name} {})",
        path.display(),
        path.display()
    );
}

#[test]
fn saved_inputs_pass_every_target() {
    for path in regressions() {
        for (name, target) in TARGETS {
            replay(&path, name, target);
        }
    }
}

/// reassembly_model, `fuzz/regressions/reassembly_model/cap-gap-over-bytes-in-hand`:
/// when a cap refused an out-of-order segment lying *before* data already
/// held, the reassembler flushed everything held (declaring the holes
/// gaps) and so declared the refused segment's own bytes, which it had in
/// hand, a gap: they were never delivered.
#[test]
fn cap_hit_never_declares_bytes_in_hand_a_gap() {
    use qmwatch_sensor::flow::reassembly::{
        Budget, Delivery, ReassemblyConfig, Stream, StreamEvents, StreamSegment, PIECE_COST,
    };

    let cfg = ReassemblyConfig {
        max_held_bytes: 1024,
        max_held_pieces: 2,
        recent_window: 16,
        max_ahead: 64 << 20,
    };
    // The worker's budget: room for one 30-byte piece (charged with its
    // cost) beside the 32 bytes held by other flows, not for two.
    let mut budget = Budget::new(32 + 30 + PIECE_COST + 10);
    budget.held = 32;
    let mut ev = StreamEvents::default();
    let mut st = Stream::default();
    let mut got: Vec<(u64, Option<Vec<u8>>, u64)> = Vec::new();
    let mut deliver = |d: Delivery<'_>| match d {
        Delivery::Data { offset, bytes } => {
            got.push((offset, Some(bytes.to_vec()), bytes.len() as u64))
        }
        Delivery::Gap { offset, len } => got.push((offset, None, len)),
        Delivery::Skip { .. } => panic!("no skip range was set"),
    };
    let isn = 1000u32;
    let data = |from: u32, n: u32| (from..from + n).map(|i| i as u8).collect::<Vec<u8>>();
    st.segment(
        StreamSegment {
            seq: isn,
            syn: true,
            fin: false,
            payload: &[],
            missing: 0,
        },
        &cfg,
        &mut budget,
        &mut ev,
        &mut deliver,
    );
    // Stream offsets 101..131: held (30 bytes and the piece's cost).
    let later = data(101, 30);
    st.segment(
        StreamSegment::data(isn + 1 + 101, &later),
        &cfg,
        &mut budget,
        &mut ev,
        &mut deliver,
    );
    // Offsets 51..81: the budget cannot take 30 more bytes.
    let earlier = data(51, 30);
    st.segment(
        StreamSegment::data(isn + 1 + 51, &earlier),
        &cfg,
        &mut budget,
        &mut ev,
        &mut deliver,
    );
    assert_eq!(ev.cap_gaps, 1);
    // The hole before 51 is a gap; 51..81 and 101..131 are data.
    let mut next = 0;
    for (offset, bytes, len) in &got {
        assert_eq!(*offset, next);
        match bytes {
            Some(b) => assert_eq!(b, &data(*offset as u32, *len as u32)),
            None => assert!(
                *offset + len <= 51 || *offset >= 81,
                "received bytes 51..81 declared a gap: {got:?}"
            ),
        }
        next += len;
    }
    assert!(got
        .iter()
        .any(|(o, b, _)| *o == 51 && b.as_deref() == Some(&earlier[..])));
}

/// The harnesses themselves accept empty and tiny inputs (so the test
/// above is meaningful even when no input is saved yet).
#[test]
fn harnesses_accept_trivial_inputs() {
    for (_, target) in TARGETS {
        for input in [
            &b""[..],
            b"\x00",
            b"\xff\xff\xff\xff",
            b"\x80\x01\x00\x00\x00",
        ] {
            target(input);
        }
    }
}

/// `flow_table`'s op: `kind` (connection, direction, flags), payload
/// length, sequence selector, extra (time step 1 ms unless given).
fn op(kind: u8, len: u8, seqsel: u8, extra: u8) -> [u8; 4] {
    [kind, len, seqsel, extra]
}

/// A whole QMTP conversation on `flow_table`'s first connection, with
/// `request` as the client's request op: handshake, the request, the two
/// replies, FINs both ways. Caps roomy, checksums `Auto`.
fn flow_conversation(request: &[[u8; 4]]) -> Vec<u8> {
    let mut ops = vec![0x3f, 7];
    ops.extend(op(0x20, 0, 0, 1)); // SYN
    ops.extend(op(0x38, 0, 0, 1)); // SYN-ACK
    ops.extend(op(0x00, 0, 0, 1)); // ACK
    for r in request {
        ops.extend(r);
    }
    ops.extend(op(0x18, 37, 0, 1)); // K and Z replies
    ops.extend(op(0x40, 0, 0, 1)); // client FIN
    ops.extend(op(0x48, 0, 0, 1)); // server FIN
    ops.extend(op(0x00, 0, 0, 1)); // last ACK
    ops
}

/// The relay verdicts of the transactions among `records`: (K, Z, D).
fn verdicts(records: &[qmwatch_proto::Record]) -> Vec<(u64, u64, u64)> {
    records
        .iter()
        .filter_map(|r| match r {
            qmwatch_proto::Record::Transaction(t) => Some((t.codes.k, t.codes.z, t.codes.d)),
            _ => None,
        })
        .collect()
}

/// The `flow_table` harness plays real conversations: its scripts are
/// well-formed QMTP, so the fuzzer starts from inputs that reach sessions,
/// transactions and verdicts, not only the table's bookkeeping.
#[test]
fn flow_table_harness_reaches_sessions() {
    // The 71-byte package in one segment.
    let whole = harness::flow_table_records(&flow_conversation(&[op(0x10, 71, 0, 1)]));
    assert_eq!(verdicts(&whole), vec![(1, 1, 0)], "{whole:?}");
    // In pieces: bytes 0..20, 47..67 ahead of the stream (held), 20..47,
    // then 47..71 over the held piece.
    let pieces = harness::flow_table_records(&flow_conversation(&[
        op(0x10, 20, 0, 1),
        op(0x10, 20, 3, 1),
        op(0x10, 27, 0, 1),
        op(0x10, 24, 0, 1),
    ]));
    assert_eq!(verdicts(&pieces), vec![(1, 1, 0)], "{pieces:?}");
    // With an urgent byte in front (the pointer is 1): taken out, as the
    // server reads it, so the package is still seen.
    let urgent = harness::flow_table_records(&flow_conversation(&[
        op(0x70, 1, 0, 0x41),
        op(0x10, 71, 0, 1),
    ]));
    assert!(!verdicts(&urgent).is_empty(), "{urgent:?}");
    // A package whose answer and end were never seen, then a new
    // connection on the four-tuple (op 0xf8) with a whole conversation:
    // the new one is read beside the old, whose package is reported
    // unanswered.
    let mut reuse = flow_conversation(&[op(0x10, 71, 0, 1)]);
    reuse.truncate(2 + 4 * 4);
    reuse.extend(op(0xf8, 9, 0, 1));
    reuse.extend(&flow_conversation(&[op(0x10, 71, 0, 1)])[2..]);
    let reuse = harness::flow_table_records(&reuse);
    assert_eq!(verdicts(&reuse), vec![(1, 1, 0), (0, 0, 0)], "{reuse:?}");
}
