//! `qmwatch.transaction`: one package (QMTP) or message (QMQP) and the
//! server's answers.
//!
//! Owns: its fields, message and outcome (from the reply codes). Must not:
//! judge the client or the recipients (the finding carries the policy's
//! view and the relay verdict).

use qmwatch_proto::{Protocol, Reply, Request, RequestState, Transaction};

use super::flow::{common, Head};
use super::ids::flow_id;
use super::text::{upper_name, Addr};
use super::typed::{
    Address, Codes, Email, RecipientReply, ReplyFields, TransactionFields, TransactionQmwatch,
};
use super::{TransactionEvent, DATASET_TRANSACTION};
use crate::finding::{RelayVerdict, TransactionFinding};

/// A `qmwatch.transaction` event.
pub fn transaction(f: &TransactionFinding<'_>) -> TransactionEvent {
    let t = f.transaction;
    let c = common(t.ts, &t.endpoints, Some(t.protocol));
    let index = t.index.to_string();
    let id = flow_id(
        DATASET_TRANSACTION,
        &c.network.community_id,
        t.ts,
        &[&index],
    );
    let mut tx = TransactionFields {
        bounce: None,
        client_trusted: f.client_trusted,
        codes: Codes {
            d: t.codes.d,
            k: t.codes.k,
            z: t.codes.z,
            missing: t.codes.missing,
        },
        complete: t.complete(),
        encoding: None,
        index: t.index,
        message_bytes: None,
        message_gap_bytes: None,
        open_relay: f.relay == Some(RelayVerdict::OpenRelay),
        recipient_count: None,
        recipients_not_stored: None,
        relay_attempt: f.relay.is_some(),
        request_state: "absent".to_string(),
        sender_truncated: false,
        session_confirmed: t.session_confirmed,
    };
    let (email, replies, message) = match &t.request {
        Some(r) => {
            let email = request_fields(r, &mut tx);
            let replies = recipient_replies(t, r, &email.to.address);
            (Some(email), replies, request_message(t, r))
        }
        None => {
            let message = format!(
                "{} server {} replied to {} without a readable request",
                upper_name(t.protocol),
                Addr(t.endpoints.server),
                Addr(t.endpoints.client)
            );
            (None, Vec::new(), message)
        }
    };
    let head = Head {
        dataset: DATASET_TRANSACTION,
        action: match t.protocol {
            Protocol::Qmtp => "qmtp_package",
            Protocol::Qmqp => "qmqp_message",
        },
        category: &["email", "network"],
        types: &["protocol", "info"],
        outcome: Some(outcome(t)),
        id,
    };
    let qmwatch = TransactionQmwatch {
        replies,
        reply: t.reply.as_ref().map(reply_fields),
        transaction: tx,
    };
    let mut e = c.into_event(head, None, message, qmwatch);
    e.email = email;
    e
}

/// `event.outcome`: every recipient accepted, none, or anything else.
fn outcome(t: &Transaction) -> &'static str {
    if t.codes.d + t.codes.z + t.codes.missing == 0 && t.codes.k > 0 {
        "success"
    } else if t.codes.k == 0 && t.codes.d + t.codes.z > 0 {
        "failure"
    } else {
        "unknown"
    }
}

/// Fills the request's part of `qmwatch.transaction`; returns `email.*`.
fn request_fields(r: &Request, tx: &mut TransactionFields) -> Email {
    tx.request_state = match r.state {
        RequestState::Complete => "complete".to_string(),
        RequestState::Truncated => "truncated".to_string(),
        RequestState::Malformed(k) => format!("malformed:{k}"),
    };
    tx.message_bytes = Some(r.message_bytes);
    tx.message_gap_bytes = (r.message_gap_bytes > 0).then_some(r.message_gap_bytes);
    tx.encoding = r.encoding.map(|e| e.name());
    tx.recipient_count = Some(r.recipient_count);
    let stored = r.recipients.len() as u64;
    tx.recipients_not_stored = (r.recipient_count > stored).then(|| r.recipient_count - stored);
    let from = r.sender.as_ref().map(|s| {
        tx.sender_truncated = s.truncated;
        tx.bounce = Some(s.wire_len == 0);
        Address { address: s.text() }
    });
    Email {
        from,
        to: Address {
            address: r.recipients.iter().map(|f| f.text()).collect(),
        },
    }
}

/// Each stored recipient with the server's answer to it; `texts` are the
/// recipients' texts (`email.to`), copied rather than decoded again.
fn recipient_replies(t: &Transaction, r: &Request, texts: &[String]) -> Vec<RecipientReply> {
    r.recipients
        .iter()
        .zip(texts)
        .zip(t.replies.iter())
        .map(|((rc, text), rep)| RecipientReply {
            code: rep.as_ref().map(|r| r.code.letter()),
            recipient: text.clone(),
            recipient_truncated: rc.truncated,
            text: rep.as_ref().map(|r| r.text.text()),
        })
        .collect()
}

/// The message of a transaction with a request.
fn request_message(t: &Transaction, r: &Request) -> String {
    let verb = match t.protocol {
        Protocol::Qmtp => "package",
        Protocol::Qmqp => "message",
    };
    format!(
        "{} {verb} from {} to {} ({} recipient(s)): {} K, {} Z, {} D, {} unanswered",
        upper_name(t.protocol),
        Addr(t.endpoints.client),
        Addr(t.endpoints.server),
        r.recipient_count,
        t.codes.k,
        t.codes.z,
        t.codes.d,
        t.codes.missing
    )
}

fn reply_fields(r: &Reply) -> ReplyFields {
    ReplyFields {
        code: r.code.letter(),
        text: r.text.text(),
        text_truncated: r.text.truncated,
    }
}
