//! Traffic synthesis for benchmarks and tests; the sensor never uses it.
//!
//! Writes deterministic, seedable Ethernet captures (classic pcap,
//! microsecond timestamps) of realistic TCP traffic with QMTP/QMQP sessions
//! in it, streaming (a capture of any size takes a few MB of memory), and
//! returns their ground truth ([`Truth`]): what a correct passive sensor must
//! report, judged by the definitions in docs/protocols.md with the site policy the
//! truth names.
//!
//! Profiles ([`Profile`]):
//! - **mixed**: an enterprise mix. Bulk HTTP downloads carry most bytes;
//!   many short HTTP request/response flows, TLS on 443, SMTP on 25 (banner
//!   first), DNS over UDP, refused connections, small request/response
//!   flows, a few ordinary flows whose first bytes look like a netstring
//!   length, and 2 % of flows QMTP/QMQP;
//! - **qmtp-heavy**: only QMTP/QMQP sessions;
//! - **small-flows**: short flows of 60–200-byte frames over many distinct
//!   5-tuples, DNS, refused connections, 7.5 % netstring look-alikes (`12:`
//!   text, bencode `4:spam`, SCGI `70:CONTENT_LENGTH\0…`, netstrings that
//!   start like a QMTP or QMQP request but are answered with a plain line)
//!   and 0.5 % QMTP/QMQP.
//!
//! QMTP/QMQP sessions: messages from 200 B to 5 MB, 1–20 recipients, one to
//! eight packages per QMTP connection (sent one at a time, pipelined, or
//! pipelined with a half-close; replies to pipelined packages sharing
//! segments or split anywhere), both encodings, empty senders, `K`/`Z`/`D`
//! replies, servers that stop answering, Postfix-style QMQP refusals,
//! servers on standard and non-standard ports over IPv4 and IPv6, trusted
//! internal clients, external clients delivering to local users and others
//! relaying through closed and open relays (see [`scenario::qm_servers`]).
//!
//! TCP is modelled per connection ([`tcp`]): real handshakes, MSS-sized
//! segments, delayed and every-second-segment pure ACKs, a send window,
//! FIN/RST teardown, correct sequence and acknowledgement numbers and
//! checksums, frames under 60 bytes padded. Flows overlap in time and the
//! capture's timestamps never decrease.
//!
//! Addresses are documentation ranges only (192.0.2.0/24, 198.51.100.0/24,
//! 203.0.113.0/24, 2001:db8::/32); mail domains are `example.net` (local),
//! `example.com` and `example.org` (foreign).
//!
//! With a byte target below 256 MiB the upper ends of the size
//! distributions (downloads, responses, messages) shrink in proportion, so
//! that a small capture still holds hundreds of flows of every kind.

pub mod content;
/// The generator's RNG is the test kit's (one RNG for generator and tests).
pub use qmwatch_testkit::rng;
pub mod scenario;
pub mod tcp;
pub mod truth;
pub mod wire;

use std::io::{self, Write};

pub use truth::Truth;

/// Which traffic to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Mixed,
    QmtpHeavy,
    SmallFlows,
}

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::Mixed, Profile::QmtpHeavy, Profile::SmallFlows];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Mixed => "mixed",
            Profile::QmtpHeavy => "qmtp-heavy",
            Profile::SmallFlows => "small-flows",
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown profile {s:?} (mixed, qmtp-heavy or small-flows)"))
    }
}

/// How much to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Start flows until the capture is expected to reach this many bytes
    /// (each flow's size is estimated, and corrected as it is written): the
    /// capture ends within about one flow of the target.
    Bytes(u64),
    /// Exactly this many flows (TCP connections and DNS exchanges).
    Flows(u64),
}

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub profile: Profile,
    pub seed: u64,
    pub target: Target,
}

/// Writes the capture to `out` as it is generated (buffered internally) and
/// returns its ground truth. The same configuration always gives the same
/// bytes.
pub fn generate<W: Write>(cfg: &Config, out: W) -> io::Result<Truth> {
    scenario::run(cfg, out)
}

/// Parses a size: a number with an optional binary suffix `K`, `M`, `G` or
/// `T` (optionally followed by `B` or `iB`), e.g. `500M`, `2GiB`, `1048576`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("not a size: {s:?} (e.g. 64M, 2G)"))?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("unknown size unit in {s:?} (K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("size out of range: {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("3kb"), Ok(3 << 10));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999T").is_err());
    }

    #[test]
    fn profiles_parse() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>(), Ok(p));
        }
        assert!("heavy".parse::<Profile>().is_err());
    }
}
