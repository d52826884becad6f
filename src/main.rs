//! The `qmwatch` command line: the binary of the workspace (clap, the
//! progress bar, the summary, `audit`, `check`). Nothing imports it.
#![deny(unsafe_code)]

mod audit;
mod check;
mod exit;
#[cfg(feature = "live")]
mod privileges;
mod progress;
mod summary;

use std::io::{IsTerminal, Write as _};
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{CommandFactory, Parser, Subcommand};

use audit::Format;
use check::{net as check_net, report as check_report, target as check_target};
use qmwatch_sensor::detect::policy::{Policy, PolicyBuilder};
use qmwatch_sensor::event::Observer;
use qmwatch_sensor::flow::{self, FlowConfig};
use qmwatch_sensor::pipeline::{
    replay, Defer, Destinations, FileAccess, Progress, ReplayConfig, RunOptions, RunReport,
};
use qmwatch_sensor::sink::{syslog, Output, OutputConfig, Rotation};

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
    /// Capture from a network interface (a SPAN/mirror port) and write
    /// events as JSON lines until SIGINT/SIGTERM (needs a build with
    /// `--features live`).
    Live(Box<LiveArgs>),
    /// Connect to servers and find out whether QMTP or QMQP is there
    /// (without delivering mail) and, with --relay-test, whether it relays
    /// for this client. Exit status 0 nothing found, 1 an unsanctioned
    /// service or an open relay, 2 error.
    Check(Box<CheckArgs>),
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
    /// Worker threads; each owns the flows that hash to it. At most one per
    /// CPU beside the capture thread's runs (more would only take turns
    /// with it, slower than fewer), unless --oversubscribe; a fanout runs
    /// them all.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
    /// Run every worker asked for, even with fewer CPUs than the workers
    /// and the capture thread.
    #[arg(long)]
    oversubscribe: bool,
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

/// `--decode-in`: [`Defer`] for the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
enum DecodeIn {
    /// The workers when they wait for input, else the capture thread.
    #[default]
    Auto,
    /// The capture thread, always.
    Capture,
    /// The workers, always (but frames that touch IP reassembly).
    Worker,
}

impl From<DecodeIn> for Defer {
    fn from(d: DecodeIn) -> Defer {
        match d {
            DecodeIn::Auto => Defer::WhenWorkerWaits,
            DecodeIn::Capture => Defer::Never,
            DecodeIn::Worker => Defer::Always,
        }
    }
}

/// `--checksums`: [`flow::ChecksumMode`] for the command line (the sensor
/// crate does not depend on clap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
enum ChecksumMode {
    /// Per direction: verified if its first checksummed packet is valid,
    /// ignored if it is not (offloaded checksums in captures taken on a
    /// sending host or on loopback).
    #[default]
    Auto,
    /// Always verified: bad segments are dropped.
    Verify,
    /// Never verified.
    Ignore,
}

impl From<ChecksumMode> for flow::ChecksumMode {
    fn from(m: ChecksumMode) -> flow::ChecksumMode {
        match m {
            ChecksumMode::Auto => flow::ChecksumMode::Auto,
            ChecksumMode::Verify => flow::ChecksumMode::Verify,
            ChecksumMode::Ignore => flow::ChecksumMode::Ignore,
        }
    }
}

impl EngineArgs {
    /// The workers to run: as many as asked while CPUs are left beside the
    /// capture thread's (on a machine with fewer, workers only take turns
    /// with the capture thread, and each turn costs it its caches), at
    /// least one. A worker's findings do not depend on how many run, but
    /// for the limits split between them and the servers each has seen
    /// confirmed (one worker knows them all).
    fn workers_to_run(&self, cpus: usize) -> usize {
        let asked = usize::from(self.workers);
        if self.oversubscribe {
            asked
        } else {
            asked.min(cpus.saturating_sub(1)).max(1)
        }
    }

