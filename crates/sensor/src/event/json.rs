//! One JSON line per event, ASCII only.
//!
//! Owns: the one writer every event goes through — serde_json's compact
//! serializer with [`AsciiFormatter`], for every dataset's typed record (and
//! the JSON objects tests compare them with) — and its reusable per-thread
//! buffer.
//!
//! Must not: reorder or rename fields (typed records declare them in the
//! sorted order a JSON object has) or add a newline (the sinks frame lines).

use serde::Serialize;

/// Serializes an event as one JSON line (no newline), ASCII only: anything
/// outside printable ASCII in a string is a `\u` escape, so every transport
/// (syslog included) carries it unchanged.
pub(super) fn line<T: Serialize + ?Sized>(e: &T) -> Option<String> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        let mut ser = serde_json::Serializer::with_formatter(&mut *b, AsciiFormatter);
        e.serialize(&mut ser).ok()?;
        std::str::from_utf8(&b).ok().map(str::to_owned)
    })
}

/// serde_json's compact formatter, with non-ASCII and DEL escaped as `\u`
/// escapes of their UTF-16 units.
struct AsciiFormatter;

impl serde_json::ser::Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        if fragment.bytes().all(|b| b < 0x7f) {
            return writer.write_all(fragment.as_bytes());
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() && c != '\x7f' {
                continue;
            }
            writer.write_all(fragment.get(start..i).unwrap_or_default().as_bytes())?;
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                write!(writer, "\\u{u:04x}")?;
            }
            start = i + c.len_utf8();
        }
        writer.write_all(fragment.get(start..).unwrap_or_default().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

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
    }
}
