//! Events: the JSON objects qmwatch writes, in Elastic Common Schema names.
//!
//! Owns: the mapping from findings ([`crate::finding`]) to nested ECS 8.x
//! JSON, one object per line, ASCII only ([`json`]); packet-time timestamps
//! in RFC 3339 ([`time`]); the Community ID v1 of each flow
//! ([`community_id`]); the stable `event.id` of each finding ([`ids`]); the
//! `observer.*` fields ([`Observer`]). `docs/events.md` documents every field
//! and `docs/events.schema.json` is the JSON Schema every event meets.
//!
//! Must not: decide what is worth reporting, how severe it is, which rule it
//! matched or whether it is an alert (that is `detect`, which hands the
//! decisions over in the finding); import `detect` (the dependencies run
//! detect → event → finding, and detect → finding); write anything (that is
//! `sink`); or do any per-packet work: events are built once per finding.
//! Nothing in a finding may depend on wall-clock time or on thread
//! scheduling, so that a replay gives the same ids every time. The sensor's
//! own health — the `qmwatch.stats` metric and the `capture_loss` and
//! capture silence anomalies ([`sensor`]) — is about the run, not the
//! traffic: those carry wall-clock time and no flow.
//!
//! Every dataset is a typed record ([`typed`]), mapped by its own file
//! ([`service`], [`transaction`], [`relay`], [`probe`], [`anomaly`], and
//! [`sensor`] for the sensor's own); the active check's `qmwatch.check` is
//! a JSON object built with [`map`], since the binary assembles its fields.

mod anomaly;
mod community_id;
mod flow;
mod ids;
mod json;
mod map;
mod observer;
mod probe;
mod relay;
mod sensor;
mod service;
mod time;
mod transaction;
mod typed;

use serde_json::{Map, Value};

pub(crate) use anomaly::anomaly;
use community_id::community_id;
pub use ids::stable_id;
pub use map::{base, put_qmwatch, set_event};
pub use observer::Observer;
pub(crate) use probe::probe;
pub(crate) use relay::aggregate_relay;
pub use relay::relay;
pub use sensor::{capture_loss, capture_silence, stats, CaptureLoss, RunId, Silence};
pub use service::service;
pub use time::rfc3339;
pub use transaction::transaction;
pub use typed::{
    AnomalyEvent, CaptureLossEvent, ProbeEvent, RelayEvent, ServiceEvent, SilenceEvent, StatsEvent,
    TransactionEvent,
};

use typed::{EventFields, Ingress, Name, ObserverFields};

pub(crate) const DATASET_SERVICE: &str = "qmwatch.service";
pub(crate) const DATASET_TRANSACTION: &str = "qmwatch.transaction";
pub(crate) const DATASET_ANOMALY: &str = "qmwatch.anomaly";
pub(crate) const DATASET_RELAY: &str = "qmwatch.relay";
pub(crate) const DATASET_PROBE: &str = "qmwatch.probe";
pub(crate) const DATASET_STATS: &str = "qmwatch.stats";

/// The ECS version the events follow (`ecs.version`).
const ECS_VERSION: &str = "8.17.0";

/// One event, as the detector hands it to the outputs: a typed record per
/// dataset, or a JSON object (the active check's `qmwatch.check`, which the
/// binary assembles).
#[derive(Clone, Debug)]
pub enum Event {
    Object(Map<String, Value>),
    Service(Box<ServiceEvent>),
    Anomaly(Box<AnomalyEvent>),
    Probe(Box<ProbeEvent>),
    Transaction(Box<TransactionEvent>),
    Relay(Box<RelayEvent>),
    Stats(Box<StatsEvent>),
    CaptureLoss(Box<CaptureLossEvent>),
    CaptureSilence(Box<SilenceEvent>),
}

/// `$typed` for a typed event (bound to `$e`, whatever its `qmwatch`
/// fields), `$object` for a JSON object (bound to `$m`).
macro_rules! each {
    ($event:expr, $e:ident => $typed:expr, $m:ident => $object:expr) => {
        match $event {
            Event::Object($m) => $object,
            Event::Service($e) => $typed,
            Event::Anomaly($e) => $typed,
            Event::Probe($e) => $typed,
            Event::Transaction($e) => $typed,
            Event::Relay($e) => $typed,
            Event::Stats($e) => $typed,
            Event::CaptureLoss($e) => $typed,
            Event::CaptureSilence($e) => $typed,
        }
    };
}

impl Event {
    /// Adds the `observer.*` fields of `o` (host name, interface).
    pub fn stamp(&mut self, o: &Observer) {
        let fields = each!(self, e => &mut e.observer, m => return o.stamp(m));
        stamp_fields(fields, o);
    }

    /// Sets `observer.type` (the active check's events say `active_check`).
    pub fn set_observer_type(&mut self, kind: &'static str) {
        each!(self, e => e.observer.kind = kind, m => {
            if let Some(Value::Object(o)) = m.get_mut("observer") {
                o.insert("type".into(), Value::String(kind.into()));
            }
        })
    }

    /// One JSON line (no newline), ASCII only ([`json`]).
    pub(crate) fn to_json_line(&self) -> Option<String> {
        each!(self, e => json::line(e), m => json::line(m))
    }

    /// The event as a JSON object.
    #[cfg(test)]
    pub(crate) fn into_object(self) -> Map<String, Value> {
        let v = each!(self, e => serde_json::to_value(e), m => return m);
        match v {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    /// `event.<key>` of an object event.
    fn object_event_field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
        m.get("event").and_then(|e| e.get(key))
    }

    /// `event.<key>`, a string: from the object, or by `typed` from a
    /// typed event's fields.
    fn event_str(&self, key: &str, typed: fn(&EventFields) -> &str) -> &str {
        each!(self, e => typed(&e.event), m => Self::object_event_field(m, key)
            .and_then(Value::as_str)
            .unwrap_or(""))
    }

    /// `event.dataset`.
    pub fn dataset(&self) -> &str {
        self.event_str("dataset", |e| e.dataset)
    }

    /// `event.kind`.
    pub fn kind(&self) -> &str {
        self.event_str("kind", |e| e.kind)
    }

    /// `event.id`.
    pub fn id(&self) -> &str {
        self.event_str("id", |e| &e.id)
    }

    /// Sets `event.id`.
    pub fn set_id(&mut self, id: String) {
        each!(self, e => e.event.id = id, m => set_event(m, "id", Value::String(id)))
    }

    /// `event.severity`, when the event has one.
    pub fn severity(&self) -> Option<u64> {
        each!(self, e => e.event.severity, m => {
            Self::object_event_field(m, "severity").and_then(Value::as_u64)
        })
    }

    /// `@timestamp`.
    pub fn timestamp(&self) -> &str {
        each!(self, e => &e.timestamp, m => {
            m.get("@timestamp").and_then(Value::as_str).unwrap_or("")
        })
    }
}

/// The typed form of [`Observer::stamp`].
fn stamp_fields(fields: &mut ObserverFields, o: &Observer) {
    fields.hostname = Some(o.hostname.clone());
    fields.ingress = o.ingress_interface.as_ref().map(|i| Ingress {
        interface: Name { name: i.clone() },
    });
}

impl From<Map<String, Value>> for Event {
    fn from(m: Map<String, Value>) -> Self {
        Event::Object(m)
    }
}
