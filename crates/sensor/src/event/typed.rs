//! Every dataset qmwatch writes as typed records serialized directly: the
//! flow datasets — `qmwatch.service`, `.transaction`, `.relay`, `.probe` and
//! `.anomaly` —, the sensor's own (`qmwatch.stats`, capture loss and
//! silence) and the active check's `qmwatch.check`.
//!
//! Owns: their fields: three envelopes, [`FlowEvent`], [`SensorEvent`] and
//! [`CheckEvent`], each with the dataset's own `qmwatch.*` object. Building them as `serde_json::Value` maps cost about
//! 100,000 instructions an event (a heap string per key, a tree per object);
//! these records cost a fraction of that and write the same bytes: fields
//! are declared in the sorted order a JSON object has, which a test checks
//! by re-serializing every event through a map.
//!
//! Must not: decide anything (detection did, the mapping files copy it) or
//! hold anything that a map of the same event would not show.

use std::collections::BTreeMap;

use serde::Serialize;

/// `source` and `destination`.
#[derive(Serialize, Clone, Debug)]
pub struct IpPort {
    pub ip: String,
    pub port: u16,
}

#[derive(Serialize, Clone, Debug)]
pub struct Ecs {
    pub version: &'static str,
}

/// `event.*`.
#[derive(Serialize, Clone, Debug)]
pub struct EventFields {
    pub action: &'static str,
    pub category: &'static [&'static str],
    pub dataset: &'static str,
    pub id: String,
    pub kind: &'static str,
    pub module: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<u64>,
    #[serde(rename = "type")]
    pub types: &'static [&'static str],
}

/// `network.*`.
#[derive(Serialize, Clone, Debug)]
pub struct Network {
    pub community_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    pub transport: &'static str,
    #[serde(rename = "type")]
    pub ip_version: &'static str,
}

/// `observer.*`: the host name and interface are stamped when the event is
/// emitted.
#[derive(Serialize, Clone, Debug)]
pub struct ObserverFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Ingress>,
    pub product: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub vendor: &'static str,
    pub version: &'static str,
}

#[derive(Serialize, Clone, Debug)]
pub struct Ingress {
    pub interface: Name,
}

#[derive(Serialize, Clone, Debug)]
pub struct Name {
    pub name: String,
}

#[derive(Serialize, Clone, Debug)]
pub struct Related {
    pub ip: Vec<String>,
}

/// `{"address": …}` of `email.from` and `email.to`.
#[derive(Serialize, Clone, Debug)]
pub struct Address<T> {
    pub address: T,
}

#[derive(Serialize, Clone, Debug)]
pub struct Email {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Address<String>>,
    pub to: Address<Vec<String>>,
}

/// The fields every flow event has, apart from `email`, `message`,
/// `qmwatch` and `rule`.
#[derive(Clone, Debug)]
pub struct Common {
    pub timestamp: String,
    pub source: IpPort,
    pub destination: IpPort,
    pub network: Network,
    pub observer: ObserverFields,
    pub related: Related,
}

/// An event about one flow: the envelope every flow dataset shares, with
/// the dataset's own `qmwatch.*` fields `Q`.
#[derive(Serialize, Clone, Debug)]
pub struct FlowEvent<Q> {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub destination: IpPort,
    pub ecs: Ecs,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    pub event: EventFields,
    pub message: String,
    pub network: Network,
    pub observer: ObserverFields,
    pub qmwatch: Q,
    pub related: Related,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleFields>,
    pub source: IpPort,
}

/// An event about the sensor itself (no flow), with its `qmwatch.*`
/// fields `Q`.
#[derive(Serialize, Clone, Debug)]
pub struct SensorEvent<Q> {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub ecs: Ecs,
    pub event: EventFields,
    pub message: String,
    pub observer: ObserverFields,
    pub qmwatch: Q,
}

/// The `qmwatch.stats` metric.
pub type StatsEvent = SensorEvent<StatsQmwatch>;
/// A `capture_loss` anomaly.
pub type CaptureLossEvent = SensorEvent<CaptureLossQmwatch>;
/// A `capture_silent` or `capture_resumed` anomaly.
pub type SilenceEvent = SensorEvent<SilenceQmwatch>;

