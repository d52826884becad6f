//! The end-of-run summary printed on standard error.
//!
//! Owns: the wording and order of the summary's lines, made from a
//! [`RunReport`]: throughput (and how a replay read its capture files:
//! mapped or copied, and the probe's figures), capture drops and loss,
//! flows, sessions and events, each output, everything skipped or dropped
//! (by a stable snake_case name), memory peaks and worker time.
//!
//! Must not: count anything itself (the pipeline does), or print the
//! errors (`exit::finish_run` prints each on its own line after it).

use std::fmt::Write as _;

use qmwatch_sensor::pipeline::{Mode, RunReport};
use qmwatch_wire::decode::Skip;

/// The end-of-run summary, for stderr (without the errors).
pub fn summary(r: &RunReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "qmwatch {} summary", r.mode.as_str());
    throughput(&mut s, r);
    capture(&mut s, r);
    flows_and_events(&mut s, r);
    outputs(&mut s, r);
    let skipped = skipped(r);
    let _ = writeln!(
        s,
        "  skipped/dropped: {}",
        if skipped.is_empty() {
            "nothing".into()
        } else {
            skipped.join(", ")
        }
    );
    peaks_and_timing(&mut s, r);
    if r.interrupted {
        let _ = writeln!(
            s,
            "  interrupted: input not read to the end; all pending events were written"
        );
    }
    s
}

/// Packets, bytes and workers; wall time and rates (and, for a replay, the
/// capture file bytes).
fn throughput(s: &mut String, r: &RunReport) {
    let secs = r.wall.as_secs_f64().max(1e-9);
    let d = &r.decode;
    let _ = writeln!(
        s,
        "  packets {}  bytes {}  tcp segments {}  workers {}",
        d.frames, d.bytes, d.tcp_segments, r.workers
    );
    let _ = writeln!(
        s,
        "  wall {:.3} s  {:.3} Gbit/s  {:.0} packets/s{}",
        secs,
        d.bytes as f64 * 8.0 / secs / 1e9,
        d.frames as f64 / secs,
        if r.mode == Mode::Replay {
            format!("  (capture file bytes {})", r.capture_bytes)
        } else {
            String::new()
        }
    );
    if r.mode == Mode::Replay {
        file_access(s, r);
    }
}

/// How a replay read its files: mapped or copied, and, when the cheaper
/// way was measured, the figures it was chosen on.
fn file_access(s: &mut String, r: &RunReport) {
    let a = &r.file_access;
    let _ = write!(s, "  capture files: mapped {}, read {}", a.mapped, a.read);
    if let Some(p) = a.probe {
        let (read, map) = p.per_mib_us();
        let _ = write!(
            s,
            " (probe: reading {read:.0} us/MiB, mapping {map:.0} us/MiB: {})",
            if p.prefers_map() { "mapped" } else { "read" }
        );
    }
    let _ = writeln!(s);
}

/// Live capture's drops (a replay drops nothing), and the capture loss
/// estimate from unseen acknowledged bytes.
fn capture(s: &mut String, r: &RunReport) {
    let c = &r.capture;
    if r.mode != Mode::Replay {
        let _ = writeln!(
            s,
            "  capture: kernel drops {}  interface drops {}  queue drops {} (in {} batches)",
            c.kernel_drops, c.interface_drops, c.queue_drops, c.queue_dropped_batches
        );
    }
    let f = &r.flows;
    let _ = writeln!(
        s,
        "  capture loss estimate: {} (unseen {} of {} acknowledged TCP bytes)",
        match f.capture_loss_percent() {
            Some(p) => format!("{p:.2} %"),
            None => "n/a".to_string(),
        },
        f.loss_gap_bytes,
        f.loss_acked_bytes
    );
}

/// Flows by fate, confirmed sessions by protocol, events by dataset.
fn flows_and_events(s: &mut String, r: &RunReport) {
    let f = &r.flows;
    // `peak tracked` is the sum of the workers' peaks (see `RunReport::flows`).
    let _ = writeln!(
        s,
        "  flows {} (candidates {}, rejected as not QMTP/QMQP {}, closed {}, reopened {}, timed out {}, evicted at cap {}, peak tracked {})",
        f.flows_created, f.flows_candidate, f.flows_rejected, f.flows_closed, f.flows_reopened, f.flows_timed_out, f.flows_evicted_cap, f.flows_peak
    );
    let sess: Vec<String> = r
        .detect
        .sessions_by_protocol
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(
        s,
        "  confirmed sessions: {}",
        if sess.is_empty() {
            "none".into()
        } else {
            sess.join(", ")
        }
    );
    let ev: Vec<String> = r
        .detect
        .events_by_dataset
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(
        s,
        "  events {}: {}",
        r.sink.lines,
        if ev.is_empty() {
            "none".into()
        } else {
            ev.join(", ")
        }
    );
}