    /// The workers to run on this machine ([`EngineArgs::workers_to_run`]
    /// of the CPUs this process may use: its affinity and any CPU quota),
    /// said on standard error unless `quiet` when fewer than asked.
    fn workers_here(&self, quiet: bool) -> usize {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let running = self.workers_to_run(cpus);
        if let Some(note) = self.fewer_workers_note(running, cpus).filter(|_| !quiet) {
            eprintln!("{note}");
        }
        running
    }

    /// A note for standard error when fewer workers run than asked.
    fn fewer_workers_note(&self, running: usize, cpus: usize) -> Option<String> {
        (running < usize::from(self.workers)).then(|| {
            format!(
                "qmwatch: running {running} worker{} of the {} asked: {cpus} CPU{} here, one for the capture thread (--oversubscribe runs them all)",
                if running == 1 { "" } else { "s" },
                self.workers,
                if cpus == 1 { "" } else { "s" },
            )
        })
    }

    fn flow(&self) -> FlowConfig {
        FlowConfig {
            max_flows: self.max_flows as usize,
            idle_timeout_ns: self.flow_timeout * 1_000_000_000,
            held_bytes_cap: (self.reassembly_memory as usize).saturating_mul(1024 * 1024),
            checksums: self.checksums.into(),
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
    /// Which thread decodes the frames (for measurements: instruction
    /// counts that do not depend on how the threads took turns). The
    /// events are the same either way.
    #[arg(long, value_enum, default_value_t = DecodeIn::Auto, hide = true)]
    decode_in: DecodeIn,
    /// Map regular capture files into memory and read them in place,
    /// instead of copying them into blocks. Which is faster depends on the
    /// machine: by default a file of 128 MiB or more is probed (both ways, on
    /// 16 MiB spread over it) and read the cheaper way; the summary says which.
    /// A file cut while mapped is reported as truncated, as when read
    #[arg(long, conflicts_with = "no_mmap")]
    mmap: bool,
    /// Always copy capture files into blocks, never map them (see --mmap)
    #[arg(long)]
    no_mmap: bool,
    /// Also write a `qmwatch.stats` event every DURATION of wall time and
    /// one at the end (off by default: a replay's events are only its
    /// findings).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    stats_interval: Option<u64>,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    policy: PolicyArgs,
}

/// `qmwatch live`: options with sensor-grade defaults.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "The BPF filter, if any, is the trailing arguments joined with spaces, as \
tcpdump takes it (e.g. `qmwatch live -i eth1 not port 22`). Without one every frame is \
taken and everything but TCP is skipped cheaply; note that a filter such as `tcp` misses \
VLAN-tagged frames unless written `tcp or (vlan and tcp)`.\n\n\
Exit status: 0 after SIGINT/SIGTERM (every open session finished, its events and the \
final statistics written); 2 on an error (missing interface, bad filter, no permission, \
unwritable output, a capture that failed)."
)]
struct LiveArgs {
    /// Interface to capture on (a SPAN/mirror port).
    #[arg(short, long, value_name = "IFACE")]
    interface: String,
    /// Do not put the interface in promiscuous mode.
    #[arg(long)]
    no_promisc: bool,
    /// Bytes captured of each frame (whole frames by default).
    #[arg(long, default_value_t = 262_144, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(96..=262_144))]
    snaplen: u32,
    /// Kernel capture buffer in MiB, per capture handle (libpcap's default
    /// of 2 MiB drops bursts; Zeek uses 128).
    #[arg(long, default_value_t = 128, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=2047))]
    buffer_size: u32,
    /// Packet-buffer timeout in milliseconds: the longest the kernel and
    /// qmwatch hold captured packets before processing them (events come
    /// out within about this long after the reply packet).
    #[arg(long, default_value_t = 100, value_name = "MS", value_parser = clap::value_parser!(u32).range(1..=1000))]
    timeout: u32,
    /// libpcap immediate mode: every packet handed over at once. It turns
    /// off the kernel's batched TPACKET_V3 ring (more CPU per packet); the
    /// timeout already bounds the delay.
    #[arg(long)]
    immediate: bool,
    /// Linux: one capture handle per worker, joined into one PACKET_FANOUT
    /// group that hashes flows (both directions to the same worker), so no
    /// capture thread sits between the kernel and the workers.
    #[arg(long)]
    fanout: bool,
    /// After opening the interface, switch to this user, its group and
    /// groups (as `tcpdump -Z`). Output files are opened after the switch.
    #[arg(short = 'Z', long = "user", value_name = "USER")]
    user: Option<String>,
    /// A `qmwatch.stats` event every DURATION (e.g. 60s, 5m) and one at exit.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_duration)]
    stats_interval: u64,
    /// Capture loss (acknowledged TCP bytes never captured, per statistics
    /// interval) above which a `capture_loss` anomaly is raised, in percent;
    /// judged only over at least 1 MiB acknowledged.
    #[arg(long, default_value_t = 5.0, value_name = "PERCENT", value_parser = parse_percent)]
    capture_loss_threshold: f64,
    /// No packet at all on the interface for DURATION raises a
    /// `capture_silent` anomaly (a SPAN session removed looks like a quiet
    /// network otherwise), and packets again a `capture_resumed`.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
    idle_alarm: u64,
    /// Batches (blocks of up to 1 MiB of packets) each worker queue holds
    /// before the capture thread drops, counted as queue drops; absorbs a
    /// worker that is not scheduled for a moment. Tests use 1 to provoke
    /// queue drops.
    #[arg(long, default_value_t = 32, hide = true, value_parser = clap::value_parser!(u64).range(1..=4096))]
    queue_batches: u64,
    /// No start line and no summary on standard error (errors still
    /// printed).
    #[arg(short, long)]
    quiet: bool,
    /// Fold repeated relay alerts of one client through one server into one
    /// alert per window (e.g. 60s, 5m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    alert_window: Option<u64>,
    #[command(flatten)]
    outputs: OutputArgs,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// BPF capture filter (tcpdump syntax), as trailing arguments.
    #[arg(
        value_name = "FILTER",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    filter: Vec<String>,
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
    #[arg(long, default_value_t = qmwatch_sensor::sink::DEFAULT_QUEUE_EVENTS as u64, value_name = "EVENTS", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
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
    /// The outputs of a run, with SIGHUP registered to reopen files. Live
    /// outputs never make the capture wait: a full queue drops the oldest.
    fn destinations(&self, observer: Observer, live: bool) -> Result<Destinations, String> {
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
            let mut c = if live {
                OutputConfig::for_live(output)
            } else {
                OutputConfig::for_replay(output)
            };
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
        Ok(Destinations { outputs, observer })
    }
}