/// `qmwatch.stats`: built by the pipeline's statistics, documented in
/// docs/events.md.
#[derive(Serialize, Clone, Debug)]
pub struct StatsQmwatch {
    pub stats: serde_json::Value,
}

#[derive(Serialize, Clone, Debug)]
pub struct CaptureLossQmwatch {
    pub anomaly: AnomalyFields,
    pub capture_loss: CaptureLossFields,
}

#[derive(Serialize, Clone, Debug)]
pub struct CaptureLossFields {
    pub acked_bytes: u64,
    pub gap_bytes: u64,
    pub interval_seconds: f64,
    pub percent: f64,
    pub threshold_percent: f64,
}

#[derive(Serialize, Clone, Debug)]
pub struct SilenceQmwatch {
    pub anomaly: AnomalyFields,
    pub capture_silence: SilenceFields,
}

#[derive(Serialize, Clone, Debug)]
pub struct SilenceFields {
    pub idle_alarm_seconds: f64,
    /// `null` when no packet came since the start.
    pub last_packet: Option<String>,
    pub silent_seconds: f64,
}

/// A `qmwatch.service` event.
pub type ServiceEvent = FlowEvent<ServiceQmwatch>;
/// A `qmwatch.transaction` event.
pub type TransactionEvent = FlowEvent<TransactionQmwatch>;
/// A `qmwatch.relay` alert (one attempt, or a window of them).
pub type RelayEvent = FlowEvent<RelayQmwatch>;
/// A `qmwatch.probe` alert.
pub type ProbeEvent = FlowEvent<ProbeQmwatch>;
/// A `qmwatch.anomaly` event about a flow.
pub type AnomalyEvent = FlowEvent<AnomalyQmwatch>;

#[derive(Serialize, Clone, Debug)]
pub struct ServiceQmwatch {
    pub service: ServiceFields,
}

#[derive(Serialize, Clone, Debug)]
pub struct ServiceFields {
    pub address: String,
    pub evidence: &'static str,
    pub port: u16,
    pub protocol: &'static str,
    pub sanctioned: bool,
    pub standard_port: bool,
}

#[derive(Serialize, Clone, Debug)]
pub struct AnomalyQmwatch {
    pub anomaly: AnomalyFields,
}

#[derive(Serialize, Clone, Debug)]
pub struct AnomalyFields {
    pub detail: String,
    pub kind: &'static str,
}

#[derive(Serialize, Clone, Debug)]
pub struct ProbeQmwatch {
    pub probe: ProbeFields,
}

#[derive(Serialize, Clone, Debug)]
pub struct ProbeFields {
    pub answers: Vec<ProbeAnswer>,
    pub client_trusted: bool,
    pub form: &'static str,
    pub plugin: &'static str,
    pub scanner: String,
}

/// The server's answer to one recipient of a probe (`null`s when none).
#[derive(Serialize, Clone, Debug)]
pub struct ProbeAnswer {
    pub code: Option<&'static str>,
    pub text: Option<String>,
}

#[derive(Serialize, Clone, Debug)]
pub struct TransactionQmwatch {
    pub replies: Vec<RecipientReply>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyFields>,
    pub transaction: TransactionFields,
}

/// One recipient and the server's answer to it (`null`s when none).
#[derive(Serialize, Clone, Debug)]
pub struct RecipientReply {
    pub code: Option<&'static str>,
    pub recipient: String,
    #[serde(skip_serializing_if = "is_false")]
    pub recipient_truncated: bool,
    pub text: Option<String>,
}

/// A reply not tied to a recipient (QMQP's, or one without a request).
#[derive(Serialize, Clone, Debug)]
pub struct ReplyFields {
    pub code: &'static str,
    pub text: String,
    pub text_truncated: bool,
}

#[derive(Serialize, Clone, Debug)]
pub struct TransactionFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounce: Option<bool>,
    pub client_trusted: bool,
    pub codes: Codes,
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<&'static str>,
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_gap_bytes: Option<u64>,
    pub open_relay: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipients_not_stored: Option<u64>,
    pub relay_attempt: bool,
    pub request_state: String,
    #[serde(skip_serializing_if = "is_false")]
    pub sender_truncated: bool,
    pub session_confirmed: bool,
}