/// One line per output: written, dropped and why, outages, queue peak,
/// rotations and reopens.
fn outputs(s: &mut String, r: &RunReport) {
    for o in &r.outputs {
        let _ = writeln!(
            s,
            "  output {}: written {}, dropped {} (queue full {}, undeliverable {}), outages {}{}, queue peak {}{}{}",
            o.output,
            o.written,
            o.dropped(),
            o.dropped_queue_full,
            o.dropped_undeliverable,
            o.outages,
            if o.outages > 0 {
                format!(" ({} dropped during them)", o.dropped_in_outages)
            } else {
                String::new()
            },
            o.queue_peak,
            if o.rotations > 0 { format!(", rotations {}", o.rotations) } else { String::new() },
            if o.reopens > 0 { format!(", reopens {}", o.reopens) } else { String::new() },
        );
    }
}

/// Every nonzero count of something skipped or dropped, as `name count`:
/// the decoder's skips, then the reader's, the flows' and reassembly's,
/// then detection's, in a fixed order.
fn skipped(r: &RunReport) -> Vec<String> {
    let d = &r.decode;
    let f = &r.flows;
    let rd = &r.reader;
    let mut skipped: Vec<String> = Skip::ALL
        .iter()
        .filter(|k| d.skipped(**k) > 0)
        .map(|k| format!("{} {}", k.name(), d.skipped(*k)))
        .collect();
    for (name, n) in [
        (
            "unsupported_link_type_interface",
            rd.skipped_unsupported_link,
        ),
        ("pcapng_unknown_block", rd.skipped_unknown_blocks),
        ("pcapng_bad_interface", rd.skipped_bad_interface),
        ("zero_length_packet", rd.zero_length_packets),
        ("snaplen_truncated_packet", rd.truncated_packets),
        ("packet_without_flow", f.packets_without_flow),
        ("tcp_bad_checksum_dropped", f.bad_checksum_dropped),
        ("sessions_dropped_memory_cap", f.sessions_dropped_memcap),
        (
            "known_servers_not_remembered",
            f.known_servers_not_remembered,
        ),
        (
            "directions_with_offloaded_checksums",
            f.directions_checksum_offloaded,
        ),
        ("ip_fragment_overlap_conflict", d.fragments_conflicting),
        ("ip_tiny_fragment_datagrams", d.fragments_tiny),
        ("ip_fragment_datagrams_lost", d.fragment_datagrams_lost),
        (
            "ip_fragment_losses_not_on_a_flow",
            d.fragment_losses_unreported,
        ),
        ("tcp_ttl_insertion_dropped", f.ttl_insertion_dropped),
        ("tcp_chaff_flags_dropped", f.chaff_flags_dropped),
        ("tcp_paws_dropped", f.paws_dropped),
        ("tcp_rst_out_of_window_dropped", f.rst_out_of_window_dropped),
        ("tcp_overlap_consistent", f.reassembly.overlaps_consistent),
        ("tcp_overlap_conflicting", f.reassembly.overlaps_conflicting),
        ("tcp_overlap_unverified", f.reassembly.overlaps_unverified),
        ("tcp_first_bytes_conflicts", f.first_bytes_conflicts),
        ("tcp_out_of_window", f.reassembly.out_of_window),
        ("tcp_gaps", f.reassembly.gaps),
        ("tcp_gap_bytes", f.reassembly.gap_bytes),
        ("reassembly_cap_gaps", f.reassembly.cap_gaps),
        ("replies_to_unseen_requests", f.replies_to_unseen_requests),
        (
            "unconfirmed_anomalies_dropped",
            f.anomalies_dropped_unconfirmed,
        ),
        (
            "unconfirmed_partial_requests_dropped",
            f.requests_dropped_unconfirmed,
        ),
        (
            "relay_alerts_unfolded_at_window_cap",
            r.detect.windows_dropped_cap,
        ),
        (
            "findings_out_of_capture_order",
            r.detect.findings_out_of_capture_order,
        ),
    ] {
        if n > 0 {
            skipped.push(format!("{name} {n}"));
        }
    }
    skipped
}

/// Memory peaks (each the sum of the workers' peaks: an upper bound, see
/// `RunReport::flows`) and the workers' time per packet.
fn peaks_and_timing(s: &mut String, r: &RunReport) {
    let f = &r.flows;
    let _ = writeln!(
        s,
        "  reassembly held bytes peak {}  session state bytes peak {}",
        f.held_bytes_peak, f.session_bytes_peak
    );
    let h = &r.ns_per_packet;
    if !h.is_empty() {
        let _ = writeln!(
            s,
            "  worker time per packet (ns, per-batch mean): p50 {} p99 {} max {} over {} batches",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max(),
            h.len()
        );
    }
}
