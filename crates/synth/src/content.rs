//! Payload bytes: what each application writes, described compactly so that
//! a 50 MB download or a 5 MB mail message never sits in memory.
//!
//! A [`Content`] is a list of [`Piece`]s: literal bytes (protocol headers,
//! envelopes, replies) and filler (mail text, binary data) drawn from fixed
//! tables at a seeded offset, produced segment by segment.

use std::sync::OnceLock;

use super::rng::Rng;

/// Size of each filler table (a power of two).
const TABLE: usize = 1 << 20;

struct Tables {
    binary: Vec<u8>,
    text_lf: Vec<u8>,
    text_crlf: Vec<u8>,
}

const WORDS: &[&str] = &[
    "the",
    "quarterly",
    "report",
    "attached",
    "numbers",
    "meeting",
    "please",
    "review",
    "budget",
    "schedule",
    "team",
    "update",
    "invoice",
    "shipment",
    "customer",
    "thanks",
    "regards",
    "project",
    "deadline",
    "draft",
    "minutes",
    "agenda",
    "and",
    "of",
    "to",
    "for",
    "with",
    "on",
    "in",
    "a",
    "is",
    "we",
    "will",
    "next",
    "week",
    "friday",
    "server",
    "backup",
    "release",
    "notes",
];

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let mut rng = Rng::new(0x5eed_7ab1e5);
        let mut binary = vec![0u8; TABLE];
        rng.fill(&mut binary);
        // Text: lines of 40-76 characters, LF and CRLF versions of the same
        // words, each exactly TABLE bytes long and ending with a whole line
        // (so that wrapping around never splits a CRLF).
        let text = |rng: &mut Rng, eol: &[u8]| {
            let mut t = Vec::with_capacity(TABLE + 128);
            while t.len() < TABLE - 300 {
                let width = rng.range(40, 76) as usize;
                let start = t.len();
                loop {
                    let w = WORDS[rng.index(WORDS.len())];
                    if t.len() - start + w.len() + 1 > width {
                        break;
                    }
                    if t.len() > start {
                        t.push(b' ');
                    }
                    t.extend_from_slice(w.as_bytes());
                }
                t.extend_from_slice(eol);
            }
            let rest = TABLE - t.len();
            for n in [rest - 150, 150] {
                t.resize(t.len() + n - eol.len(), b'-');
                t.extend_from_slice(eol);
            }
            debug_assert_eq!(t.len(), TABLE);
            t
        };
        let text_lf = text(&mut rng.clone(), b"\n");
        let text_crlf = text(&mut rng, b"\r\n");
        Tables {
            binary,
            text_lf,
            text_crlf,
        }
    })
}

/// A text table position at the start of a line, chosen by `seed`.
pub fn text_start(seed: u32, crlf: bool) -> u32 {
    let t = tables();
    let table = if crlf { &t.text_crlf } else { &t.text_lf };
    let pos = seed as usize % TABLE;
    match table[pos..].iter().position(|&b| b == b'\n') {
        Some(i) if pos + i + 1 < TABLE => (pos + i + 1) as u32,
        _ => 0,
    }
}

/// Copies `n` bytes of `table` starting at position `pos` (wrapping).
fn copy_wrapping(table: &[u8], mut pos: usize, mut n: usize, out: &mut Vec<u8>) {
    while n > 0 {
        pos %= table.len();
        let take = n.min(table.len() - pos);
        out.extend_from_slice(&table[pos..pos + take]);
        pos += take;
        n -= take;
    }
}

/// One part of a write.
#[derive(Clone, Debug)]
pub enum Piece {
    Bytes(Vec<u8>),
    /// Mail-like text lines ending in LF or CRLF, from table position
    /// `start` (a line start: see [`text_start`]).
    Text {
        len: u64,
        crlf: bool,
        start: u32,
    },
    /// Incompressible data.
    Binary {
        len: u64,
        seed: u32,
    },
}