#[derive(Serialize, Clone, Debug)]
pub struct Codes {
    #[serde(rename = "D")]
    pub d: u64,
    #[serde(rename = "K")]
    pub k: u64,
    #[serde(rename = "Z")]
    pub z: u64,
    pub missing: u64,
}

#[derive(Serialize, Clone, Debug)]
pub struct RelayQmwatch {
    /// Only on the alert of a window of attempts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<AggregateFields>,
    pub relay: RelayFields,
}

/// What a window of relay attempts folded into one alert.
#[derive(Serialize, Clone, Debug)]
pub struct AggregateFields {
    pub count: u64,
    pub first: FlowRef,
    pub last: FlowRef,
    pub verdicts: BTreeMap<&'static str, u64>,
    pub window_seconds: u64,
}

/// A short reference to a flow: time, client and Community ID.
#[derive(Serialize, Clone, Debug)]
pub struct FlowRef {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub community_id: String,
    pub source: IpPort,
}

#[derive(Serialize, Clone, Debug)]
pub struct RelayFields {
    pub confident: bool,
    pub foreign_recipients: Vec<ForeignRecipient>,
    pub local_recipients: usize,
    pub policy: PolicyFields,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanner: Option<String>,
    pub transaction_index: u32,
    pub verdict: &'static str,
}

#[derive(Serialize, Clone, Debug)]
pub struct ForeignRecipient {
    pub code: Option<&'static str>,
    pub recipient: String,
    pub text: Option<String>,
}

#[derive(Serialize, Clone, Debug)]
pub struct PolicyFields {
    pub description: String,
    pub local_domains_defaulted: bool,
    pub trusted_networks_defaulted: bool,
}

#[derive(Serialize, Clone, Debug)]
pub struct RuleFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<&'static str>,
    pub id: &'static str,
    pub name: &'static str,
}

/// A `qmwatch.check` event: the active check's result for one port. The
/// envelope of a flow event, except that a port never connected to has no
/// `source` and no `network.community_id` (there was no flow).
#[derive(Serialize, Clone, Debug)]
pub struct CheckEvent {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub destination: IpPort,
    pub ecs: Ecs,
    pub event: EventFields,
    pub message: String,
    pub network: CheckNetwork,
    pub observer: ObserverFields,
    pub qmwatch: CheckQmwatch,
    pub related: Related,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<IpPort>,
}

/// `network.*` of a check: [`Network`], with no Community ID when no
/// connection was made.
#[derive(Serialize, Clone, Debug)]
pub struct CheckNetwork {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    pub transport: &'static str,
    #[serde(rename = "type")]
    pub ip_version: &'static str,
}

#[derive(Serialize, Clone, Debug)]
pub struct CheckQmwatch {
    pub check: CheckFields,
}

/// `qmwatch.check`: filled by the binary's check, documented in
/// docs/events.md.
#[derive(Serialize, Clone, Debug)]
pub struct CheckFields {
    pub detail: String,
    /// Only for a QMTP/QMQP service, and then only when it is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<&'static str>,
    pub probes: Vec<CheckProbe>,
    /// The probe that proved the result, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_test: Option<RelayTestFields>,
    /// Only for a QMTP/QMQP service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replies: Option<Vec<ReplyFields>>,
    pub result: &'static str,
    /// Only for a QMTP/QMQP service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sanctioned: Option<bool>,
    pub service: bool,
    pub target: String,
}

/// One probe of a check: what was sent and what came back (escaped).
#[derive(Serialize, Clone, Debug)]
pub struct CheckProbe {
    pub elapsed_ms: u64,
    pub end: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub probe: &'static str,
    pub received: String,
    pub received_bytes: usize,
    pub sent_bytes: usize,
    /// The local address, when a connection was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// `qmwatch.check.relay_test`.
#[derive(Serialize, Clone, Debug)]
pub struct RelayTestFields {
    pub client_trusted: bool,
    pub probe: CheckProbe,
    pub protocol: &'static str,
    pub recipient: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyFields>,
    pub verdict: &'static str,
}

fn is_false(b: &bool) -> bool {
    !*b
}