#[derive(clap::Args, Debug)]
struct AuditArgs {
    /// Capture files (pcap or pcapng), read in order; `-` reads standard input.
    #[arg(required = true, value_name = "CAPTURE")]
    files: Vec<String>,
    /// Report format: `html` is one self-contained page (no script, no
    /// font or image fetched) to attach to a ticket.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write the report to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<String>,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    policy: PolicyArgs,
}

/// `qmwatch check`: the active re-test.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Targets: HOST (a name or an address: the --ports are checked), HOST:PORT, \
[IPv6]:PORT, or a network in CIDR form (192.0.2.0/28; IPv4 network and broadcast \
addresses left out). Only the addresses named, a name's own addresses, and those inside a \
named network are contacted, at most --max-targets distinct addresses; a bad target is an \
error before anything is sent.\n\n\
Detection sends no request that can deliver mail. --relay-test sends one message per \
QMTP/QMQP service found, from the null envelope sender, to an undeliverable recipient at \
a .invalid domain unless --relay-recipient names another.\n\n\
In a check no network is trusted unless --trusted-net (or the policy file) names it: the \
passive defaults (private, loopback, link-local) do not apply. A K to the relay test from \
a trusted source is reported as accepted for a trusted client, not as an open relay.\n\n\
Events: with --format json they go to each -o (standard output when none); with the text \
report they go only to the -o given.\n\n\
Exit status: 0 nothing found; 1 a QMTP/QMQP service that is not --sanctioned, or an open \
relay; 2 error (bad target or flag, unusable --source, unwritable output)."
)]
struct CheckArgs {
    /// What to check (see below).
    #[arg(required = true, value_name = "TARGET")]
    targets: Vec<String>,
    /// Ports checked on a target named without one, comma-separated.
    #[arg(long, default_value = "209,628", value_name = "PORTS")]
    ports: String,
    /// Also try to relay one message through each QMTP/QMQP service found.
    #[arg(long)]
    relay_test: bool,
    /// The relay test's recipient (default relay-test@qmwatch-check.invalid,
    /// which cannot be delivered). Must not be in a --local-domain.
    #[arg(long, value_name = "ADDRESS")]
    relay_recipient: Option<String>,
    /// Local address every connection is made from (the test runs "from a
    /// different network" where this host has one).
    #[arg(long, value_name = "ADDR")]
    source: Option<String>,
    /// Wait for a connection to be accepted (e.g. 3s, 500ms).
    #[arg(long, default_value = "3s", value_name = "DURATION", value_parser = check::parse_timeout)]
    connect_timeout: Duration,
    /// Wait for a server that speaks first (an SMTP banner, Postfix qmqpd
    /// refusing this client after its 1 s error delay).
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = check::parse_timeout)]
    greeting_wait: Duration,
    /// Wait for the answer to each request.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = check::parse_timeout)]
    read_timeout: Duration,
    /// Ports checked at once.
    #[arg(long, default_value_t = check::DEFAULT_CONCURRENCY as u64, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=256))]
    concurrency: u64,
    /// Distinct addresses a check may contact, at most.
    #[arg(long, default_value_t = 256, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=65_536))]
    max_targets: u64,
    /// `text`: a report on standard output; `json`: the events as JSON
    /// lines (to --output, standard output by default).
    // The audit's Format also has `html`, which a check does not write.
    #[arg(
        long,
        default_value = "text",
        value_parser = clap::builder::PossibleValuesParser::new(["text", "json"])
            .map(|s| if s == "json" { Format::Json } else { Format::Text })
    )]
    format: Format,
    #[command(flatten)]
    outputs: OutputArgs,
    #[command(flatten)]
    policy: PolicyArgs,
}

