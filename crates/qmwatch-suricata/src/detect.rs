// qmwatch Suricata plugin. SPDX-License-Identifier: GPL-2.0-only
//
//! Rule keywords: sticky buffers over a transaction, for each protocol
//! (`qmtp.*` and `qmqp.*`):
//!
//! | keyword | buffer |
//! |---|---|
//! | `.sender` | the envelope sender (empty for bounces) |
//! | `.rcpt` | each recipient (multi-buffer) |
//! | `.reply_code` | each recipient's reply code letter, `K`/`Z`/`D` (multi) |
//! | `.reply_text` | each recipient's reply text after the letter (multi) |
//! | `.rcpt_reply` | each recipient as `"<code> <address>"`, `-` for no reply (multi) |
//! | `.message_start` | the message's first bytes (at most 64; QMTP: with the encoding byte) |
//! | `.anomaly` | each anomaly's kind name, as its app-layer event is named (multi) |
//!
//! Buffers are registered for both directions: a transaction exists only
//! once its replies are in (or the flow ended), and a rule may combine the
//! client's envelope with the server's replies.
//!
//! Must not: copy buffers (they point into the transaction).

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicI32, Ordering};

use qmwatch_suricata_core::{Protocol, Tx};
use suricata::core::{STREAM_TOCLIENT, STREAM_TOSERVER};
use suricata::detect::{helper_keyword_register_sticky_buffer, SigTableElmtStickyBuffer};
use suricata_sys::sys::{
    DetectEngineCtx, DetectEngineThreadCtx, SCDetectBufferSetActiveList,
    SCDetectHelperBufferMpmRegister, SCDetectHelperMultiBufferMpmRegister,
    SCDetectSignatureSetAppProto, Signature,
};

use crate::parser::{alproto, QmTx};

/// The keywords, in the order of the buffer-id table.
const KEYWORDS: [(&str, &str); 7] = [
    ("sender", "envelope sender"),
    ("rcpt", "each envelope recipient"),
    ("reply_code", "each recipient's reply code letter (K, Z, D)"),
    ("reply_text", "each recipient's reply text"),
    ("rcpt_reply", "each recipient as \"<code> <address>\""),
    ("message_start", "the message's first bytes (at most 64)"),
    ("anomaly", "each anomaly's kind name"),
];

const N: usize = KEYWORDS.len();
/// Buffer ids: [protocol][keyword].
static BUFFER_IDS: [[AtomicI32; N]; 2] = [
    [const { AtomicI32::new(-1) }; N],
    [const { AtomicI32::new(-1) }; N],
];

fn pidx(p: Protocol) -> usize {
    match p {
        Protocol::Qmtp => 0,
        Protocol::Qmqp => 1,
    }
}

unsafe fn setup(p: Protocol, k: usize, de: *mut DetectEngineCtx, s: *mut Signature) -> c_int {
    crate::guard(-1, || {
        let id = BUFFER_IDS
            .get(pidx(p))
            .and_then(|row| row.get(k))
            .map_or(-1, |a| a.load(Ordering::Relaxed));
        if id < 0 || SCDetectSignatureSetAppProto(s, alproto(p)) != 0 {
            return -1;
        }
        if SCDetectBufferSetActiveList(de, s, id) < 0 {
            return -1;
        }
        0
    })
}

macro_rules! setups {
    ($($name:ident = ($p:expr, $k:expr);)*) => {
        $(unsafe extern "C" fn $name(
            de: *mut DetectEngineCtx, s: *mut Signature, _raw: *const c_char,
        ) -> c_int {
            setup($p, $k, de, s)
        })*
    };
}

setups! {
    qmtp_sender_setup = (Protocol::Qmtp, 0);
    qmtp_rcpt_setup = (Protocol::Qmtp, 1);
    qmtp_reply_code_setup = (Protocol::Qmtp, 2);
    qmtp_reply_text_setup = (Protocol::Qmtp, 3);
    qmtp_rcpt_reply_setup = (Protocol::Qmtp, 4);
    qmtp_message_start_setup = (Protocol::Qmtp, 5);
    qmtp_anomaly_setup = (Protocol::Qmtp, 6);
    qmqp_sender_setup = (Protocol::Qmqp, 0);
    qmqp_rcpt_setup = (Protocol::Qmqp, 1);
    qmqp_reply_code_setup = (Protocol::Qmqp, 2);
    qmqp_reply_text_setup = (Protocol::Qmqp, 3);
    qmqp_rcpt_reply_setup = (Protocol::Qmqp, 4);
    qmqp_message_start_setup = (Protocol::Qmqp, 5);
    qmqp_anomaly_setup = (Protocol::Qmqp, 6);
}

type Setup = unsafe extern "C" fn(*mut DetectEngineCtx, *mut Signature, *const c_char) -> c_int;

