//! The `qmwatch` command line.
#![deny(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use qmwatch::audit::{self, Format};
use qmwatch::detect::policy::{Policy, PolicyBuilder};
use qmwatch::flow::{ChecksumMode, FlowConfig};
use qmwatch::pipeline::{replay, ReplayConfig, ReplayReport};
use qmwatch::sink::Output;

#[derive(Parser, Debug)]
#[command(
    name = "qmwatch",
    version,
    about = "Passive sensor for QMTP/QMQP mail services and relay attempts",
    long_about = "Passive sensor for QMTP/QMQP mail services and relay attempts.\n\n\
Reads capture files (pcap or pcapng), reassembles TCP, recognises QMTP and QMQP \
sessions on any port, judges relay attempts against the site policy, and writes one \
JSON event per line (Elastic Common Schema names)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read capture files and write events as JSON lines.
    Replay(ReplayArgs),
    /// Read capture files and print a report: servers, relay attempts, open
    /// relays. Exit status 0 clean, 1 findings, 2 error.
    Audit(AuditArgs),
}

/// The site policy, as flags (the policy file uses the same names).
#[derive(clap::Args, Debug, Default)]
struct PolicyArgs {
    /// A domain this site accepts mail for (qmail rcpthosts semantics:
    /// `example.net` exactly, `.example.net` any subdomain). Repeatable.
    #[arg(long = "local-domain", value_name = "DOMAIN")]
    local_domain: Vec<String>,
    /// A network whose clients may relay (CIDR or address, IPv4 or IPv6).
    /// Repeatable. Default: private, loopback and link-local networks.
    #[arg(long = "trusted-net", value_name = "CIDR")]
    trusted_net: Vec<String>,
    /// A server the site runs on purpose: IP, IP:PORT or [IPv6]:PORT,
    /// optionally /qmtp or /qmqp. Repeatable.
    #[arg(long, value_name = "SERVER")]
    sanctioned: Vec<String>,
    /// A TOML policy file with the keys local-domain, trusted-net,
    /// sanctioned (lists) and rcpthosts (a path).
    #[arg(long, value_name = "FILE")]
    policy: Option<String>,
    /// A qmail control/rcpthosts file, read as it is.
    #[arg(long, value_name = "FILE")]
    rcpthosts: Option<String>,
}

impl PolicyArgs {
    fn build(&self) -> Result<Policy, String> {
        let mut b = PolicyBuilder::new();
        if let Some(p) = &self.policy {
            b.policy_file(p).map_err(|e| e.to_string())?;
        }
        if let Some(r) = &self.rcpthosts {
            b.rcpthosts_file(r).map_err(|e| e.to_string())?;
        }
        for d in &self.local_domain {
            b.local_domain(d, "--local-domain")
                .map_err(|e| e.to_string())?;
        }
        for n in &self.trusted_net {
            b.trusted_net(n, "--trusted-net")
                .map_err(|e| e.to_string())?;
        }
        for s in &self.sanctioned {
            b.sanctioned(s, "--sanctioned").map_err(|e| e.to_string())?;
        }
        if !(self.local_domain.is_empty()
            && self.trusted_net.is_empty()
            && self.sanctioned.is_empty())
        {
            b.note_source("flags");
        }
        Ok(b.build())
    }
}

/// Flow-table and reassembly limits.
#[derive(clap::Args, Debug)]
struct EngineArgs {
    /// Worker threads; each owns the flows that hash to it.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
    /// Flows tracked at once (all workers together); the least recently
    /// active flow is finished and evicted, and counted, when full.
    #[arg(long, default_value_t = 1_000_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    max_flows: u64,
    /// Seconds (packet time) without a packet after which a flow is finished.
    #[arg(long, default_value_t = 600, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    flow_timeout: u64,
    /// Out-of-order bytes held for reassembly, all flows together (MiB).
    #[arg(long, default_value_t = 64, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=65_536))]
    reassembly_memory: u64,
    /// Copied protocol state (addresses, reply texts) of all sessions
    /// together (MiB); a session that would pass it is reported as far as it
    /// got and dropped.
    #[arg(long, default_value_t = 256, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=65_536))]
    session_memory: u64,
    /// TCP checksums: `auto` verifies a direction whose first packet has a
    /// valid checksum and ignores one whose checksums are offloaded;
    /// `verify` drops every bad segment; `ignore` never checks.
    #[arg(long, value_enum, default_value_t = ChecksumMode::Auto)]
    checksums: ChecksumMode,
}