/// A percentage, 0 to 100.
fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("not a percentage: {s:?} (0 to 100)")),
    }
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
    // `qmwatch generate-assets DIR` (packaging) is kept out of the parser
    // so that it shows in no man page, help or completion.
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == "generate-assets") {
        return match (args.next(), args.next()) {
            (Some(dir), None) => generate_assets(std::path::Path::new(&dir)),
            _ => exit::fail("usage: qmwatch generate-assets DIR"),
        };
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return exit::clap_error(e, &Cli::command()),
    };
    match cli.command {
        Command::Replay(a) => run_replay(a),
        Command::Audit(a) => run_audit(a),
        Command::Live(a) => run_live(*a),
        Command::Check(a) => match run_check(*a) {
            Ok(code) => ExitCode::from(code),
            Err(e) => exit::fail(&e),
        },
    }
}

/// `qmwatch check`: everything that can be wrong with the command line is
/// found before the first connection.
fn run_check(a: CheckArgs) -> Result<u8, String> {
    let policy = check::check_policy(a.policy.build()?);
    let ports = check_target::parse_ports(&a.ports)?;
    let source = match &a.source {
        Some(s) => Some(
            s.trim_matches(['[', ']'])
                .parse::<IpAddr>()
                .map_err(|_| format!("--source {s:?}: not an IP address"))?,
        ),
        None => None,
    };
    let recipient = a
        .relay_recipient
        .clone()
        .unwrap_or_else(|| check::wire::DEFAULT_RELAY_RECIPIENT.to_string());
    check::check_recipient(&recipient, &policy)?;
    if let Some(src) = source {
        check_net::check_source(src)?;
    }
    let jobs = check_target::expand(&a.targets, &ports, a.max_targets as usize, source)?;
    let observer = Observer::from_system();
    // Outputs are opened before anything is sent: an unwritable file is an
    // error with nothing done.
    let events_wanted = a.format == Format::Json || !a.outputs.output.is_empty();
    let mut sinks = None;
    if events_wanted {
        let destinations = a.outputs.destinations(observer.clone(), false)?;
        sinks = Some(qmwatch_sensor::sink::Sinks::start(destinations.outputs)?);
    }
    let cfg = check::Config {
        timeouts: check::Timeouts {
            connect: a.connect_timeout,
            greeting: a.greeting_wait,
            read: a.read_timeout,
        },
        source,
        relay_test: a.relay_test,
        relay_recipient: recipient,
        concurrency: a.concurrency as usize,
        hostname: observer.hostname.clone(),
    };
    let run_ns = check::now_ns();
    let reports = check::run(&jobs, &cfg, &policy)?;
    if a.format == Format::Text {
        print!("{}", check_report::text(&reports, &cfg, &policy));
    } else {
        // The report is not on the terminal: one line per target that
        // could not be reached.
        for r in reports.iter().filter(|r| r.finding.unreached()) {
            eprintln!("qmwatch: {}: {}", r.job.addr, r.detail);
        }
    }
    if let Some((sinks, mut fanout)) = sinks {
        let mut events = check_report::events(&reports, &policy, &observer, run_ns);
        fanout.send_events(&mut events);
        drop(fanout);
        for s in sinks.finish() {
            if let Some(e) = s.error {
                return Err(format!("output {}: {e}", s.output));
            }
        }
    }
    Ok(check::exit_status(&reports))
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
    /// No note on standard error before the run.
    quiet: bool,
    engine: &'a EngineArgs,
    policy: &'a PolicyArgs,
    alert_window_ns: Option<u64>,
    block_size: usize,
    access: FileAccess,
    decode_in: DecodeIn,
    stats_interval_ns: Option<u64>,
}

