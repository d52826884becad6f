//! One JSON line per event, ASCII only.
//!
//! Owns: the one writer every event goes through — a compact JSON
//! serializer for every dataset's typed record (and the JSON objects tests
//! compare them with) — and its pool of line buffers. It writes the
//! bytes serde_json's compact serializer writes, except that anything
//! outside printable ASCII in a string is a `\u` escape; the tests hold it
//! to serde_json with such a formatter. It is its own serializer because
//! serde_json looks at every byte of a string twice through a table and a
//! formatter call (about two thirds of the cost of writing an event); this
//! one checks eight bytes at a time and copies each clean run once.
//!
//! Must not: reorder or rename fields (typed records declare them in the
//! sorted order a JSON object has) or add a newline (the sinks frame lines).

use std::sync::OnceLock;

use crossbeam_channel::{Receiver, Sender};
use serde::ser::{self, Impossible, Serialize};
use serde_json::ser::{CompactFormatter, Formatter};

/// Serializes an event as one JSON line (no newline), ASCII only: anything
/// outside printable ASCII in a string is a `\u` escape, so every transport
/// (syslog included) carries it unchanged.
pub(super) fn line<T: Serialize + ?Sized>(e: &T) -> Option<String> {
    let mut b = spares().take();
    e.serialize(&mut Writer(&mut b)).ok()?;
    String::from_utf8(b).ok()
}

/// Line buffers kept for the next lines, at most. Lines are made in the
/// detect thread and freed in an output thread; each fresh one, a
/// kilobyte or two, was a large allocation, and glibc's malloc tidies its
/// lists of small free chunks at every large request. Some tens of lines
/// are in flight (70 at most in a replay of dense QMTP), more when an
/// output falls behind (the extra buffers are freed). At most 2 MiB is
/// kept.
const SPARE_LINES: usize = 128;
/// A buffer that grew past this (a rare large event) is freed, not kept.
const SPARE_LINE_MAX: usize = 16 << 10;
/// A new buffer's room: below glibc's large requests (1,024 bytes with
/// the chunk's header).
const LINE_START: usize = 1000;

/// Buffers of lines that have been written, for the lines to come.
struct Spares {
    keep: Sender<Vec<u8>>,
    take: Receiver<Vec<u8>>,
}

impl Spares {
    fn new(n: usize) -> Spares {
        let (keep, take) = crossbeam_channel::bounded(n);
        Spares { keep, take }
    }

    /// An empty buffer: a kept one, else a new one.
    fn take(&self) -> Vec<u8> {
        let mut b = self
            .take
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(LINE_START));
        b.clear();
        b
    }

    fn keep(&self, b: Vec<u8>) {
        if (1..=SPARE_LINE_MAX).contains(&b.capacity()) {
            // Full: enough are kept; this one is freed.
            let _ = self.keep.try_send(b);
        }
    }
}

fn spares() -> &'static Spares {
    static SPARES: OnceLock<Spares> = OnceLock::new();
    SPARES.get_or_init(|| Spares::new(SPARE_LINES))
}

/// Keeps the buffer of a line that has been written, for a later line.
pub(crate) fn give_back(line: String) {
    spares().keep(line.into_bytes());
}

type Error = serde_json::Error;

fn error(msg: &str) -> Error {
    ser::Error::custom(msg)
}

/// The serializer: appends compact JSON to a buffer. Writing to a `Vec`
/// cannot fail; only shapes JSON has no form for here (enum variants with
/// fields, map keys that are not strings) are errors.
struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    /// Numbers as serde_json writes them (its own formatter, so the digits
    /// of floats are the same).
    fn number(&mut self, f: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> Result<(), Error> {
        f(self.0).map_err(ser::Error::custom)
    }
}

/// Whether a byte must be escaped: `"`, `\`, control bytes, DEL and every
/// byte of a non-ASCII character.
const fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b >= 0x7f
}

/// [`needs_escape`] of every byte: one load a byte where eight-byte chunks
/// do not fit (most keys and many values are shorter than eight bytes).
static ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < t.len() {
        t[i] = needs_escape(i as u8);
        i += 1;
    }
    t
};

/// Whether any of eight bytes (little-endian in `x`) must be escaped. The
/// classic "has a zero byte" test: `x - 0x01…` borrows into a byte's top bit
/// only where that byte is below the subtrahend (exact for whether any is).
fn chunk_needs_escape(x: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const TOPS: u64 = ONES * 0x80;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & TOPS;
    let equal = |x: u64, b: u8| below(x ^ (ONES * u64::from(b)), 1);
    (x & TOPS) | below(x, 0x20) | equal(x, b'"') | equal(x, b'\\') | equal(x, 0x7f) != 0
}

