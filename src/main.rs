//! The `qmwatch` command line.
#![deny(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use qmwatch::flow::FlowConfig;
use qmwatch::pipeline::{replay, ReplayConfig};
use qmwatch::sink::Output;

#[derive(Parser, Debug)]
#[command(
    name = "qmwatch",
    version,
    about = "Passive sensor for QMTP/QMQP mail services and relay attempts",
    long_about = "Passive sensor for QMTP/QMQP mail services and relay attempts.\n\n\
Reads capture files (pcap or pcapng), reassembles TCP, recognises QMTP and QMQP \
sessions on any port, and writes one JSON event per line (Elastic Common Schema names)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read capture files and write events as JSON lines.
    Replay(ReplayArgs),
}

#[derive(clap::Args, Debug)]
struct ReplayArgs {
    /// Capture files (pcap or pcapng), read in order; `-` reads standard input.
    #[arg(required = true, value_name = "CAPTURE")]
    files: Vec<String>,
    /// Where to write events (JSON lines, appended); `-` is standard output.
    #[arg(short, long, default_value = "-", value_name = "FILE")]
    output: String,
    /// Worker threads; each owns the flows that hash to it.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
    /// No progress bar and no summary on standard error.
    #[arg(short, long)]
    quiet: bool,
    /// Flows tracked at once (all workers together); the oldest idle flow is
    /// evicted, and counted, when full.
    #[arg(long, default_value_t = 1_000_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    max_flows: u64,
    /// Seconds (packet time) without a packet after which a flow is finished.
    #[arg(long, default_value_t = 600, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    flow_timeout: u64,
    /// Out-of-order bytes held for reassembly, all flows together (MiB).
    #[arg(long, default_value_t = 64, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=65_536))]
    reassembly_memory: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Replay(a) => run_replay(a),
    }
}

fn run_replay(a: ReplayArgs) -> ExitCode {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("qmwatch: cannot install signal handler: {e}");
            return ExitCode::from(2);
        }
    }
    let flow = FlowConfig {
        max_flows: a.max_flows as usize,
        idle_timeout_ns: a.flow_timeout * 1_000_000_000,
        held_bytes_cap: (a.reassembly_memory as usize).saturating_mul(1024 * 1024),
        ..FlowConfig::default()
    };
    let cfg = ReplayConfig {
        files: a.files,
        workers: usize::from(a.workers),
        output: Output::parse(&a.output),
        progress: !a.quiet && std::io::stderr().is_terminal(),
        flow,
        block_size: 1 << 20,
    };
    match replay(cfg, stop) {
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