fn start(run: Run<'_>) -> Result<RunReport, String> {
    let policy = run.policy.build()?;
    let stop = stop_flag()?;
    let observer = Observer::from_system();
    let destinations = match run.outputs {
        Some(o) => o.destinations(observer, false)?,
        None => Destinations::single(Output::Discard),
    };
    let opts = RunOptions {
        stats_interval: run.stats_interval_ns.map(Duration::from_nanos),
        ..RunOptions::default()
    };
    let workers = run.engine.workers_here(run.quiet);
    let cfg = ReplayConfig {
        files: run.files,
        workers,
        flow: run.engine.flow(),
        block_size: run.block_size,
        access: run.access,
        policy: Arc::new(policy),
        alert_window_ns: run.alert_window_ns,
        defer: run.decode_in.into(),
    };
    let progress: Option<Box<dyn Progress>> = if run.progress {
        Some(Box::new(progress::Bar::new()))
    } else {
        None
    };
    replay(cfg, destinations, opts, progress, stop)
}

fn run_replay(a: ReplayArgs) -> ExitCode {
    let progress = !a.quiet && std::io::stderr().is_terminal();
    match start(Run {
        files: a.files,
        outputs: Some(&a.outputs),
        progress,
        quiet: a.quiet,
        engine: &a.engine,
        policy: &a.policy,
        alert_window_ns: a.alert_window,
        block_size: a.block_size as usize,
        access: match (a.mmap, a.no_mmap) {
            (true, _) => FileAccess::Map,
            (_, true) => FileAccess::Read,
            _ => FileAccess::Auto,
        },
        decode_in: a.decode_in,
        stats_interval_ns: a.stats_interval,
    }) {
        Ok(report) => exit::finish_run(&report, a.quiet),
        Err(e) => exit::fail(&e),
    }
}