/// How many leading bytes of `b` need no escape.
fn clean_prefix(b: &[u8]) -> usize {
    let mut n = 0;
    for chunk in b.chunks_exact(8) {
        let Ok(a) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        if chunk_needs_escape(u64::from_le_bytes(a)) {
            break;
        }
        n += 8;
    }
    let rest = b.get(n..).unwrap_or_default();
    n + rest
        .iter()
        .position(|&c| ESCAPE[usize::from(c)])
        .unwrap_or(rest.len())
}

/// Appends `s` as a JSON string: `"` `\` and control characters in JSON's
/// short forms where it has them, other control characters, DEL and
/// non-ASCII as `\u` escapes of their UTF-16 units (lower-case hex, a
/// surrogate pair beyond the BMP).
fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    // Clean bytes are ASCII, so the clean run ends on a character boundary.
    match s.split_at_checked(clean_prefix(s.as_bytes())) {
        Some((run, rest)) if !rest.is_empty() => {
            out.extend_from_slice(run.as_bytes());
            write_escaped(out, rest);
        }
        _ => out.extend_from_slice(s.as_bytes()),
    }
    out.push(b'"');
}

/// A struct field's key with its separators: `,` (after the first field),
/// the quoted key, `:`. Field names are the program's own constants (the
/// records' declarations; nothing from the network reaches them) and need
/// no escape, so they are copied as they are: through [`write_str`] (a
/// scan, two quotes, a copy, the colon, each with its own capacity check)
/// they took a fifth of the time a line takes. Debug builds (the tests)
/// check that each name is clean.
fn write_key(out: &mut Vec<u8>, comma: bool, key: &'static str) {
    debug_assert_eq!(
        clean_prefix(key.as_bytes()),
        key.len(),
        "field name {key:?} needs an escape"
    );
    out.reserve(key.len() + 4);
    if comma {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// The rest of a string from its first byte to escape on: each clean run
/// copied, each character between them escaped.
#[cold]
fn write_escaped(out: &mut Vec<u8>, mut s: &str) {
    loop {
        let mut chars = s.chars();
        let Some(c) = chars.next() else { break };
        escape(out, c);
        s = chars.as_str();
        let (run, rest) = s
            .split_at_checked(clean_prefix(s.as_bytes()))
            .unwrap_or((s, ""));
        out.extend_from_slice(run.as_bytes());
        s = rest;
    }
}

fn escape(out: &mut Vec<u8>, c: char) {
    let short = match c {
        '"' => b'"',
        '\\' => b'\\',
        '\x08' => b'b',
        '\x0c' => b'f',
        '\n' => b'n',
        '\r' => b'r',
        '\t' => b't',
        _ => 0,
    };
    if short != 0 {
        out.extend_from_slice(&[b'\\', short]);
        return;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut units = [0u16; 2];
    for &mut u in c.encode_utf16(&mut units) {
        let digit = |shift: u16| HEX[usize::from((u >> shift) & 0xf)];
        out.extend_from_slice(&[b'\\', b'u', digit(12), digit(8), digit(4), digit(0)]);
    }
}

/// An array or object being written: whether a comma goes before the next
/// element.
struct Compound<'w, 'a> {
    w: &'w mut Writer<'a>,
    first: bool,
}

impl Compound<'_, '_> {
    fn comma(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.w.0.push(b',');
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.comma();
        v.serialize(&mut *self.w)
    }

    fn close(self, b: u8) -> Result<(), Error> {
        self.w.0.push(b);
        Ok(())
    }
}

impl<'w, 'a> Writer<'a> {
    fn open(&'w mut self, b: u8) -> Compound<'w, 'a> {
        self.0.push(b);
        Compound {
            w: self,
            first: true,
        }
    }
}

impl<'w, 'a> ser::Serializer for &'w mut Writer<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'w, 'a>;
    type SerializeTuple = Compound<'w, 'a>;
    type SerializeTupleStruct = Compound<'w, 'a>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Compound<'w, 'a>;
    type SerializeStruct = Compound<'w, 'a>;
    type SerializeStructVariant = Impossible<(), Error>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.0.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }

    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }

    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }

    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.number(|b| CompactFormatter.write_i64(b, v))
    }

    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.serialize_u64(v.into())
    }

    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.serialize_u64(v.into())
    }

    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.serialize_u64(v.into())
    }

    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.number(|b| CompactFormatter.write_u64(b, v))
    }

    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        if !v.is_finite() {
            return self.serialize_unit();
        }
        self.number(|b| CompactFormatter.write_f32(b, v))
    }

    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        if !v.is_finite() {
            return self.serialize_unit();
        }
        self.number(|b| CompactFormatter.write_f64(b, v))
    }

    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_str(self.0, v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        let mut seq = self.open(b'[');
        for b in v {
            seq.element(b)?;
        }
        seq.close(b']')
    }

    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Error> {
        v.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Error> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, v: &'static str) -> Result<(), Error> {
        self.serialize_str(v)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        v.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        let mut map = self.open(b'{');
        ser::SerializeMap::serialize_entry(&mut map, variant, v)?;
        map.close(b'}')
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'w, 'a>, Error> {
        Ok(self.open(b'['))
    }

    fn serialize_tuple(self, _: usize) -> Result<Compound<'w, 'a>, Error> {
        Ok(self.open(b'['))
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Compound<'w, 'a>, Error> {
        Ok(self.open(b'['))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(error("tuple variants are not written"))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'w, 'a>, Error> {
        Ok(self.open(b'{'))
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound<'w, 'a>, Error> {
        Ok(self.open(b'{'))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(error("struct variants are not written"))
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.element(v)
    }

    fn end(self) -> Result<(), Error> {
        self.close(b']')
    }
}

impl ser::SerializeTuple for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.element(v)
    }

    fn end(self) -> Result<(), Error> {
        self.close(b']')
    }
}

impl ser::SerializeTupleStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.element(v)
    }

    fn end(self) -> Result<(), Error> {
        self.close(b']')
    }
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    /// Keys must be strings (serde_json would quote numbers; no record has
    /// such keys).
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), Error> {
        let at = self.w.0.len() + usize::from(!self.first);
        self.element(k)?;
        match self.w.0.get(at) {
            Some(b'"') => Ok(()),
            _ => Err(error("map keys must be strings")),
        }
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.w.0.push(b':');
        v.serialize(&mut *self.w)
    }

    fn end(self) -> Result<(), Error> {
        self.close(b'}')
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        let comma = !std::mem::take(&mut self.first);
        write_key(self.w.0, comma, key);
        v.serialize(&mut *self.w)
    }

    fn end(self) -> Result<(), Error> {
        self.close(b'}')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// The reference: serde_json's compact formatter, with non-ASCII and
    /// DEL escaped as `\u` escapes of their UTF-16 units (what events were
    /// written with before [`Writer`]).
    struct AsciiFormatter;

    impl Formatter for AsciiFormatter {
        fn write_string_fragment<W: ?Sized + std::io::Write>(
            &mut self,
            writer: &mut W,
            fragment: &str,
        ) -> std::io::Result<()> {
            for c in fragment.chars() {
                if c.is_ascii() && c != '\x7f' {
                    writer.write_all(&[c as u8])?;
                } else {
                    for u in c.encode_utf16(&mut [0u16; 2]) {
                        write!(writer, "\\u{u:04x}")?;
                    }
                }
            }
            Ok(())
        }
    }

    fn reference<T: Serialize + ?Sized>(v: &T) -> Option<String> {
        let mut b = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(&mut b, AsciiFormatter);
        v.serialize(&mut ser).ok()?;
        String::from_utf8(b).ok()
    }

    /// A written line's buffer serves a later line, emptied; no more than
    /// the pool's size are kept, nor one that grew large or never held
    /// anything.
    #[test]
    fn written_lines_buffers_serve_later_lines() {
        let pool = Spares::new(2);
        pool.keep(Vec::new());
        pool.keep(Vec::with_capacity(SPARE_LINE_MAX + 1));
        let fresh = pool.take();
        assert!(fresh.is_empty());
        assert!((LINE_START..SPARE_LINE_MAX).contains(&fresh.capacity()));
        for cap in [3000, 4000, 5000] {
            let mut b = Vec::with_capacity(cap);
            b.extend_from_slice(b"{\"a\":1}");
            pool.keep(b);
        }
        let (a, b, c) = (pool.take(), pool.take(), pool.take());
        assert!(a.is_empty() && b.is_empty());
        assert_eq!((a.capacity(), b.capacity()), (3000, 4000));
        assert!(c.capacity() < 3000, "a third was kept: {}", c.capacity());
        // Through the process's pool: the line is the same, whatever the
        // buffer held before.
        give_back("x".repeat(1500));
        assert_eq!(line(&json!({"k": "v"})).as_deref(), Some(r#"{"k":"v"}"#));
    }

    /// The bytes every transport carries: `"` `\` and control bytes in
    /// JSON's short forms where it has them, other control bytes, DEL and
    /// non-ASCII as `\u` escapes of UTF-16 units (a surrogate pair beyond
    /// the BMP), numbers as serde_json writes them, keys sorted.
    #[test]
    fn json_line_escapes_to_ascii() {
        let v = json!({
            "a": "plain",
            "b": "quote \" backslash \\ ctl \u{1} \u{8} \u{c} \n \r \t \u{1f} del \u{7f} e\u{e9} \u{1F600} \u{2028}",
            "n": [0, 1, u64::MAX, -5, i64::MIN, 1.5, 0.1, 1e300, -0.0, 100.0],
            "o": {"x": null, "y": true, "z": false, "\u{e9}k\"": []},
            "e": {},
        });
        let Value::Object(m) = v else { unreachable!() };
        let want = r#"{"a":"plain","b":"quote \" backslash \\ ctl \u0001 \b \f \n \r \t \u001f del \u007f e\u00e9 \ud83d\ude00 \u2028","e":{},"n":[0,1,18446744073709551615,-5,-9223372036854775808,1.5,0.1,1e+300,-0.0,100.0],"o":{"x":null,"y":true,"z":false,"\u00e9k\"":[]}}"#;
        assert_eq!(line(&m).as_deref(), Some(want));
        assert_eq!(reference(&m).as_deref(), Some(want));
    }

    /// Every byte value that needs an escape, at every position of an
    /// eight-byte chunk and in the tail after it, next to clean bytes.
    #[test]
    fn escapes_at_every_position() {
        let specials = (0u8..0x20)
            .chain([b'"', b'\\', 0x7f])
            .map(char::from)
            .chain([
                '\u{80}',
                '\u{e9}',
                '\u{7ff}',
                '\u{800}',
                '\u{ffff}',
                '\u{10000}',
                '\u{10ffff}',
            ]);
        for c in specials {
            for len in 0..20 {
                for at in 0..=len {
                    let mut s: String = "abcdefghijklmnopqrst".chars().take(len).collect();
                    s.insert(s.char_indices().nth(at).map_or(s.len(), |(i, _)| i), c);
                    assert_eq!(line(&s), reference(&s), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn struct_shapes_match_serde_json() {
        #[derive(serde::Serialize)]
        struct Inner<'a> {
            a: Option<u8>,
            #[serde(skip_serializing_if = "Option::is_none")]
            b: Option<&'a str>,
            c: (i16, char),
        }
        #[derive(serde::Serialize)]
        enum Kind {
            Unit,
            New(u32),
        }
        #[derive(serde::Serialize)]
        struct Outer<'a> {
            #[serde(rename = "@t")]
            t: &'a str,
            empty: Vec<u8>,
            inner: Vec<Inner<'a>>,
            kinds: [Kind; 2],
            floats: [f64; 4],
            small: (f32, i8, u16),
            unit: (),
        }
        let v = Outer {
            t: "x\u{7f}",
            empty: vec![],
            inner: vec![
                Inner {
                    a: None,
                    b: None,
                    c: (-1, '\u{e9}'),
                },
                Inner {
                    a: Some(255),
                    b: Some("\"q\""),
                    c: (i16::MIN, 'z'),
                },
            ],
            kinds: [Kind::Unit, Kind::New(7)],
            floats: [f64::NAN, f64::INFINITY, 1e-7, 123456789.125],
            small: (0.1, -128, 65535),
            unit: (),
        };
        assert!(line(&v).is_some());
        assert_eq!(line(&v), reference(&v));
    }

    #[test]
    fn non_string_keys_are_errors() {
        let m: std::collections::BTreeMap<u8, u8> = [(1, 2)].into();
        assert_eq!(line(&m), None);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            "[ -~\\x00-\\x1f\\x7f\u{80}-\u{ff}\u{2028}\u{1F600}]{0,40}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any JSON value, any string: the same bytes as serde_json with
        /// the ASCII formatter.
        #[test]
        fn writes_what_serde_json_writes(v in json_value()) {
            prop_assert_eq!(line(&v), reference(&v));
        }

        #[test]
        fn strings_as_serde_json_writes(s in any::<String>()) {
            prop_assert_eq!(line(&s), reference(&s));
        }
    }
}
