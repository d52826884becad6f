//! The end-of-run summary printed on standard error.

use super::ReplayReport;

impl ReplayReport {
    /// The end-of-run summary, for stderr (without the errors).
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let secs = self.wall.as_secs_f64().max(1e-9);
        let d = &self.decode;
        let _ = writeln!(s, "qmwatch {} summary", self.mode);
        let _ = writeln!(
            s,
            "  packets {}  bytes {}  tcp segments {}  workers {}",
            d.frames, d.bytes, d.tcp_segments, self.workers
        );
        let _ = writeln!(
            s,
            "  wall {:.3} s  {:.3} Gbit/s  {:.0} packets/s{}",
            secs,
            d.bytes as f64 * 8.0 / secs / 1e9,
            d.frames as f64 / secs,
            if self.mode == "replay" {
                format!("  (capture file bytes {})", self.capture_bytes)
            } else {
                String::new()
            }
        );
        let c = &self.capture;
        if self.mode != "replay" {
            let _ = writeln!(
                s,
                "  capture: kernel drops {}  interface drops {}  queue drops {} (in {} batches)",
                c.kernel_drops, c.interface_drops, c.queue_drops, c.queue_dropped_batches
            );
        }
        let f = &self.flows;
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
        let _ = writeln!(
            s,
            "  flows {} (candidates {}, rejected as not QMTP/QMQP {}, closed {}, timed out {}, evicted at cap {}, peak tracked {})",
            f.flows_created, f.flows_candidate, f.flows_rejected, f.flows_closed, f.flows_timed_out, f.flows_evicted_cap, f.flows_peak
        );
        let sess: Vec<String> = self
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
        let ev: Vec<String> = self
            .detect
            .events_by_dataset
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            s,
            "  events {}: {}",
            self.sink.lines,
            if ev.is_empty() {
                "none".into()
            } else {
                ev.join(", ")
            }
        );
        for o in &self.outputs {
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
        let mut skipped: Vec<String> = qmwatch_wire::decode::Skip::ALL
            .iter()
            .filter(|k| d.skipped(**k) > 0)
            .map(|k| format!("{} {}", k.name(), d.skipped(*k)))
            .collect();
        let r = &self.reader;
        for (name, n) in [
            (
                "unsupported_link_type_interface",
                r.skipped_unsupported_link,
            ),
            ("pcapng_unknown_block", r.skipped_unknown_blocks),
            ("pcapng_bad_interface", r.skipped_bad_interface),
            ("zero_length_packet", r.zero_length_packets),
            ("snaplen_truncated_packet", r.truncated_packets),
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
        ] {
            if n > 0 {
                skipped.push(format!("{name} {n}"));
            }
        }
        let _ = writeln!(
            s,
            "  skipped/dropped: {}",
            if skipped.is_empty() {
                "nothing".into()
            } else {
                skipped.join(", ")
            }
        );
        let _ = writeln!(
            s,
            "  reassembly held bytes peak {}  session state bytes peak {}",
            f.held_bytes_peak, f.session_bytes_peak
        );
        let h = &self.ns_per_packet;
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
        if self.interrupted {
            let _ = writeln!(
                s,
                "  interrupted: input not read to the end; all pending events were written"
            );
        }
        // Errors are not part of the summary: `exit::finish_run` prints each
        // on its own `qmwatch: error:` line after it.
        s
    }
}
