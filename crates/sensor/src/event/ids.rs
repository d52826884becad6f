//! Stable event ids (`event.id`).
//!
//! Owns: the first 128 bits of SHA-1 over length-prefixed parts that name
//! a finding — dataset, flow (Community ID), packet time and what tells
//! findings of one flow and time apart — so the same finding in the same
//! capture has the same id in every replay.
//!
//! Must not: take the time of the run or anything scheduling decides.

use sha1::{Digest, Sha1};

/// A stable event id: the first 128 bits of SHA-1 over the parts (each
/// length-prefixed), in hex. The parts name the finding, never the time of
/// the run, so the same finding in the same capture has the same id.
pub fn stable_id(parts: &[&str]) -> String {
    let mut h = Sha1::new();
    for p in parts {
        id_part(&mut h, p);
    }
    id_hex(h)
}

/// Feeds one length-prefixed part of a stable id.
fn id_part(h: &mut Sha1, p: &str) {
    h.update((p.len() as u64).to_be_bytes());
    h.update(p.as_bytes());
}

/// The first 128 bits of the digest, in lower-case hex.
fn id_hex(h: Sha1) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = h.finalize();
    let mut s = String::with_capacity(32);
    for &b in d.iter().take(16) {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

/// The id of a finding about one flow: dataset, the flow's Community ID,
/// packet time (ns) and what distinguishes findings of the same flow and
/// time.
pub(super) fn flow_id(dataset: &str, cid: &str, ts: u64, rest: &[&str]) -> String {
    let mut h = Sha1::new();
    id_part(&mut h, dataset);
    id_part(&mut h, cid);
    let mut digits = [0u8; 20];
    id_part(&mut h, decimal(ts, &mut digits));
    for p in rest {
        id_part(&mut h, p);
    }
    id_hex(h)
}

/// `n` in decimal, written into `buf` (as `n.to_string()` would).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_writes_what_to_string_does() {
        for ns in [0, 1, 999, 1_795_238_274_123_456_789, u64::MAX] {
            let mut d = [0u8; 20];
            assert_eq!(decimal(ns, &mut d), ns.to_string());
        }
    }

    /// Ids computed outside the project (Python hashlib): SHA-1 over
    /// 8-byte big-endian lengths and the parts, first 16 bytes in hex.
    #[test]
    fn ids_match_an_independent_computation() {
        assert_eq!(stable_id(&[]), "da39a3ee5e6b4b0d3255bfef95601890");
        // The length prefix keeps the parts apart.
        assert_eq!(stable_id(&["a", "bc"]), "ae9d42cc36ff72230d3027a273873081");
        assert_eq!(stable_id(&["ab", "c"]), "c27d1f025accf1fdcc822aaa1a6cca5e");
        assert_eq!(
            stable_id(&["qmwatch.relay", "aggregate", "", "3", "60", "open_relay"]),
            "c9069f99cb3e3feffe984a7be2fc1019"
        );
        let cid = "1:hSSxeEyfVOrgTHOSu2dBbsrs900=";
        let ds = "qmwatch.transaction";
        assert_eq!(
            flow_id(ds, cid, 1_795_000_000_123_456_789, &["1"]),
            "2750ca611e097885d58996be34ef4734"
        );
        assert_eq!(
            flow_id(ds, cid, 0, &["1"]),
            "1efdb95693500591ec55358b39afe0c4"
        );
    }
}
