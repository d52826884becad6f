//! The EVE record of a transaction (`"event_type": "qmtp"` / `"qmqp"`).
//!
//! Owns: the field names and layout (documented in docs/suricata.md),
//! written through [`EveWriter`] so that the plugin writes into Suricata's
//! JSON builder and tests into a string, with the same code.
//!
//! Must not: escape JSON itself when writing to Suricata (its builder
//! does), or log message bodies (only the envelope, replies and sizes).

use crate::tx::Tx;

/// The few JSON-builder operations the record needs. Each returns `false`
/// when the builder refused (the record is then abandoned).
pub trait EveWriter {
    fn open_object(&mut self, key: &str) -> bool;
    fn open_array(&mut self, key: &str) -> bool;
    /// An object inside an array.
    fn start_object(&mut self) -> bool;
    fn close(&mut self) -> bool;
    fn set_bytes(&mut self, key: &str, val: &[u8]) -> bool;
    fn set_str(&mut self, key: &str, val: &str) -> bool;
    fn set_uint(&mut self, key: &str, val: u64) -> bool;
    fn set_bool(&mut self, key: &str, val: bool) -> bool;
    fn append_bytes(&mut self, val: &[u8]) -> bool;
}

fn code_str(c: Option<u8>) -> &'static str {
    match c {
        Some(b'K') => "K",
        Some(b'Z') => "Z",
        Some(b'D') => "D",
        _ => "",
    }
}

/// Writes the `qmtp` / `qmqp` object of `tx`.
pub fn log<W: EveWriter>(tx: &Tx, w: &mut W) -> bool {
    write(tx, tx.protocol.name(), w).is_some()
}

/// Writes `tx` under `key`, the flow's protocol (the record's
/// `event_type`); a transaction of the other protocol (a QMQP message to a
/// QMTP server) says so in `protocol`.
pub fn log_as<W: EveWriter>(tx: &Tx, key: &str, w: &mut W) -> bool {
    write(tx, key, w).is_some()
}

fn ok(b: bool) -> Option<()> {
    b.then_some(())
}

fn write<W: EveWriter>(tx: &Tx, key: &str, w: &mut W) -> Option<()> {
    ok(w.open_object(key))?;
    if key != tx.protocol.name() {
        ok(w.set_str("protocol", tx.protocol.name()))?;
    }
    match &tx.body {
        Some(b) => {
            ok(w.set_str("record", "transaction"))?;
            ok(w.set_uint("index", u64::from(b.index)))?;
            if let Some(from) = &b.from {
                ok(w.set_bytes("from", from))?;
                ok(w.set_bool("bounce", from.is_empty()))?;
            }
            if b.request {
                ok(w.open_array("to"))?;
                for r in &b.recipients {
                    ok(w.append_bytes(&r.address))?;
                }
                ok(w.close())?;
            }
            ok(w.open_array("replies"))?;
            for r in &b.recipients {
                ok(w.start_object())?;
                ok(w.set_bytes("recipient", &r.address))?;
                if r.code.is_some() {
                    ok(w.set_str("code", code_str(r.code)))?;
                    ok(w.set_bytes("text", &r.text))?;
                }
                ok(w.close())?;
            }
            ok(w.close())?;
            if let Some(r) = &b.reply {
                ok(w.open_object("reply"))?;
                ok(w.set_str("code", code_str(Some(r.code))))?;
                ok(w.set_bytes("text", &r.text))?;
                ok(w.close())?;
            }
            ok(w.set_bool("complete", b.complete))?;
            ok(w.set_str("request_state", &b.request_state))?;
            if b.request {
                ok(w.set_uint("message_bytes", b.message_bytes))?;
                if b.message_gap_bytes > 0 {
                    ok(w.set_uint("message_gap_bytes", b.message_gap_bytes))?;
                }
                if let Some(e) = b.encoding {
                    ok(w.set_str("encoding", e))?;
                }
                ok(w.set_uint("recipient_count", b.recipient_count))?;
            }
            ok(w.open_object("codes"))?;
            for (k, v) in ["K", "Z", "D", "missing"].iter().zip(b.codes) {
                ok(w.set_uint(k, v))?;
            }
            ok(w.close())?;
            ok(w.set_bool("session_confirmed", b.session_confirmed))?;
        }
        None => ok(w.set_str("record", "anomaly"))?,
    }
    if !tx.anomalies.is_empty() {
        ok(w.open_array("anomalies"))?;
        for (kind, detail) in &tx.anomalies {
            ok(w.start_object())?;
            ok(w.set_str("kind", kind.name()))?;
            ok(w.set_str("detail", detail))?;
            ok(w.close())?;
        }
        ok(w.close())?;
    }
    ok(w.close())
}

