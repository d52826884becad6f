//! The `qmwatch` command line.
#![deny(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use qmwatch::audit::{self, Format};
use qmwatch::detect::policy::{Policy, PolicyBuilder};
use qmwatch::event::Observer;
use qmwatch::flow::{ChecksumMode, FlowConfig};
use qmwatch::pipeline::{replay_to, Delivery, ReplayConfig, ReplayReport};
use qmwatch::sink::{syslog, Output, OutputConfig, Rotation};

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
    #[command(flatten)]
    outputs: OutputArgs,
    /// No progress bar and no summary on standard error.
    #[arg(short, long)]
    quiet: bool,
    /// Fold repeated relay alerts of one client through one server into one
    /// alert per window (e.g. 60s, 5m, 1h) carrying a count and the first
    /// and last flow. Off by default: every relay attempt has its own alert.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    alert_window: Option<u64>,
    /// Capture read size in bytes (tests use small blocks to see events
    /// while a slow pipe is still being read).
    #[arg(long, default_value_t = 1 << 20, hide = true, value_parser = clap::value_parser!(u64).range(64..=(1 << 30)))]
    block_size: u64,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    policy: PolicyArgs,
}

/// Where events go.
#[derive(clap::Args, Debug)]
struct OutputArgs {
    /// Where to write events; repeatable, each output has its own queue and
    /// thread. `-` is standard output; a path is a file of JSON lines
    /// (appended, reopened on SIGHUP); `syslog+udp://HOST:PORT`,
    /// `syslog+tcp://HOST:PORT` and `syslog+unix:///dev/log` send RFC 5424
    /// syslog. Default: `-`.
    #[arg(short, long = "output", value_name = "TARGET")]
    output: Vec<String>,
    /// Rotate file outputs when they would pass this size (MiB).
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    rotate_size: Option<u64>,
    /// Rotated files kept (FILE.1 … FILE.N) with --rotate-size.
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    rotate_keep: u64,
    /// Events each output holds while it is slow or its collector is down;
    /// a syslog output then drops the oldest (counted).
    #[arg(long, default_value_t = qmwatch::sink::DEFAULT_QUEUE_EVENTS as u64, value_name = "EVENTS", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    output_queue: u64,
    /// Syslog facility: a name (local0…local7, daemon, user, …) or 0-23.
    #[arg(long, default_value = "local0", value_name = "FACILITY", value_parser = syslog::parse_facility)]
    syslog_facility: u8,
    /// Syslog APP-NAME.
    #[arg(long, default_value = "qmwatch", value_name = "NAME", value_parser = syslog::check_app_name)]
    syslog_app_name: String,
    /// At the end of input, how long a syslog output keeps trying a
    /// collector that is down before counting what is left as dropped.
    #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=86_400))]
    syslog_drain_timeout: u64,
    /// Longest wait between reconnect attempts to a syslog collector.
    #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    syslog_retry_max: u64,
}

impl OutputArgs {
    /// The outputs of a replay, with SIGHUP registered to reopen files.
    fn delivery(&self, observer: Observer) -> Result<Delivery, String> {
        let names: Vec<&str> = if self.output.is_empty() {
            vec!["-"]
        } else {
            self.output.iter().map(String::as_str).collect()
        };
        let mut outputs: Vec<OutputConfig> = Vec::new();
        for n in names {
            let output = Output::parse(n)?;
            if outputs.iter().any(|o| o.output == output) {
                return Err(format!("output {n} given twice"));
            }
            let mut c = OutputConfig::for_replay(output);
            c.queue_events = self.output_queue as usize;
            c.syslog = syslog::Options {
                facility: self.syslog_facility,
                app_name: self.syslog_app_name.clone(),
                hostname: observer.hostname.clone(),
                retry_max: Duration::from_secs(self.syslog_retry_max),
                drain_timeout: Duration::from_secs(self.syslog_drain_timeout),
                ..syslog::Options::default()
            };
            if let Output::File(_) = &c.output {
                c.rotation = self.rotate_size.map(|mib| Rotation {
                    max_bytes: mib.saturating_mul(1024 * 1024),
                    keep: self.rotate_keep as usize,
                });
                let flag = Arc::new(AtomicBool::new(false));
                signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&flag))
                    .map_err(|e| format!("cannot install SIGHUP handler: {e}"))?;
                c.reopen = Some(flag);
            }
            outputs.push(c);
        }
        Ok(Delivery { outputs, observer })
    }
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

struct Run<'a> {
    files: Vec<String>,
    outputs: Option<&'a OutputArgs>,
    progress: bool,
    engine: &'a EngineArgs,
    policy: &'a PolicyArgs,
    alert_window_ns: Option<u64>,
    block_size: usize,
}

fn start(run: Run<'_>) -> Result<ReplayReport, String> {
    let policy = run.policy.build()?;
    let stop = stop_flag()?;
    let observer = Observer::from_system();
    let delivery = match run.outputs {
        Some(o) => o.delivery(observer)?,
        None => Delivery::single(Output::Discard),
    };
    let cfg = ReplayConfig {
        files: run.files,
        workers: usize::from(run.engine.workers),
        output: Output::Discard,
        progress: run.progress,
        flow: run.engine.flow(),
        block_size: run.block_size,
        policy: Arc::new(policy),
        alert_window_ns: run.alert_window_ns,
    };
    replay_to(cfg, delivery, stop)
}

fn run_replay(a: ReplayArgs) -> ExitCode {
    let progress = !a.quiet && std::io::stderr().is_terminal();
    match start(Run {
        files: a.files,
        outputs: Some(&a.outputs),
        progress,
        engine: &a.engine,
        policy: &a.policy,
        alert_window_ns: a.alert_window,
        block_size: a.block_size as usize,
    }) {
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
    match start(Run {
        files: a.files,
        outputs: None,
        progress: false,
        engine: &a.engine,
        policy: &a.policy,
        alert_window_ns: None,
        block_size: 1 << 20,
    }) {
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
