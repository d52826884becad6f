//! The two events written for every package seen — `qmwatch.transaction`
//! and `qmwatch.relay` — as typed records serialized directly.
//!
//! Owns: their fields. Building them as `serde_json::Value` maps cost about
//! 100,000 instructions an event (a heap string per key, a tree per object);
//! these records cost a fraction of that and write the same bytes: fields are
//! declared in the sorted order the maps had, which a test checks by
//! re-serializing every event through a map.
//!
//! Must not: decide anything (the builders in `event` do) or hold anything
//! that a map of the same event would not show.

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
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<u64>,
    #[serde(rename = "type")]
    pub types: &'static [&'static str],
}

/// `network.*`.
#[derive(Serialize, Clone, Debug)]
pub struct Network {
    pub community_id: String,
    pub protocol: &'static str,
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

/// A `qmwatch.transaction` event.
#[derive(Serialize, Clone, Debug)]
pub struct TransactionEvent {
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
    pub qmwatch: TransactionQmwatch,
    pub related: Related,
    pub source: IpPort,
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

/// A `qmwatch.relay` alert.
#[derive(Serialize, Clone, Debug)]
pub struct RelayEvent {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub destination: IpPort,
    pub ecs: Ecs,
    pub email: Email,
    pub event: EventFields,
    pub message: String,
    pub network: Network,
    pub observer: ObserverFields,
    pub qmwatch: RelayQmwatch,
    pub related: Related,
    pub rule: Rule,
    pub source: IpPort,
}

#[derive(Serialize, Clone, Debug)]
pub struct RelayQmwatch {
    pub relay: RelayFields,
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
pub struct Rule {
    pub category: &'static str,
    pub id: &'static str,
    pub name: &'static str,
}

fn is_false(b: &bool) -> bool {
    !*b
}
