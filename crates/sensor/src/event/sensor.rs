//! Events about the sensor itself: the `qmwatch.stats` metric and the
//! `capture_loss`, `capture_silent` and `capture_resumed` anomalies.
//!
//! Owns: their envelopes and ids (named by the run: host, interface, start,
//! sequence number). Must not: carry a flow, or judge the numbers (the
//! pipeline decides when loss or silence is worth an event).

use serde_json::{json, Map, Value};

use super::map::{host_base, put_qmwatch, set_event};
use super::{rfc3339, stable_id, DATASET_ANOMALY, DATASET_STATS};

/// Which run a sensor event belongs to: host, interface, run start.
#[derive(Clone, Debug)]
pub struct RunId {
    pub hostname: String,
    pub interface: Option<String>,
    /// Wall-clock start of the run (ns since the epoch).
    pub started_ns: u64,
}

impl RunId {
    fn id(&self, dataset: &str, seq: u64) -> String {
        let (start, seq) = (self.started_ns.to_string(), seq.to_string());
        stable_id(&[
            dataset,
            &self.hostname,
            self.interface.as_deref().unwrap_or(""),
            &start,
            &seq,
        ])
    }
}

/// A `qmwatch.stats` metric event: the sensor's health at wall time `ts`.
/// `stats` is the `qmwatch.stats` object (documented in docs/events.md).
pub fn stats(ts: u64, run: &RunId, seq: u64, message: String, stats: Value) -> Map<String, Value> {
    let mut m = host_base(ts, "metric", DATASET_STATS, &["network"], &["info"]);
    set_event(&mut m, "action", json!("stats"));
    set_event(&mut m, "id", json!(run.id(DATASET_STATS, seq)));
    m.insert("message".into(), json!(message));
    put_qmwatch(&mut m, "stats", stats);
    m
}

/// What the capture-loss estimate measured over one interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CaptureLoss {
    pub percent: f64,
    pub acked_bytes: u64,
    pub gap_bytes: u64,
    pub threshold_percent: f64,
    pub interval_seconds: f64,
}

/// A `qmwatch.anomaly` with action `capture_loss`: the sensor is missing
/// traffic the hosts exchanged (no flow: it is about the sensor).
pub fn capture_loss(ts: u64, run: &RunId, seq: u64, l: &CaptureLoss) -> Map<String, Value> {
    let mut m = host_base(
        ts,
        "event",
        DATASET_ANOMALY,
        &["network", "intrusion_detection"],
        &["info"],
    );
    set_event(&mut m, "action", json!("capture_loss"));
    set_event(&mut m, "id", json!(run.id("capture_loss", seq)));
    let detail = format!(
        "{:.2} % of the TCP bytes acknowledged in the last {:.1} s were never captured ({} of {} bytes; threshold {} %): the sensor is blind to part of the traffic",
        l.percent, l.interval_seconds, l.gap_bytes, l.acked_bytes, l.threshold_percent
    );
    m.insert(
        "message".into(),
        json!(format!("Anomaly capture_loss: {detail}")),
    );
    put_qmwatch(
        &mut m,
        "anomaly",
        json!({"kind": "capture_loss", "detail": detail}),
    );
    put_qmwatch(
        &mut m,
        "capture_loss",
        json!({
            "percent": l.percent,
            "acked_bytes": l.acked_bytes,
            "gap_bytes": l.gap_bytes,
            "threshold_percent": l.threshold_percent,
            "interval_seconds": l.interval_seconds,
        }),
    );
    m
}

/// A silence of the capture (`--idle-alarm`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Silence {
    /// The alarm threshold, seconds.
    pub idle_alarm_seconds: f64,
    /// How long no packet came: up to now (`capture_silent`), or from the
    /// last packet before the silence to the first after it
    /// (`capture_resumed`).
    pub silent_seconds: f64,
    /// Wall-clock time (ns) of the last packet before the silence; `None`
    /// when none came since the start.
    pub last_packet_ns: Option<u64>,
}

/// A `qmwatch.anomaly` with action `capture_silent` (no packet for the
/// idle alarm: the mirror port may be gone) or, `resumed`, action
/// `capture_resumed` (packets again). About the sensor: no flow.
pub fn capture_silence(
    ts: u64,
    run: &RunId,
    seq: u64,
    resumed: bool,
    s: &Silence,
) -> Map<String, Value> {
    let kind = if resumed {
        "capture_resumed"
    } else {
        "capture_silent"
    };
    let mut m = host_base(
        ts,
        "event",
        DATASET_ANOMALY,
        &["network", "intrusion_detection"],
        &["info"],
    );
    set_event(&mut m, "action", json!(kind));
    set_event(&mut m, "id", json!(run.id(kind, seq)));
    let on = run
        .interface
        .as_deref()
        .map(|i| format!(" on {i}"))
        .unwrap_or_default();
    let detail = if resumed {
        format!(
            "packets again{on} after {:.1} s without any: the sensor sees traffic again",
            s.silent_seconds
        )
    } else {
        format!(
            "no packet{on} for {:.1} s (idle alarm {} s): the sensor is blind (a SPAN session removed, a cable or port down) or the network is quiet",
            s.silent_seconds, s.idle_alarm_seconds
        )
    };
    m.insert("message".into(), json!(format!("Anomaly {kind}: {detail}")));
    put_qmwatch(&mut m, "anomaly", json!({"kind": kind, "detail": detail}));
    put_qmwatch(
        &mut m,
        "capture_silence",
        json!({
            "idle_alarm_seconds": s.idle_alarm_seconds,
            "silent_seconds": s.silent_seconds,
            "last_packet": s.last_packet_ns.map(rfc3339),
        }),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensor_event_ids_name_the_run() {
        let mut run = RunId {
            hostname: "sensor-1.example.net".into(),
            interface: Some("eth1".into()),
            started_ns: 1_795_000_000_000_000_000,
        };
        let id = |run: &RunId| {
            let m = stats(1, run, 3, String::new(), json!({}));
            m["event"]["id"].as_str().unwrap().to_string()
        };
        assert_eq!(id(&run), "8aba0a957df103a7c026ace540cd74ae");
        run.interface = None;
        assert_eq!(id(&run), "03b26ff14bc897f447d1c7f3da3ec53f");
    }
}
