//! The idle alarm of live capture (`--idle-alarm`): a sensor that goes
//! blind says so.
//!
//! A SPAN session removed on the switch, a cable pulled or a mirror port
//! shut down look exactly like a quiet network: nothing arrives. When no
//! packet has come for the alarm's duration, one `capture_silent` anomaly
//! is written; when packets come again, one `capture_resumed`.
//!
//! Owns: watching the time of the latest packet the capture threads
//! published ([`CaptureCounters::last_packet_ns`], wall clock, one store
//! per block) from the detect thread, and when to look again.
//!
//! Must not: touch the capture threads' hot path beyond that one store, or
//! raise more than one alarm per silence.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{wall_ns, CaptureCounters};
use crate::detect::Detector;
use crate::event::{self, Event, RunId, Silence};

/// How often a silent capture is looked at for packets again.
const RESUME_POLL: Duration = Duration::from_millis(200);

pub(crate) struct IdleAlarm {
    idle: Duration,
    counters: Arc<CaptureCounters>,
    run: RunId,
    /// Wall clock (ns) from which silence counts when no packet came yet.
    started_ns: u64,
    /// While silent: the packet count and last packet when it was raised.
    silent: Option<(u64, Option<u64>)>,
    seq: u64,
    next: Instant,
}

impl IdleAlarm {
    pub fn new(idle: Duration, counters: Arc<CaptureCounters>, run: RunId) -> IdleAlarm {
        let idle = idle.max(Duration::from_millis(100));
        IdleAlarm {
            idle,
            counters,
            run,
            started_ns: wall_ns(),
            silent: None,
            seq: 0,
            next: Instant::now() + idle,
        }
    }

    /// When the detect thread must call [`IdleAlarm::check`] again.
    pub fn deadline(&self) -> Instant {
        self.next
    }

    fn last_packet(&self) -> Option<u64> {
        match self.counters.last_packet_ns.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// Raises or ends the alarm when due.
    pub fn check(&mut self, det: &mut Detector, out: &mut Vec<Event>) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        let packets = self.counters.packets.load(Ordering::Relaxed);
        let wall = wall_ns();
        let last = self.last_packet();
        match self.silent {
            Some((at_alarm, before)) => {
                if packets != at_alarm {
                    // The first packet after the silence is at most one
                    // block behind `last`.
                    let since = before.unwrap_or(self.started_ns);
                    let s = Silence {
                        idle_alarm_seconds: self.idle.as_secs_f64(),
                        silent_seconds: secs(last.unwrap_or(wall).saturating_sub(since)),
                        last_packet_ns: before,
                    };
                    self.emit(true, &s, wall, det, out);
                    self.silent = None;
                    self.next = now + self.idle;
                } else {
                    self.next = now + RESUME_POLL.min(self.idle);
                }
            }
            None => {
                let since = last.unwrap_or(self.started_ns);
                let quiet = Duration::from_nanos(wall.saturating_sub(since));
                if quiet >= self.idle {
                    let s = Silence {
                        idle_alarm_seconds: self.idle.as_secs_f64(),
                        silent_seconds: millis(quiet.as_secs_f64()),
                        last_packet_ns: last,
                    };
                    self.emit(false, &s, wall, det, out);
                    self.silent = Some((packets, last));
                    self.next = now + RESUME_POLL.min(self.idle);
                } else {
                    self.next = now + (self.idle - quiet);
                }
            }
        }
    }

    fn emit(
        &mut self,
        resumed: bool,
        s: &Silence,
        wall: u64,
        det: &mut Detector,
        out: &mut Vec<Event>,
    ) {
        self.seq += 1;
        let m = event::capture_silence(wall, &self.run, self.seq, resumed, s);
        det.emit_sensor(event::DATASET_ANOMALY, m, out);
    }
}

fn secs(ns: u64) -> f64 {
    millis(Duration::from_nanos(ns).as_secs_f64())
}

/// Seconds to the millisecond: the wall clock says no more.
fn millis(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::policy::PolicyBuilder;

    fn actions(out: &[Event]) -> Vec<String> {
        out.iter()
            .filter_map(|e| {
                let m = e.clone().into_object();
                m["event"]["action"].as_str().map(String::from)
            })
            .collect()
    }

    /// Calls `check` once its deadline has passed.
    fn check_when_due(a: &mut IdleAlarm, det: &mut Detector, out: &mut Vec<Event>) {
        while Instant::now() < a.deadline() {
            std::thread::sleep(Duration::from_millis(5));
        }
        a.check(det, out);
    }

    #[test]
    fn one_alarm_per_silence_and_one_when_packets_return() {
        let counters = Arc::new(CaptureCounters::default());
        let run = RunId {
            hostname: "sensor".into(),
            interface: Some("eth1".into()),
            started_ns: wall_ns(),
        };
        let mut det = Detector::new(Arc::new(PolicyBuilder::new().build()), None);
        let mut a = IdleAlarm::new(Duration::from_millis(100), Arc::clone(&counters), run);
        let mut out = Vec::new();
        // Traffic keeps it quiet.
        for _ in 0..3 {
            counters.packets.fetch_add(1, Ordering::Relaxed);
            counters.last_packet_ns.store(wall_ns(), Ordering::Relaxed);
            a.check(&mut det, &mut out);
        }
        assert!(out.is_empty());
        let last = counters.last_packet_ns.load(Ordering::Relaxed);
        check_when_due(&mut a, &mut det, &mut out);
        check_when_due(&mut a, &mut det, &mut out);
        check_when_due(&mut a, &mut det, &mut out);
        assert_eq!(actions(&out), ["capture_silent"]);
        counters.packets.fetch_add(1, Ordering::Relaxed);
        counters.last_packet_ns.store(wall_ns(), Ordering::Relaxed);
        check_when_due(&mut a, &mut det, &mut out);
        assert_eq!(actions(&out), ["capture_silent", "capture_resumed"]);
        let m = out[1].clone().into_object();
        let s = &m["qmwatch"]["capture_silence"];
        assert_eq!(s["last_packet"], crate::event::rfc3339(last));
        assert!(s["silent_seconds"].as_f64().unwrap_or(0.0) >= 0.1, "{s}");
    }
}
