//! `qmwatch-gen`: writes a deterministic synthetic capture and its ground
//! truth, for benchmarks and tests (see `qmwatch_synth`).
//!
//! ```sh
//! qmwatch-gen --profile mixed --seed 1 --bytes 1G --out /tmp/mixed.pcap --truth /tmp/mixed.json
//! qmwatch replay --local-domain example.net --local-domain .example.net \
//!     --trusted-net 192.0.2.0/24 --trusted-net 2001:db8:1::/48 /tmp/mixed.pcap
//! ```
#![deny(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use qmwatch_synth::{self as synth, Config, Profile, Target};

#[derive(Parser, Debug)]
#[command(
    name = "qmwatch-gen",
    version,
    about = "Write a deterministic synthetic capture (pcap) with QMTP/QMQP traffic and its ground truth (JSON)",
    long_about = "Write a deterministic synthetic capture (classic pcap, Ethernet, microseconds) \
and its ground truth (JSON): sessions, transactions, recipients, replies by code, relay attempts \
by verdict, services, and the site policy to judge them with. The same arguments always give \
the same bytes. Only documentation addresses and example domains are used."
)]
struct Args {
    /// Traffic profile.
    #[arg(long, value_parser = parse_profile, value_name = "mixed|qmtp-heavy|small-flows")]
    profile: Profile,
    /// Seed of the pseudo-random generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Approximate capture size, e.g. 64M, 1G (binary units).
    #[arg(long, value_parser = synth::parse_size, value_name = "SIZE", conflicts_with = "flows", required_unless_present = "flows")]
    bytes: Option<u64>,
    /// Number of flows (TCP connections and DNS exchanges).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    flows: Option<u64>,
    /// Capture file to write; `-` is standard output.
    #[arg(long, value_name = "FILE.pcap")]
    out: String,
    /// Ground truth file to write (JSON).
    #[arg(long, value_name = "FILE.json")]
    truth: String,
    /// No summary on standard error.
    #[arg(short, long)]
    quiet: bool,
}

fn parse_profile(s: &str) -> Result<Profile, String> {
    s.parse()
}

fn run(a: &Args) -> Result<(), String> {
    let target = match (a.bytes, a.flows) {
        (Some(b), _) => Target::Bytes(b),
        (None, Some(n)) => Target::Flows(n),
        (None, None) => return Err("give --bytes or --flows".into()),
    };
    let cfg = Config {
        profile: a.profile,
        seed: a.seed,
        target,
    };
    let started = Instant::now();
    let truth = if a.out == "-" {
        let stdout = std::io::stdout();
        synth::generate(&cfg, stdout.lock()).map_err(|e| format!("writing the capture: {e}"))?
    } else {
        let f = std::fs::File::create(&a.out).map_err(|e| format!("{}: {e}", a.out))?;
        synth::generate(&cfg, f).map_err(|e| format!("{}: {e}", a.out))?
    };
    let secs = started.elapsed().as_secs_f64();
    let mut json = truth.to_json();
    json.push('\n');
    std::fs::File::create(&a.truth)
        .and_then(|mut f| f.write_all(json.as_bytes()))
        .map_err(|e| format!("{}: {e}", a.truth))?;
    if !a.quiet {
        let c = &truth.capture;
        let q = &truth.qm;
        let r = &q.relay_attempts;
        eprintln!(
            "qmwatch-gen {} seed {}: {} packets, {} bytes ({} TCP + {} UDP flows) in {:.2} s ({:.0} MB/s)\n  \
             QMTP/QMQP: sessions {}/{} (confirmed {}/{}), transactions {}, recipients {}, \
             codes K {} Z {} D {} missing {}, relay attempts {} (open {} refused {} deferred {} unanswered {}), services {}",
            cfg.profile.name(),
            cfg.seed,
            c.packets,
            c.file_bytes,
            c.tcp_flows,
            c.udp_flows,
            secs,
            c.file_bytes as f64 / secs.max(1e-9) / 1e6,
            q.sessions.qmtp,
            q.sessions.qmqp,
            q.confirmed_sessions.qmtp,
            q.confirmed_sessions.qmqp,
            q.transactions_total,
            q.recipients,
            q.codes.k,
            q.codes.z,
            q.codes.d,
            q.codes.missing,
            q.relay_attempts_total,
            r.open_relay,
            r.refused,
            r.deferred,
            r.unanswered,
            q.services.len(),
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qmwatch-gen: {e}");
            ExitCode::from(2)
        }
    }
}