const QMTP_SETUPS: [Setup; N] = [
    qmtp_sender_setup,
    qmtp_rcpt_setup,
    qmtp_reply_code_setup,
    qmtp_reply_text_setup,
    qmtp_rcpt_reply_setup,
    qmtp_message_start_setup,
    qmtp_anomaly_setup,
];
const QMQP_SETUPS: [Setup; N] = [
    qmqp_sender_setup,
    qmqp_rcpt_setup,
    qmqp_reply_code_setup,
    qmqp_reply_text_setup,
    qmqp_rcpt_reply_setup,
    qmqp_message_start_setup,
    qmqp_anomaly_setup,
];

unsafe fn put(b: Option<&[u8]>, buf: *mut *const u8, len: *mut u32) -> bool {
    if buf.is_null() || len.is_null() {
        return false;
    }
    match b {
        Some(b) => {
            *buf = b.as_ptr();
            *len = u32::try_from(b.len()).unwrap_or(u32::MAX);
            true
        }
        None => {
            *buf = std::ptr::null();
            *len = 0;
            false
        }
    }
}

unsafe fn tx<'a>(txv: *const c_void) -> Option<&'a Tx> {
    (txv as *const QmTx).as_ref().map(|t| &t.tx)
}

unsafe extern "C" fn get_sender(
    txv: *const c_void,
    _flags: u8,
    buf: *mut *const u8,
    len: *mut u32,
) -> bool {
    crate::guard(false, || put(tx(txv).and_then(Tx::sender), buf, len))
}

unsafe extern "C" fn get_message_start(
    txv: *const c_void,
    _flags: u8,
    buf: *mut *const u8,
    len: *mut u32,
) -> bool {
    crate::guard(false, || put(tx(txv).and_then(Tx::message_start), buf, len))
}

macro_rules! multi {
    ($name:ident, $method:ident) => {
        unsafe extern "C" fn $name(
            _de: *mut DetectEngineThreadCtx,
            txv: *const c_void,
            _flags: u8,
            local_id: u32,
            buf: *mut *const u8,
            len: *mut u32,
        ) -> bool {
            crate::guard(false, || {
                put(tx(txv).and_then(|t| t.$method(local_id)), buf, len)
            })
        }
    };
}

multi!(get_rcpt, rcpt);
multi!(get_reply_code, reply_code);
multi!(get_reply_text, reply_text);
multi!(get_rcpt_reply, rcpt_reply);
multi!(get_anomaly, anomaly);

unsafe fn register(p: Protocol) {
    let setups = match p {
        Protocol::Qmtp => QMTP_SETUPS,
        Protocol::Qmqp => QMQP_SETUPS,
    };
    let Some(row) = BUFFER_IDS.get(pidx(p)) else {
        return;
    };
    for (k, ((kw, desc), setup)) in KEYWORDS.iter().zip(setups).enumerate() {
        let name = format!("{}.{kw}", p.name());
        let sticky = SigTableElmtStickyBuffer {
            name: name.clone(),
            desc: format!("{} {desc}", p.name().to_uppercase()),
            url: String::from("/rules/qmwatch.html"),
            setup,
        };
        let _ = helper_keyword_register_sticky_buffer(&sticky);
        let (Ok(cname), Ok(cdesc)) = (
            std::ffi::CString::new(name),
            std::ffi::CString::new(desc.to_string()),
        ) else {
            continue;
        };
        let dirs = STREAM_TOSERVER | STREAM_TOCLIENT;
        let id = match k {
            0 => SCDetectHelperBufferMpmRegister(
                cname.as_ptr(),
                cdesc.as_ptr(),
                alproto(p),
                dirs,
                Some(get_sender),
            ),
            5 => SCDetectHelperBufferMpmRegister(
                cname.as_ptr(),
                cdesc.as_ptr(),
                alproto(p),
                dirs,
                Some(get_message_start),
            ),
            _ => {
                let get = match k {
                    1 => get_rcpt,
                    2 => get_reply_code,
                    3 => get_reply_text,
                    4 => get_rcpt_reply,
                    _ => get_anomaly,
                };
                SCDetectHelperMultiBufferMpmRegister(
                    cname.as_ptr(),
                    cdesc.as_ptr(),
                    alproto(p),
                    dirs,
                    Some(get),
                )
            }
        };
        // Suricata keeps the names it was given.
        std::mem::forget(cname);
        std::mem::forget(cdesc);
        if let Some(slot) = row.get(k) {
            slot.store(id, Ordering::Relaxed);
        }
    }
}

pub(crate) unsafe extern "C" fn qmtp_keywords_register() {
    crate::guard((), || register(Protocol::Qmtp))
}

pub(crate) unsafe extern "C" fn qmqp_keywords_register() {
    crate::guard((), || register(Protocol::Qmqp))
}