fn run_audit(a: AuditArgs) -> ExitCode {
    let policy_text = match a.policy.build() {
        Ok(p) => p.describe(),
        Err(e) => return exit::fail(&e),
    };
    // The report file is opened before anything is read, so that a path
    // that cannot be written fails at once; it is emptied only when the
    // report is written (`-o capture.pcap` by mistake loses nothing).
    let existed = a
        .output
        .as_ref()
        .is_some_and(|p| std::fs::metadata(p).is_ok());
    let mut out_file = match &a.output {
        Some(p) => match std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
        {
            Ok(f) => Some(f),
            Err(e) => return exit::fail(&format!("{p}: cannot write the report: {e}")),
        },
        None => None,
    };
    let files = a.files.clone();
    let report = match start(Run {
        files: a.files,
        outputs: None,
        progress: false,
        quiet: true,
        engine: &a.engine,
        policy: &a.policy,
        alert_window_ns: None,
        block_size: 1 << 20,
        access: FileAccess::Auto,
        decode_in: DecodeIn::Auto,
        stats_interval_ns: None,
    }) {
        Ok(r) => r,
        Err(e) => return exit::fail(&e),
    };
    if exit::nothing_read(&report) {
        // No report of nothing: an empty report file would read as clean.
        if let (Some(p), false) = (&a.output, existed) {
            drop(out_file.take());
            let _ = std::fs::remove_file(p);
        }
        exit::report_errors(&report.errors, false);
        return ExitCode::from(exit::FAILURE);
    }
    let text = audit::render(&report, &files, &policy_text, a.format);
    let written = match (&mut out_file, &a.output) {
        (Some(f), Some(p)) => f
            .set_len(0)
            .and_then(|()| f.write_all(text.as_bytes()))
            .and_then(|()| f.flush())
            .map_err(|e| format!("{p}: cannot write the report: {e}")),
        _ => {
            let mut o = std::io::stdout().lock();
            o.write_all(text.as_bytes())
                .and_then(|()| o.flush())
                .map_err(|e| format!("standard output: {e}"))
        }
    };
    exit::report_errors(&report.errors, true);
    if let Err(e) = written {
        return exit::fail(&e);
    }
    ExitCode::from(audit::exit_status(&report))
}

/// `qmwatch generate-assets DIR`: DIR/man/*.1 (clap_mangen) and
/// DIR/completions/{qmwatch.bash,_qmwatch,qmwatch.fish} (clap_complete),
/// made from the parser of this very binary; `debian/build-deb` runs it.
fn generate_assets(dir: &std::path::Path) -> ExitCode {
    let man = dir.join("man");
    let comp = dir.join("completions");
    let made = std::fs::create_dir_all(&man)
        .and_then(|()| std::fs::create_dir_all(&comp))
        .and_then(|()| clap_mangen::generate_to(Cli::command(), &man));
    if let Err(e) = made {
        return exit::fail(&format!("{}: {e}", dir.display()));
    }
    use clap_complete::Shell;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = Cli::command();
        if let Err(e) = clap_complete::generate_to(shell, &mut cmd, "qmwatch", &comp) {
            return exit::fail(&format!("{}: {e}", comp.display()));
        }
    }
    ExitCode::SUCCESS
}

#[cfg(not(feature = "live"))]
fn run_live(_: LiveArgs) -> ExitCode {
    exit::fail("this build has no live capture: rebuild with `--features live` (needs libpcap-dev)")
}

#[cfg(feature = "live")]
fn run_live(a: LiveArgs) -> ExitCode {
    match live(a) {
        Ok(code) => code,
        Err(e) => exit::fail(&e),
    }
}