impl Piece {
    pub fn len(&self) -> u64 {
        match self {
            Piece::Bytes(b) => b.len() as u64,
            Piece::Text { len, .. } | Piece::Binary { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends bytes `from..from + n` of the piece to `out`.
    fn copy(&self, from: u64, n: usize, out: &mut Vec<u8>) {
        match self {
            Piece::Bytes(b) => {
                let s = from as usize;
                out.extend_from_slice(&b[s..s + n]);
            }
            Piece::Text { crlf, start, .. } => {
                let t = tables();
                let table = if *crlf { &t.text_crlf } else { &t.text_lf };
                let pos = (*start as usize).wrapping_add(from as usize) % TABLE;
                copy_wrapping(table, pos, n, out);
            }
            Piece::Binary { seed, .. } => {
                let pos = (*seed as usize).wrapping_add(from as usize) % TABLE;
                copy_wrapping(&tables().binary, pos, n, out);
            }
        }
    }
}

/// The bytes of one application write.
#[derive(Clone, Debug, Default)]
pub struct Content {
    pieces: Vec<Piece>,
    len: u64,
}

impl Content {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bytes(b: impl Into<Vec<u8>>) -> Self {
        let mut c = Content::new();
        c.push(Piece::Bytes(b.into()));
        c
    }

    pub fn push(&mut self, p: Piece) {
        if p.is_empty() {
            return;
        }
        self.len += p.len();
        // Merge adjacent literal pieces.
        if let (Some(Piece::Bytes(last)), Piece::Bytes(b)) = (self.pieces.last_mut(), &p) {
            last.extend_from_slice(b);
            return;
        }
        self.pieces.push(p);
    }

    pub fn lit(&mut self, b: &[u8]) {
        self.push(Piece::Bytes(b.to_vec()));
    }

    pub fn append(&mut self, other: Content) {
        for p in other.pieces {
            self.push(p);
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends bytes `from..from + n` to `out`.
    pub fn copy(&self, mut from: u64, mut n: usize, out: &mut Vec<u8>) {
        for p in &self.pieces {
            if n == 0 {
                break;
            }
            let l = p.len();
            if from >= l {
                from -= l;
                continue;
            }
            let take = (n as u64).min(l - from) as usize;
            p.copy(from, take, out);
            n -= take;
            from = 0;
        }
        debug_assert_eq!(n, 0, "copy past the end of a content");
    }

    /// All bytes (for small contents and tests).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len as usize);
        self.copy(0, self.len as usize, &mut v);
        v
    }
}

/// `LEN ":" content ","`.
pub fn netstring(content: &[u8]) -> Vec<u8> {
    let mut v = format!("{}:", content.len()).into_bytes();
    v.extend_from_slice(content);
    v.push(b',');
    v
}

/// A mail message of exactly `len` bytes: headers, a blank line, text.
/// `crlf` chooses the line ending.
pub fn mail_message(len: u64, crlf: bool, rng: &mut Rng, from: &str, to: &str) -> Content {
    let eol = if crlf { "\r\n" } else { "\n" };
    let id = rng.next_u64();
    let head = format!(
        "Received: (qmail {pid} invoked by uid {uid}); {day} Jan 2026 {h:02}:{m:02}:{s:02} -0000{eol}\
         Message-ID: <{id:016x}.{pid}@mail.example.net>{eol}\
         Date: {day} Jan 2026 {h:02}:{m:02}:{s:02} -0000{eol}\
         From: {from}{eol}To: {to}{eol}Subject: report {id:08x}{eol}MIME-Version: 1.0{eol}{eol}",
        pid = rng.range(1000, 65_000),
        uid = rng.range(100, 2000),
        day = rng.range(1, 28),
        h = rng.below(24),
        m = rng.below(60),
        s = rng.below(60),
        from = if from.is_empty() { "MAILER-DAEMON@example.net" } else { from },
    )
    .into_bytes();
    let mut c = Content::new();
    if head.len() as u64 >= len {
        c.lit(&head[..len as usize]);
        return c;
    }
    let body = len - head.len() as u64;
    c.lit(&head);
    c.push(Piece::Text {
        len: body,
        crlf,
        start: text_start(rng.next_u32(), crlf),
    });
    c
}

/// A netstring whose content is `inner`, as a content (inner may be large).
pub fn netstring_of(inner: Content) -> Content {
    let mut c = Content::bytes(format!("{}:", inner.len()));
    c.append(inner);
    c.lit(b",");
    c
}

/// A TLS record header followed by `len` random bytes.
pub fn tls_record(kind: u8, len: u64, rng: &mut Rng) -> Content {
    let mut c = Content::bytes([kind, 0x03, 0x03, (len >> 8) as u8, len as u8]);
    c.push(Piece::Binary {
        len,
        seed: rng.next_u32(),
    });
    c
}

/// A TLS 1.2/1.3-style ClientHello record (record version 0x0301) naming
/// `sni`, padded to 512 bytes of handshake like common browsers.
pub fn tls_client_hello(sni: &str, rng: &mut Rng) -> Content {
    let mut random = [0u8; 32];
    rng.fill(&mut random);
    let mut session = [0u8; 32];
    rng.fill(&mut session);
    let mut body = Vec::new();
    body.extend_from_slice(&[0x03, 0x03]);
    body.extend_from_slice(&random);
    body.push(32);
    body.extend_from_slice(&session);
    let suites: [u16; 8] = [
        0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9,
    ];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    let mut ext = Vec::new();
    // server_name
    let name = sni.as_bytes();
    ext.extend_from_slice(&0u16.to_be_bytes());
    ext.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
    ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    // supported_versions: TLS 1.3, 1.2
    ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x05, 0x04, 0x03, 0x04, 0x03, 0x03]);
    // padding up to a 512-byte handshake body
    let used = body.len() + 2 + ext.len() + 4;
    let padlen = 508usize.saturating_sub(used);
    ext.extend_from_slice(&0x0015u16.to_be_bytes());
    ext.extend_from_slice(&(padlen as u16).to_be_bytes());
    ext.resize(ext.len() + padlen, 0);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1u8];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    Content::bytes(rec)
}

/// A DNS query for `name` (type A or AAAA) with transaction id `id`.
pub fn dns_query(id: u16, name: &str, aaaa: bool) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&(if aaaa { 28u16 } else { 1u16 }).to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

/// The answer to [`dns_query`]: `answers` records pointing at the question.
pub fn dns_response(query: &[u8], aaaa: bool, answers: u8, rng: &mut Rng) -> Vec<u8> {
    let mut m = query.to_vec();
    m[2] = 0x81;
    m[3] = 0x80;
    m[7] = answers;
    for _ in 0..answers {
        m.extend_from_slice(&[0xc0, 0x0c]);
        m.extend_from_slice(&(if aaaa { 28u16 } else { 1u16 }).to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&(rng.range(60, 86_400) as u32).to_be_bytes());
        if aaaa {
            m.extend_from_slice(&16u16.to_be_bytes());
            m.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
            m.extend_from_slice(&(rng.range(1, 0xfff) as u16).to_be_bytes());
        } else {
            m.extend_from_slice(&4u16.to_be_bytes());
            m.extend_from_slice(&[203, 0, 113, rng.range(1, 99) as u8]);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_copies_across_pieces() {
        let mut c = Content::bytes(b"12:".to_vec());
        c.push(Piece::Text {
            len: 10,
            crlf: false,
            start: text_start(3, false),
        });
        c.lit(b",");
        let all = c.to_vec();
        assert_eq!(all.len(), 14);
        assert_eq!(c.len(), 14);
        for from in 0..14u64 {
            for n in 0..(14 - from as usize) {
                let mut v = Vec::new();
                c.copy(from, n, &mut v);
                assert_eq!(v, all[from as usize..from as usize + n]);
            }
        }
    }

    #[test]
    fn messages_have_the_asked_length_and_line_endings() {
        let mut rng = Rng::new(5);
        for len in [1u64, 200, 1000, 100_000, 3 << 20] {
            for crlf in [false, true] {
                let m = mail_message(len, crlf, &mut rng, "a@example.org", "b@example.net");
                assert_eq!(m.len(), len);
                if len > 1000 {
                    let v = m.to_vec();
                    let lf = v.iter().filter(|&&b| b == b'\n').count();
                    let cr = v.iter().filter(|&&b| b == b'\r').count();
                    if crlf {
                        assert!(cr == lf || cr == lf + 1, "{cr} {lf}");
                    } else {
                        assert_eq!(cr, 0);
                    }
                }
            }
        }
    }

    #[test]
    fn client_hello_starts_like_tls() {
        let h = tls_client_hello("www.example.com", &mut Rng::new(1)).to_vec();
        assert_eq!(&h[..3], &[0x16, 0x03, 0x01]);
        assert_eq!(u16::from_be_bytes([h[3], h[4]]) as usize, h.len() - 5);
        assert_eq!(h[5], 1);
    }
}
