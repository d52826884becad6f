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
//! ([`service`], [`transaction`], [`relay`], [`probe`], [`anomaly`],
//! [`sensor`] for the sensor's own, and [`check`] for the active check's
//! `qmwatch.check`, whose `qmwatch.check.*` fields the binary fills).

mod anomaly;
mod check;
mod community_id;
mod flow;
mod ids;
mod json;
mod observer;
mod probe;
mod relay;
mod sensor;
mod service;
mod text;
mod time;
mod transaction;
mod typed;

pub(crate) use anomaly::anomaly;
pub use check::check;
use community_id::community_id;
pub use ids::stable_id;
pub(crate) use json::give_back;
pub use observer::Observer;
pub(crate) use probe::probe;
pub(crate) use relay::aggregate_relay;
pub use relay::relay;
pub use sensor::{capture_loss, capture_silence, stats, CaptureLoss, RunId, Silence};
pub use service::service;
pub use time::rfc3339;
pub use transaction::transaction;
pub use typed::{
    AnomalyEvent, CaptureLossEvent, CheckEvent, CheckFields, CheckProbe, ProbeEvent, RelayEvent,
    RelayTestFields, ReplyFields, ServiceEvent, SilenceEvent, StatsEvent, TransactionEvent,
};

use typed::{EventFields, Ingress, Name};

pub(crate) const DATASET_SERVICE: &str = "qmwatch.service";
pub(crate) const DATASET_TRANSACTION: &str = "qmwatch.transaction";
pub(crate) const DATASET_ANOMALY: &str = "qmwatch.anomaly";
pub(crate) const DATASET_RELAY: &str = "qmwatch.relay";
pub(crate) const DATASET_PROBE: &str = "qmwatch.probe";
pub(crate) const DATASET_STATS: &str = "qmwatch.stats";
/// The active check's dataset (the binary's `qmwatch check` names its ids
/// with it).
pub const DATASET_CHECK: &str = "qmwatch.check";

/// The ECS version the events follow (`ecs.version`).
const ECS_VERSION: &str = "8.17.0";

/// One event, as the detector (or the active check) hands it to the
/// outputs: a typed record per dataset.
#[derive(Clone, Debug)]
pub enum Event {
    Service(Box<ServiceEvent>),
    Anomaly(Box<AnomalyEvent>),
    Probe(Box<ProbeEvent>),
    Transaction(Box<TransactionEvent>),
    Relay(Box<RelayEvent>),
    Stats(Box<StatsEvent>),
    CaptureLoss(Box<CaptureLossEvent>),
    CaptureSilence(Box<SilenceEvent>),
    Check(Box<CheckEvent>),
}

/// `$typed` for every event, with the record bound to `$e` (whatever its
/// envelope and `qmwatch` fields).
macro_rules! each {
    ($event:expr, $e:ident => $typed:expr) => {
        match $event {
            Event::Service($e) => $typed,
            Event::Anomaly($e) => $typed,
            Event::Probe($e) => $typed,
            Event::Transaction($e) => $typed,
            Event::Relay($e) => $typed,
            Event::Stats($e) => $typed,
            Event::CaptureLoss($e) => $typed,
            Event::CaptureSilence($e) => $typed,
            Event::Check($e) => $typed,
        }
    };
}

impl Event {
    /// Adds the `observer.*` fields of `o` (host name, interface).
    pub fn stamp(&mut self, o: &Observer) {
        let fields = each!(self, e => &mut e.observer);
        fields.hostname = Some(o.hostname.clone());
        fields.ingress = o.ingress_interface.as_ref().map(|i| Ingress {
            interface: Name { name: i.clone() },
        });
    }

    /// Sets `observer.type` (the active check's events say `active_check`).
    pub fn set_observer_type(&mut self, kind: &'static str) {
        each!(self, e => e.observer.kind = kind)
    }

    /// One JSON line (no newline), ASCII only ([`json`]).
    pub(crate) fn to_json_line(&self) -> Option<String> {
        each!(self, e => json::line(e))
    }

    /// The event as a JSON object.
    #[cfg(test)]
    pub(crate) fn into_object(self) -> serde_json::Map<String, serde_json::Value> {
        match each!(self, e => serde_json::to_value(e)) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }

    /// The line the event's JSON object writes (keys sorted): what
    /// [`Event::to_json_line`] must write too.
    #[cfg(test)]
    pub(crate) fn to_object_line(&self) -> Option<String> {
        json::line(&self.clone().into_object())
    }

    fn fields(&self) -> &EventFields {
        each!(self, e => &e.event)
    }

    /// `event.dataset`.
    pub fn dataset(&self) -> &'static str {
        self.fields().dataset
    }

    /// `event.kind`.
    pub fn kind(&self) -> &str {
        self.fields().kind
    }

    /// `event.id`.
    pub fn id(&self) -> &str {
        &self.fields().id
    }

    /// Sets `event.id`.
    pub fn set_id(&mut self, id: String) {
        each!(self, e => e.event.id = id)
    }

    /// `event.severity`, when the event has one.
    pub fn severity(&self) -> Option<u64> {
        self.fields().severity
    }

    /// `@timestamp`.
    pub fn timestamp(&self) -> &str {
        each!(self, e => &e.timestamp)
    }
}
