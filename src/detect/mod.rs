//! Detection: from protocol records to the events a SOC reads.
//!
//! Owns: run-wide decisions that no single flow can make — reporting each
//! server once per protocol (`qmwatch.service`), numbering what was seen,
//! and turning transactions and anomalies into events. It runs in one thread
//! after the workers, so its state needs no locks.
//!
//! Must not: touch packets or flows, or block on output (it hands serialized
//! lines to the sink).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use serde_json::{Map, Value};

use crate::event;
use crate::protocol::{Protocol, Record};

/// Run-wide counts the summary prints.
#[derive(Clone, Debug, Default)]
pub struct DetectStats {
    pub events_by_dataset: BTreeMap<&'static str, u64>,
    pub sessions_by_protocol: BTreeMap<&'static str, u64>,
    pub services: u64,
    pub transactions: u64,
    pub anomalies_by_kind: BTreeMap<String, u64>,
}

/// Turns records into events.
#[derive(Default)]
pub struct Detector {
    services_seen: HashSet<(SocketAddr, Protocol)>,
    sessions_seen: HashSet<(SocketAddr, SocketAddr)>,
    pub stats: DetectStats,
}

impl Detector {
    pub fn new() -> Self {
        Self::default()
    }

    fn count(&mut self, dataset: &'static str) {
        *self.stats.events_by_dataset.entry(dataset).or_default() += 1;
    }

    /// Handles one record; pushes zero or more events.
    pub fn record(&mut self, rec: Record, out: &mut Vec<Map<String, Value>>) {
        match rec {
            Record::Service {
                endpoints,
                protocol,
                evidence,
                ts,
            } => {
                if self
                    .sessions_seen
                    .insert((endpoints.client, endpoints.server))
                {
                    *self
                        .stats
                        .sessions_by_protocol
                        .entry(protocol.name())
                        .or_default() += 1;
                }
                if self.services_seen.insert((endpoints.server, protocol)) {
                    self.stats.services += 1;
                    self.count(event::DATASET_SERVICE);
                    out.push(event::service(ts, &endpoints, protocol, evidence.name()));
                }
            }
            Record::Transaction(t) => {
                self.stats.transactions += 1;
                self.count(event::DATASET_TRANSACTION);
                out.push(event::transaction(&t));
            }
            Record::Anomaly(a) => {
                *self
                    .stats
                    .anomalies_by_kind
                    .entry(a.kind.to_string())
                    .or_default() += 1;
                self.count(event::DATASET_ANOMALY);
                out.push(event::anomaly(
                    a.ts,
                    &a.endpoints,
                    a.protocol,
                    a.kind,
                    &a.detail,
                ));
            }
        }
    }
}