/// An [`EveWriter`] into a JSON string, for tests and tools.
#[derive(Debug, Default)]
pub struct StringWriter {
    pub out: String,
    /// Per open container: is it an array, and has it a member yet.
    stack: Vec<(bool, bool)>,
}

impl StringWriter {
    pub fn new() -> Self {
        let mut w = StringWriter::default();
        w.out.push('{');
        w.stack.push((false, false));
        w
    }

    /// The finished object.
    pub fn finish(mut self) -> String {
        while self.close() {}
        self.out
    }

    fn sep(&mut self) {
        if let Some(top) = self.stack.last_mut() {
            if top.1 {
                self.out.push(',');
            }
            top.1 = true;
        }
    }

    fn key(&mut self, key: &str) {
        self.sep();
        push_json_str(&mut self.out, key.as_bytes());
        self.out.push(':');
    }
}

fn push_json_str(out: &mut String, b: &[u8]) {
    out.push('"');
    for c in String::from_utf8_lossy(b).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

impl EveWriter for StringWriter {
    fn open_object(&mut self, key: &str) -> bool {
        self.key(key);
        self.out.push('{');
        self.stack.push((false, false));
        true
    }
    fn open_array(&mut self, key: &str) -> bool {
        self.key(key);
        self.out.push('[');
        self.stack.push((true, false));
        true
    }
    fn start_object(&mut self) -> bool {
        self.sep();
        self.out.push('{');
        self.stack.push((false, false));
        true
    }
    fn close(&mut self) -> bool {
        match self.stack.pop() {
            Some((true, _)) => self.out.push(']'),
            Some((false, _)) => self.out.push('}'),
            None => return false,
        }
        true
    }
    fn set_bytes(&mut self, key: &str, val: &[u8]) -> bool {
        self.key(key);
        push_json_str(&mut self.out, val);
        true
    }
    fn set_str(&mut self, key: &str, val: &str) -> bool {
        self.set_bytes(key, val.as_bytes())
    }
    fn set_uint(&mut self, key: &str, val: u64) -> bool {
        self.key(key);
        self.out.push_str(&val.to_string());
        true
    }
    fn set_bool(&mut self, key: &str, val: bool) -> bool {
        self.key(key);
        self.out.push_str(if val { "true" } else { "false" });
        true
    }
    fn append_bytes(&mut self, val: &[u8]) -> bool {
        self.sep();
        push_json_str(&mut self.out, val);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{FlowState, TO_CLIENT, TO_SERVER};
    use qmwatch_proto::Protocol;

    fn ns(b: &[u8]) -> Vec<u8> {
        let mut v = format!("{}:", b.len()).into_bytes();
        v.extend_from_slice(b);
        v.push(b',');
        v
    }

    #[test]
    fn a_qmqp_record() {
        let mut inner = ns(b"Subject: hi\n");
        inner.extend(ns(b"bob@example.net"));
        inner.extend(ns(b"x@y"));
        let mut f2 = FlowState::new(Protocol::Qmqp, 40000, 628);
        f2.data(TO_SERVER, &ns(&inner), 1);
        f2.data(TO_CLIENT, &ns(b"Kqueued"), 2);
        let t = f2.tx(0).expect("a transaction");
        let mut w = StringWriter::new();
        assert!(log(t, &mut w));
        let s = w.finish();
        assert!(
            s.starts_with("{\"qmqp\":{\"record\":\"transaction\""),
            "{s}"
        );
        assert!(s.contains("\"from\":\"bob@example.net\""), "{s}");
        assert!(s.contains("\"to\":[\"x@y\"]"), "{s}");
        assert!(
            s.contains("\"replies\":[{\"recipient\":\"x@y\",\"code\":\"K\",\"text\":\"queued\"}]"),
            "{s}"
        );
        assert!(
            s.contains("\"reply\":{\"code\":\"K\",\"text\":\"queued\"}"),
            "{s}"
        );
        assert!(s.contains("\"complete\":true"), "{s}");
    }
}