impl EngineArgs {
    fn flow(&self) -> FlowConfig {
        FlowConfig {
            max_flows: self.max_flows as usize,
            idle_timeout_ns: self.flow_timeout * 1_000_000_000,
            held_bytes_cap: (self.reassembly_memory as usize).saturating_mul(1024 * 1024),
            checksums: self.checksums,
            session_memory: (self.session_memory as usize).saturating_mul(1024 * 1024),
            ..FlowConfig::default()
        }
    }
}

#[derive(clap::Args, Debug)]
struct ReplayArgs {
    /// Capture files (pcap or pcapng), read in order; `-` reads standard input.
    #[arg(required = true, value_name = "CAPTURE")]
    files: Vec<String>,
    /// Where to write events (JSON lines, appended); `-` is standard output.
    #[arg(short, long, default_value = "-", value_name = "FILE")]
    output: String,
    /// No progress bar and no summary on standard error.
    #[arg(short, long)]
    quiet: bool,
    /// Fold repeated relay alerts of one client through one server into one
    /// alert per window (e.g. 60s, 5m, 1h) carrying a count and the first
    /// and last flow. Off by default: every relay attempt has its own alert.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    alert_window: Option<u64>,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    policy: PolicyArgs,
}

#[derive(clap::Args, Debug)]
struct AuditArgs {
    /// Capture files (pcap or pcapng), read in order; `-` reads standard input.
    #[arg(required = true, value_name = "CAPTURE")]
    files: Vec<String>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    policy: PolicyArgs,
}

/// Parses `90`, `90s`, `5m`, `2h`, `1d` into nanoseconds.
fn parse_duration(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (e.g. 60s, 5m, 1h)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("unknown unit in {s:?} (s, m, h or d)")),
    };
    if secs == 0 || secs > 30 * 86_400 {
        return Err(format!("duration out of range: {s:?} (1s to 30d)"));
    }
    Ok(secs * 1_000_000_000)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Replay(a) => run_replay(a),
        Command::Audit(a) => run_audit(a),
    }
}

fn stop_flag() -> Result<Arc<AtomicBool>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| format!("cannot install signal handler: {e}"))?;
    }
    Ok(stop)
}

fn start(
    files: Vec<String>,
    output: Output,
    progress: bool,
    engine: &EngineArgs,
    policy: &PolicyArgs,
    alert_window_ns: Option<u64>,
) -> Result<ReplayReport, String> {
    let policy = policy.build()?;
    let stop = stop_flag()?;
    let cfg = ReplayConfig {
        files,
        workers: usize::from(engine.workers),
        output,
        progress,
        flow: engine.flow(),
        block_size: 1 << 20,
        policy: Arc::new(policy),
        alert_window_ns,
    };
    replay(cfg, stop)
}

fn run_replay(a: ReplayArgs) -> ExitCode {
    let progress = !a.quiet && std::io::stderr().is_terminal();
    match start(
        a.files,
        Output::parse(&a.output),
        progress,
        &a.engine,
        &a.policy,
        a.alert_window,
    ) {
        Ok(report) => {
            if !a.quiet {
                eprint!("{}", report.summary());
            } else {
                for e in &report.errors {
                    eprintln!("qmwatch: {e}");
                }
            }
            if report.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(e) => {
            eprintln!("qmwatch: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_audit(a: AuditArgs) -> ExitCode {
    let policy_text = match a.policy.build() {
        Ok(p) => p.describe(),
        Err(e) => {
            eprintln!("qmwatch: {e}");
            return ExitCode::from(2);
        }
    };
    let files = a.files.clone();
    match start(a.files, Output::Discard, false, &a.engine, &a.policy, None) {
        Ok(report) => {
            print!("{}", audit::render(&report, &files, &policy_text, a.format));
            for e in &report.errors {
                eprintln!("qmwatch: {e}");
            }
            ExitCode::from(audit::exit_status(&report))
        }
        Err(e) => {
            eprintln!("qmwatch: {e}");
            ExitCode::from(2)
        }
    }
}
