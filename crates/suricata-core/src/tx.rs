//! One app-layer transaction: a QMTP package or QMQP message with its
//! replies (or, for anomalies that came with no transaction, only those).
//!
//! Owns: the copy of a [`qmwatch_proto::Transaction`] that Suricata's
//! logger and detection engine read, and the byte buffers the rule
//! keywords inspect (sender, recipients, per-recipient reply code and text,
//! `code recipient` pairs, the message's first bytes).
//!
//! Must not: hold more than the proto crate's bounded fields, or decide
//! anything (relay, probe) that site policy or rules decide.

use qmwatch_proto::{AnomalyKind, Encoding, Protocol, Reply, RequestState, Transaction};

/// One recipient with its reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recipient {
    pub address: Vec<u8>,
    /// `K`, `Z` or `D`; `None` when no reply came.
    pub code: Option<u8>,
    pub text: Vec<u8>,
    /// `code` then a space then `address` (`"K joe@example.net"`), `"-"` for
    /// no reply: one buffer that ties a recipient to its reply for rules.
    pub pair: Vec<u8>,
}

/// A reply netstring: code letter and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyView {
    pub code: u8,
    pub text: Vec<u8>,
}

impl ReplyView {
    fn from(r: &Reply) -> Self {
        ReplyView {
            code: r.code.letter().as_bytes().first().copied().unwrap_or(b'?'),
            text: r.text.bytes.clone(),
        }
    }
}

/// What the transaction carries besides anomalies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxBody {
    /// A request was read (`request_state` is not `absent`).
    pub request: bool,
    /// The envelope sender; `None` when no request, or no sender, was read.
    pub from: Option<Vec<u8>>,
    pub recipients: Vec<Recipient>,
    pub recipient_count: u64,
    /// QMQP's single reply; for QMTP a reply with no recipient left.
    pub reply: Option<ReplyView>,
    pub index: u32,
    pub complete: bool,
    pub request_state: String,
    pub message_bytes: u64,
    pub message_gap_bytes: u64,
    pub encoding: Option<&'static str>,
    pub codes: [u64; 4],
    pub session_confirmed: bool,
    /// The message's first bytes (at most 64; QMTP: with the encoding byte).
    pub message_start: Vec<u8>,
}

/// One transaction as Suricata sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tx {
    /// 1-based, per flow, in creation order (Suricata's tx id is this - 1).
    pub id: u64,
    pub protocol: Protocol,
    /// `None` for a transaction that only carries anomalies.
    pub body: Option<TxBody>,
    pub anomalies: Vec<(AnomalyKind, String)>,
    /// Still in progress: an id the flow holds for what its end may
    /// report, once one direction has ended (see
    /// [`crate::FlowState::eof`]). Replaced, under the same id, by the
    /// first transaction the flow creates next; left empty when none comes.
    pub open: bool,
}

fn request_state(s: RequestState) -> String {
    match s {
        RequestState::Complete => "complete".to_string(),
        RequestState::Truncated => "truncated".to_string(),
        RequestState::Malformed(k) => format!("malformed:{}", k.name()),
    }
}

impl Tx {
    /// The transaction for `t`.
    pub fn from_transaction(id: u64, t: &Transaction) -> Tx {
        let single = t.reply.as_ref().map(ReplyView::from);
        let (from, recipients, recipient_count, message_bytes, gap, encoding, start, state) =
            match &t.request {
                Some(r) => {
                    let recipients = r
                        .recipients
                        .iter()
                        .enumerate()
                        .map(|(i, f)| {
                            let reply = t.replies.get(i).and_then(|x| x.as_ref());
                            let code = reply.and_then(|x| x.code.letter().bytes().next());
                            let text = reply.map(|x| x.text.bytes.clone()).unwrap_or_default();
                            let mut pair = Vec::with_capacity(f.bytes.len() + 2);
                            pair.push(code.unwrap_or(b'-'));
                            pair.push(b' ');
                            pair.extend_from_slice(&f.bytes);
                            Recipient {
                                address: f.bytes.clone(),
                                code,
                                text,
                                pair,
                            }
                        })
                        .collect();
                    (
                        // No sender read (a malformed request): no `from`.
                        r.sender.as_ref().map(|s| s.bytes.clone()),
                        recipients,
                        r.recipient_count,
                        r.message_bytes,
                        r.message_gap_bytes,
                        r.encoding.map(Encoding::name),
                        r.message_prefix.clone(),
                        request_state(r.state),
                    )
                }
                None => (
                    None,
                    Vec::new(),
                    0,
                    0,
                    0,
                    None,
                    Vec::new(),
                    "absent".to_string(),
                ),
            };
        Tx {
            id,
            protocol: t.protocol,
            body: Some(TxBody {
                request: t.request.is_some(),
                from,
                recipients,
                recipient_count,
                reply: single,
                index: t.index,
                complete: t.complete(),
                request_state: state,
                message_bytes,
                message_gap_bytes: gap,
                encoding,
                codes: [t.codes.k, t.codes.z, t.codes.d, t.codes.missing],
                session_confirmed: t.session_confirmed,
                message_start: start,
            }),
            anomalies: Vec::new(),
            open: false,
        }
    }

