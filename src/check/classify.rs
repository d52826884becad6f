//! What a server's answer is: QMTP/QMQP reply netstrings, an SMTP banner,
//! HTTP, TLS, or something else.
//!
//! Owns: naming an answer from its bytes — reply netstrings through the
//! project's own [`ReplyParser`], the rest from their first bytes — and
//! deciding when enough of an answer has arrived to stop reading.
//!
//! Must not: trust the answer (it is hostile input: every slice is bounded,
//! nothing is indexed blindly) or decide what the port is (`check` does,
//! from all the answers).

use qmwatch_proto::reply::ReplyParser;
use qmwatch_proto::{printable, Reply};

/// What an answer looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// At least one complete K/Z/D reply netstring, and nothing that is not.
    Replies(Vec<Reply>),
    /// An SMTP greeting or reply line (`220 …`, `421 …`, `554 …`).
    Smtp,
    /// An HTTP response (status line, or an HTML page).
    Http,
    /// A TLS record (handshake or alert).
    Tls,
    /// An SSH banner.
    Ssh,
    /// Anything else.
    Other,
}

/// The complete reply netstrings at the start of `bytes`, and whether the
/// bytes are replies as far as they go (no byte that breaks the form).
pub fn replies(bytes: &[u8]) -> (Vec<Reply>, bool) {
    let mut p = ReplyParser::new();
    let mut out = Vec::new();
    let failed = p.feed(bytes, 0, None, &mut out).is_some();
    (out, !failed)
}

/// Names an answer.
pub fn classify(bytes: &[u8]) -> Answer {
    let (rs, _) = replies(bytes);
    if !rs.is_empty() {
        // Replies first, then garbage: still a reply netstring speaker,
        // which is what matters; the rest is kept as evidence.
        return Answer::Replies(rs);
    }
    if bytes.starts_with(b"SSH-") {
        return Answer::Ssh;
    }
    if bytes.len() >= 2 && matches!(bytes.first(), Some(0x15 | 0x16)) && bytes.get(1) == Some(&0x03)
    {
        return Answer::Tls;
    }
    let head: Vec<u8> = bytes.iter().take(64).map(u8::to_ascii_lowercase).collect();
    if head.starts_with(b"http/")
        || head.starts_with(b"<!doctype html")
        || head.starts_with(b"<html")
    {
        return Answer::Http;
    }
    if let (Some(code), Some(sep)) = (bytes.get(..3), bytes.get(3)) {
        let line = first_line(bytes).to_ascii_uppercase();
        if matches!(code, b"220" | b"421" | b"554")
            && matches!(sep, b' ' | b'-' | b'\r' | b'\n')
            && !line.contains("FTP")
        {
            return Answer::Smtp;
        }
    }
    Answer::Other
}

/// Enough of an answer has arrived to name it: `want` complete replies (or
/// a byte that is not a reply), a TLS record header, or one whole line.
pub fn enough(bytes: &[u8], want: usize) -> bool {
    if looks_like_reply(bytes) {
        let (rs, clean) = replies(bytes);
        return rs.len() >= want || !clean;
    }
    if netstring_header(bytes) {
        // A netstring, but not a reply: nothing more to wait for.
        return true;
    }
    if matches!(bytes.first(), Some(0x15 | 0x16)) {
        return bytes.len() >= 5;
    }
    bytes.contains(&b'\n')
}

/// `[1-9][0-9]*` so far, or that and `:` and `K`, `Z` or `D`.
fn looks_like_reply(bytes: &[u8]) -> bool {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || bytes.first() == Some(&b'0') {
        return false;
    }
    match (bytes.get(digits), bytes.get(digits + 1)) {
        (None, _) => true,
        (Some(b':'), None) => true,
        (Some(b':'), Some(c)) => matches!(c, b'K' | b'Z' | b'D'),
        _ => false,
    }
}

/// `[1-9][0-9]*:` and a byte after it.
fn netstring_header(bytes: &[u8]) -> bool {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0
        && bytes.first() != Some(&b'0')
        && bytes.get(digits) == Some(&b':')
        && bytes.len() > digits + 1
}

/// The first line of an answer, without its line ending, escaped and
/// bounded (for reports).
pub fn first_line(bytes: &[u8]) -> String {
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let line = bytes.get(..end).unwrap_or(bytes);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    printable(line, 160)
}

/// An answer as evidence: escaped, at most `max` bytes shown.
pub fn escaped(bytes: &[u8], max: usize) -> String {
    printable(bytes, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use qmwatch_proto::ReplyCode;

    #[test]
    fn names_answers() {
        let postfix = b"64:DError: unknown[127.0.0.2] is not authorized to use this service,";
        match classify(postfix) {
            Answer::Replies(r) => {
                assert_eq!(r.len(), 1);
                assert_eq!(r[0].code, ReplyCode::D);
            }
            a => panic!("{a:?}"),
        }
        let qmail = b"29:Dunacceptable sender (#5.1.7),29:Dunacceptable sender (#5.1.7),";
        assert!(matches!(classify(qmail), Answer::Replies(r) if r.len() == 2));
        assert_eq!(
            classify(b"220 mail.example.net ESMTP Postfix (Debian/GNU)\r\n"),
            Answer::Smtp
        );
        assert_eq!(classify(b"220-mail.example.net ESMTP\r\n"), Answer::Smtp);
        assert_eq!(
            classify(b"220 ftp.example.net FTP server ready\r\n"),
            Answer::Other
        );
        assert_eq!(classify(b"HTTP/1.1 400 Bad Request\r\n\r\n"), Answer::Http);
        assert_eq!(classify(b"<!DOCTYPE HTML>\n<html>"), Answer::Http);
        assert_eq!(
            classify(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46]),
            Answer::Tls
        );
        assert_eq!(classify(&[0x16, 0x03, 0x03, 0x00, 0x5a, 0x02]), Answer::Tls);
        assert_eq!(classify(b"SSH-2.0-OpenSSH_9.2\r\n"), Answer::Ssh);
        assert_eq!(classify(b"3:Xab,"), Answer::Other);
        assert_eq!(classify(b"70:CONTENT_LENGTH\x0027\x00"), Answer::Other);
        assert_eq!(classify(b""), Answer::Other);
        assert_eq!(classify(b"22"), Answer::Other);
    }

    #[test]
    fn when_to_stop_reading() {
        let two = b"23:Kok 1795238266 qp 15826,23:Kok 1795238266 qp 15826,";
        for cut in 0..two.len() {
            assert!(!enough(&two[..cut], 2), "{cut}");
        }
        assert!(enough(two, 2));
        assert!(enough(&two[..27], 1));
        assert!(!enough(b"2", 1));
        assert!(enough(b"220 x\r\n", 1));
        assert!(!enough(b"220 x", 1));
        assert!(enough(b"29:Xbad", 1), "not a reply: enough to say so");
        assert!(enough(&[0x16, 0x03, 0x03, 0, 1], 1));
        assert!(!enough(&[0x16, 0x03], 1));
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let mut seed = 7u32;
        for len in 0..300 {
            let b: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = classify(&b);
            let _ = enough(&b, 2);
            let _ = first_line(&b);
        }
        let _ = classify(b"999999999999999999999:K");
        assert_eq!(first_line(b"a\r\nb"), "a");
    }
}