/// `qmwatch live`: open the interface, drop root, run until a stop signal.
#[cfg(feature = "live")]
fn live(a: LiveArgs) -> Result<ExitCode, String> {
    use qmwatch_sensor::pipeline::live::LiveSource;
    use qmwatch_sensor::pipeline::{run, Engine, LossThreshold};
    use qmwatch_wire::capture::live::{self as cap, LiveOptions};

    let policy = a.policy.build()?;
    let filter = a.filter.join(" ");
    let opts = LiveOptions {
        promisc: !a.no_promisc,
        snaplen: a.snaplen,
        buffer_bytes: a.buffer_size.saturating_mul(1 << 20),
        timeout_ms: a.timeout,
        immediate: a.immediate,
        filter: (!filter.trim().is_empty()).then_some(filter),
        ..LiveOptions::new(&a.interface)
    };
    // Each handle of a fanout feeds a worker of its own: all run.
    let workers = if a.fanout {
        usize::from(a.engine.workers)
    } else {
        a.engine.workers_here(a.quiet)
    };
    let handles = cap::open(&opts, if a.fanout { workers } else { 1 })?;
    if let Some(user) = &a.user {
        crate::privileges::drop_to(user)?;
    }
    let stop = stop_flag()?;
    // SIGHUP must never end a sensor: it reopens file outputs, and is
    // ignored when there is none.
    signal_hook::flag::register(
        signal_hook::consts::SIGHUP,
        Arc::new(AtomicBool::new(false)),
    )
    .map_err(|e| format!("cannot install SIGHUP handler: {e}"))?;
    let mut observer = Observer::from_system();
    observer.ingress_interface = Some(a.interface.clone());
    let destinations = a.outputs.destinations(observer, true)?;
    let engine = Engine {
        workers,
        flow: a.engine.flow(),
        policy: Arc::new(policy),
        alert_window_ns: a.alert_window,
    };
    let run_opts = RunOptions {
        stats_interval: Some(Duration::from_nanos(a.stats_interval)),
        queue_batches: a.queue_batches as usize,
        capture_loss: LossThreshold {
            percent: a.capture_loss_threshold,
            ..LossThreshold::default()
        },
        idle_alarm: Some(Duration::from_nanos(a.idle_alarm)),
    };
    if !a.quiet {
        let lt = handles.first().map(|h| h.link_type()).unwrap_or(0);
        eprintln!(
            "qmwatch: capturing on {} (link type {}, {} capture handle{}, {} worker{}); SIGINT/SIGTERM stops, SIGHUP reopens output files",
            a.interface,
            qmwatch_wire::capture::file::link_type_name(lt).unwrap_or("?"),
            handles.len(),
            if handles.len() == 1 { "" } else { "s" },
            workers,
            if workers == 1 { "" } else { "s" },
        );
    }
    let source = LiveSource::new(handles, Duration::from_millis(u64::from(a.timeout)));
    let report = run(engine, destinations, run_opts, Box::new(source), stop)?;
    Ok(exit::finish_run(&report, a.quiet))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(args: &[&str]) -> EngineArgs {
        let argv = ["qmwatch", "replay"].iter().chain(args).chain(&["x.pcap"]);
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Replay(r)) => r.engine,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn workers_run_one_per_cpu_beside_the_capture_thread() {
        // (asked, CPUs, running)
        for (asked, cpus, want) in [
            (1, 1, 1),
            (1, 8, 1),
            (2, 2, 1),
            (2, 3, 2),
            (4, 8, 4),
            (8, 4, 3),
            (3, 1, 1),
        ] {
            let e = engine(&["--workers", &asked.to_string()]);
            assert_eq!(e.workers_to_run(cpus), want, "{asked} asked, {cpus} CPUs");
            assert_eq!(e.fewer_workers_note(want, cpus).is_some(), want < asked);
            let all = engine(&["--workers", &asked.to_string(), "--oversubscribe"]);
            assert_eq!(
                all.workers_to_run(cpus),
                asked,
                "{asked} asked, oversubscribed"
            );
        }
    }
}