    /// A transaction that only carries anomalies.
    pub fn anomalies_only(id: u64, protocol: Protocol) -> Tx {
        Tx {
            id,
            protocol,
            body: None,
            anomalies: Vec::new(),
            open: false,
        }
    }

    /// A transaction in progress that carries nothing yet.
    pub fn placeholder(id: u64, protocol: Protocol) -> Tx {
        Tx {
            open: true,
            ..Tx::anomalies_only(id, protocol)
        }
    }

    /// Carries nothing: neither a transaction nor an anomaly (a placeholder
    /// the flow's end did not fill). Not logged.
    pub fn is_empty(&self) -> bool {
        self.body.is_none() && self.anomalies.is_empty()
    }

    // Rule buffers. Each returns `None` when the transaction has no such
    // buffer (or no instance `i` of a multi-buffer).

    /// The envelope sender (empty for bounces).
    pub fn sender(&self) -> Option<&[u8]> {
        self.body.as_ref()?.from.as_deref()
    }

    fn recipient(&self, i: u32) -> Option<&Recipient> {
        self.body.as_ref()?.recipients.get(usize::try_from(i).ok()?)
    }

    /// Recipient `i`.
    pub fn rcpt(&self, i: u32) -> Option<&[u8]> {
        self.recipient(i).map(|r| r.address.as_slice())
    }

    /// The reply code letter of recipient `i`; for a transaction with no
    /// recipient, that of its single reply (instance 0).
    pub fn reply_code(&self, i: u32) -> Option<&[u8]> {
        match self.recipient(i) {
            Some(r) => r.code.as_ref().map(std::slice::from_ref),
            None => self.lone_reply(i).map(|r| std::slice::from_ref(&r.code)),
        }
    }

    /// The reply text of recipient `i` (after the code letter).
    pub fn reply_text(&self, i: u32) -> Option<&[u8]> {
        match self.recipient(i) {
            Some(r) => r.code.map(|_| r.text.as_slice()),
            None => self.lone_reply(i).map(|r| r.text.as_slice()),
        }
    }

    /// `"K joe@example.net"`: recipient `i` with its reply code.
    pub fn rcpt_reply(&self, i: u32) -> Option<&[u8]> {
        self.recipient(i).map(|r| r.pair.as_slice())
    }

    /// The kind name of anomaly `i` (`"gap_outside_message"`), the name
    /// its app-layer event has: the same match as `app-layer-event`, but
    /// as a buffer Suricata can prefilter, so that a rule on it costs
    /// nothing on flows of other protocols.
    pub fn anomaly(&self, i: u32) -> Option<&[u8]> {
        let (kind, _) = self.anomalies.get(usize::try_from(i).ok()?)?;
        Some(kind.name().as_bytes())
    }

    /// The message's first bytes (at most 64).
    pub fn message_start(&self) -> Option<&[u8]> {
        let b = self.body.as_ref()?;
        b.request.then_some(b.message_start.as_slice())
    }

    fn lone_reply(&self, i: u32) -> Option<&ReplyView> {
        let b = self.body.as_ref()?;
        if i == 0 && b.recipients.is_empty() {
            b.reply.as_ref()
        } else {
            None
        }
    }
}
