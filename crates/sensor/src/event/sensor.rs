//! Events about the sensor itself: the `qmwatch.stats` metric and the
//! `capture_loss`, `capture_silent` and `capture_resumed` anomalies.
//!
//! Owns: their envelopes and ids (named by the run: host, interface, start,
//! sequence number). Must not: carry a flow, or judge the numbers (the
//! pipeline decides when loss or silence is worth an event).

use serde_json::Value;

use super::typed::{
    AnomalyFields, CaptureLossFields, CaptureLossQmwatch, Ecs, EventFields, ObserverFields,
    SensorEvent, SilenceFields, SilenceQmwatch, StatsQmwatch,
};
use super::{rfc3339, stable_id, Event, DATASET_ANOMALY, DATASET_STATS, ECS_VERSION};

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

/// The envelope of an event about the sensor: `@timestamp`, `ecs`,
/// `event` (kind, dataset, action and the run's id), `message`, `observer`.
fn envelope<Q>(
    ts: u64,
    kind: &'static str,
    dataset: &'static str,
    action: &'static str,
    id: String,
    message: String,
    qmwatch: Q,
) -> SensorEvent<Q> {
    let anomaly = dataset == DATASET_ANOMALY;
    SensorEvent {
        timestamp: rfc3339(ts),
        ecs: Ecs {
            version: ECS_VERSION,
        },
        event: EventFields {
            action,
            category: if anomaly {
                &["network", "intrusion_detection"]
            } else {
                &["network"]
            },
            dataset,
            id,
            kind,
            module: "qmwatch",
            outcome: None,
            severity: None,
            types: &["info"],
        },
        message,
        observer: ObserverFields {
            hostname: None,
            ingress: None,
            product: "qmwatch",
            kind: "sensor",
            vendor: "qmwatch",
            version: env!("CARGO_PKG_VERSION"),
        },
        qmwatch,
    }
}

/// A `qmwatch.stats` metric event: the sensor's health at wall time `ts`.
/// `stats` is the `qmwatch.stats` object (documented in docs/events.md).
pub fn stats(ts: u64, run: &RunId, seq: u64, message: String, stats: Value) -> Event {
    let id = run.id(DATASET_STATS, seq);
    let q = StatsQmwatch { stats };
    Event::Stats(Box::new(envelope(
        ts,
        "metric",
        DATASET_STATS,
        "stats",
        id,
        message,
        q,
    )))
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
pub fn capture_loss(ts: u64, run: &RunId, seq: u64, l: &CaptureLoss) -> Event {
    let kind = "capture_loss";
    let detail = format!(
        "{:.2} % of the TCP bytes acknowledged in the last {:.1} s were never captured ({} of {} bytes; threshold {} %): the sensor is blind to part of the traffic",
        l.percent, l.interval_seconds, l.gap_bytes, l.acked_bytes, l.threshold_percent
    );
    let message = format!("Anomaly {kind}: {detail}");
    let q = CaptureLossQmwatch {
        anomaly: AnomalyFields { detail, kind },
        capture_loss: CaptureLossFields {
            acked_bytes: l.acked_bytes,
            gap_bytes: l.gap_bytes,
            interval_seconds: l.interval_seconds,
            percent: l.percent,
            threshold_percent: l.threshold_percent,
        },
    };
    let id = run.id(kind, seq);
    let e = envelope(ts, "event", DATASET_ANOMALY, kind, id, message, q);
    Event::CaptureLoss(Box::new(e))
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
pub fn capture_silence(ts: u64, run: &RunId, seq: u64, resumed: bool, s: &Silence) -> Event {
    let kind = if resumed {
        "capture_resumed"
    } else {
        "capture_silent"
    };
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
    let message = format!("Anomaly {kind}: {detail}");
    let q = SilenceQmwatch {
        anomaly: AnomalyFields { detail, kind },
        capture_silence: SilenceFields {
            idle_alarm_seconds: s.idle_alarm_seconds,
            last_packet: s.last_packet_ns.map(rfc3339),
            silent_seconds: s.silent_seconds,
        },
    };
    let id = run.id(kind, seq);
    let e = envelope(ts, "event", DATASET_ANOMALY, kind, id, message, q);
    Event::CaptureSilence(Box::new(e))
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
            stats(1, run, 3, String::new(), serde_json::json!({}))
                .id()
                .to_string()
        };
        assert_eq!(id(&run), "8aba0a957df103a7c026ace540cd74ae");
        run.interface = None;
        assert_eq!(id(&run), "03b26ff14bc897f447d1c7f3da3ec53f");
    }

    /// The typed sensor events write what their JSON objects would (fields
    /// in sorted order; a float that is not finite is `null` either way).
    #[test]
    fn typed_sensor_events_write_what_their_objects_would() {
        let run = RunId {
            hostname: "sensor-1".into(),
            interface: Some("eth\u{e9}".into()),
            started_ns: 7,
        };
        let loss = CaptureLoss {
            percent: 12.5,
            acked_bytes: 1000,
            gap_bytes: 125,
            threshold_percent: 5.0,
            interval_seconds: f64::NAN,
        };
        let quiet = |last| Silence {
            idle_alarm_seconds: 60.0,
            silent_seconds: 61.25,
            last_packet_ns: last,
        };
        let stats_object = serde_json::json!({"b": [1.5, null], "a": {"z": 1, "y": "\u{7f}"}});
        let events = [
            stats(1, &run, 1, "m".into(), stats_object),
            capture_loss(2, &run, 2, &loss),
            capture_silence(3, &run, 3, false, &quiet(None)),
            capture_silence(4, &run, 4, true, &quiet(Some(1_795_000_000_000_000_000))),
        ];
        for e in events {
            let line = e.to_json_line();
            assert_eq!(line, e.to_object_line());
            assert!(line.is_some_and(|l| l.is_ascii() && l.starts_with("{\"@timestamp\"")));
        }
    }
}
