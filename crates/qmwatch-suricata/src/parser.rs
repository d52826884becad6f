// qmwatch Suricata plugin. SPDX-License-Identifier: GPL-2.0-only
//
//! The app-layer parser both protocols share: detection (standard ports
//! plus any port from the first bytes), per-flow state, the to-server and
//! to-client parse functions (gaps accepted), transactions and their
//! app-layer events.
//!
//! Owns: Suricata's view of a [`FlowState`]: its transaction list, each
//! with Suricata's `AppLayerTxData`, and the ids Suricata knows the
//! protocols by.
//!
//! Must not: interpret the bytes (the core does), or return an error to
//! Suricata for bytes that are not QMTP/QMQP after all (the session simply
//! stops reporting; an error would stop Suricata's inspection of the flow).

use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicU16, Ordering};

use qmwatch_suricata_core::flow::{TO_CLIENT, TO_SERVER};
use qmwatch_suricata_core::{events, probe, FlowState, ProbeResult, Protocol, Tx};
use suricata::applayer::{
    AppLayerRegisterParser, AppLayerRegisterProtocolDetection, AppLayerResult, AppLayerStateData,
    AppLayerTxData, RustParser, StreamSlice, APP_LAYER_PARSER_EOF_TC, APP_LAYER_PARSER_EOF_TS,
    APP_LAYER_PARSER_OPT_ACCEPT_GAPS,
};
use suricata::core::{AppLayerEventType, ALPROTO_FAILED, ALPROTO_UNKNOWN, IPPROTO_TCP};
use suricata::core::{STREAM_TOCLIENT, STREAM_TOSERVER};
use suricata::flow::{flow_get_last_time, flow_get_ports};
use suricata_sys::sys::{
    AppLayerParserState, AppProto, Flow, SCAppLayerParserConfParserEnabled,
    SCAppLayerParserRegisterLogger, SCAppLayerParserStateIssetFlag,
    SCAppLayerProtoDetectConfProtoDetectionEnabled, SCAppLayerProtoDetectPMRegisterPatternCSwPP,
};

pub(crate) static ALPROTO_QMTP: AtomicU16 = AtomicU16::new(ALPROTO_UNKNOWN);
pub(crate) static ALPROTO_QMQP: AtomicU16 = AtomicU16::new(ALPROTO_UNKNOWN);

/// Suricata's id of `p`.
pub(crate) fn alproto(p: Protocol) -> AppProto {
    match p {
        Protocol::Qmtp => ALPROTO_QMTP.load(Ordering::Relaxed),
        Protocol::Qmqp => ALPROTO_QMQP.load(Ordering::Relaxed),
    }
}

/// Unfreed transactions kept per flow; past it the oldest go.
const MAX_TXS: usize = 1024;

/// Bytes the probing parsers look at: two 12-digit lengths, two colons
/// and a byte are all the sniffer needs.
const PROBE_MAX_DEPTH: u16 = 32;

/// One transaction with Suricata's per-transaction data.
pub struct QmTx {
    pub tx: Tx,
    pub tx_data: AppLayerTxData,
}

/// One flow.
pub struct QmState {
    state_data: AppLayerStateData,
    protocol: Protocol,
    /// Made at the first parse call, which knows the flow's ports
    /// (Suricata gives no flow to `state_new`).
    core: Option<FlowState>,
    txs: VecDeque<QmTx>,
}

impl QmState {
    fn new(protocol: Protocol) -> Self {
        QmState {
            state_data: AppLayerStateData::new(),
            protocol,
            core: None,
            txs: VecDeque::new(),
        }
    }

    /// Feeds one call's bytes; returns how many more bytes the flow can
    /// leave in Suricata's stream before the next call (see
    /// [`FlowState::body_ahead`]), if any.
    fn parse(
        &mut self,
        flow: *const Flow,
        dir: usize,
        slice: &StreamSlice,
        eof: bool,
    ) -> Option<u32> {
        let ts = now_ns(flow);
        let protocol = self.protocol;
        let core = self.core.get_or_insert_with(|| {
            let (sp, dp) = if flow.is_null() {
                (0, 0)
            } else {
                flow_get_ports(unsafe { &*flow })
            };
            FlowState::new(protocol, sp, dp)
        });
        core.catch_up(dir, slice_offset(slice), ts);
        if slice.is_gap() {
            core.gap(dir, u64::from(slice.gap_size()), ts);
        } else if !slice.is_empty() {
            core.data(dir, slice.as_slice(), ts);
        }
        if eof {
            core.eof(dir, ts);
        }
        let ahead = if eof || slice.is_gap() {
            None
        } else {
            core.body_ahead(dir)
        };
        self.take_txs();
        ahead
    }
}

impl QmState {
    /// Direction `dir` ended without a call of its own.
    fn parse_eof(&mut self, flow: *const Flow, dir: usize) {
        let ts = now_ns(flow);
        if let Some(core) = self.core.as_mut() {
            core.eof(dir, ts);
        }
        self.take_txs();
    }

    /// Moves the core's new transactions into Suricata's list; one with
    /// the id of a placeholder already there replaces it, keeping
    /// Suricata's data of it.
    fn take_txs(&mut self) {
        let Some(core) = self.core.as_mut() else {
            return;
        };
        for tx in core.drain_txs() {
            if let Some(held) = self.txs.iter_mut().find(|t| t.tx.id == tx.id) {
                for (kind, _) in &tx.anomalies {
                    held.tx_data.set_event(events::id(*kind));
                }
                held.tx_data.updated_ts = true;
                held.tx_data.updated_tc = true;
                held.tx = tx;
                continue;
            }
            let mut tx_data = AppLayerTxData::new();
            for (kind, _) in &tx.anomalies {
                tx_data.set_event(events::id(*kind));
            }
            if self.txs.len() >= MAX_TXS {
                self.txs.pop_front();
            }
            self.txs.push_back(QmTx { tx, tx_data });
        }
    }
}

fn probe_result(flow: *const Flow, to_server: bool, input: *const u8, len: u32) -> ProbeResult {
    if flow.is_null() || input.is_null() || len == 0 {
        return ProbeResult::NeedMore;
    }
    let (_, dp) = flow_get_ports(unsafe { &*flow });
    let bytes = unsafe { std::slice::from_raw_parts(input, len as usize) };
    probe(bytes, to_server, dp)
}

/// Port-based probing parser (209, 628 and configured ports): either
/// protocol may come back.
unsafe extern "C" fn qm_probe(
    flow: *const Flow,
    direction: u8,
    input: *const u8,
    input_len: u32,
    _rdir: *mut u8,
) -> AppProto {
    crate::guard(ALPROTO_UNKNOWN, || {
        let to_server = direction & STREAM_TOSERVER != 0;
        match probe_result(flow, to_server, input, input_len) {
            ProbeResult::Is(p) => alproto(p),
            ProbeResult::NeedMore => ALPROTO_UNKNOWN,
            ProbeResult::Not => ALPROTO_FAILED,
        }
    })
}

/// Pattern-triggered probing parsers (any port): each answers only for its
/// own protocol, as Suricata requires of them.
fn pm_probe(
    want: Protocol,
    flow: *const Flow,
    direction: u8,
    input: *const u8,
    len: u32,
) -> AppProto {
    let to_server = direction & STREAM_TOSERVER != 0;
    match probe_result(flow, to_server, input, len) {
        // Off the standard ports only requests and replies claim a flow:
        // `probe` already says `Not` for anything else there.
        ProbeResult::Is(p) if p == want => alproto(p),
        _ => ALPROTO_UNKNOWN,
    }
}

unsafe extern "C" fn qmtp_pm_probe(
    flow: *const Flow,
    direction: u8,
    input: *const u8,
    input_len: u32,
    _rdir: *mut u8,
) -> AppProto {
    crate::guard(ALPROTO_UNKNOWN, || {
        pm_probe(Protocol::Qmtp, flow, direction, input, input_len)
    })
}

unsafe extern "C" fn qmqp_pm_probe(
    flow: *const Flow,
    direction: u8,
    input: *const u8,
    input_len: u32,
    _rdir: *mut u8,
) -> AppProto {
    crate::guard(ALPROTO_UNKNOWN, || {
        pm_probe(Protocol::Qmqp, flow, direction, input, input_len)
    })
}

fn state_new(protocol: Protocol) -> *mut c_void {
    Box::into_raw(Box::new(QmState::new(protocol))) as *mut c_void
}

extern "C" fn qmtp_state_new(_orig: *mut c_void, _orig_proto: AppProto) -> *mut c_void {
    crate::guard(std::ptr::null_mut(), || state_new(Protocol::Qmtp))
}

extern "C" fn qmqp_state_new(_orig: *mut c_void, _orig_proto: AppProto) -> *mut c_void {
    crate::guard(std::ptr::null_mut(), || state_new(Protocol::Qmqp))
}

unsafe extern "C" fn state_free(state: *mut c_void) {
    if !state.is_null() {
        crate::guard((), || drop(Box::from_raw(state as *mut QmState)))
    }
}

unsafe fn qm_state<'a>(state: *mut c_void) -> Option<&'a mut QmState> {
    (state as *mut QmState).as_mut()
}

unsafe extern "C" fn state_tx_free(state: *mut c_void, tx_id: u64) {
    crate::guard((), || {
        if let Some(s) = qm_state(state) {
            if let Some(i) = s.txs.iter().position(|t| t.tx.id == tx_id.wrapping_add(1)) {
                s.txs.remove(i);
            }
        }
    })
}

fn now_ns(flow: *const Flow) -> u64 {
    if flow.is_null() {
        return 0;
    }
    let d = flow_get_last_time(unsafe { &*flow });
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The layout of Suricata 8.0's `StreamSlice` (`rust/src/applayer.rs`,
/// `#[repr(C)]`, filled by C in `app-layer-parser.c`), whose stream offset
/// has no accessor in 8.0.
#[repr(C)]
struct StreamSliceLayout {
    input: *const u8,
    input_len: u32,
    flags: u8,
    offset: u64,
}

const _: () = assert!(
    std::mem::size_of::<StreamSliceLayout>() == std::mem::size_of::<StreamSlice>()
        && std::mem::align_of::<StreamSliceLayout>() == std::mem::align_of::<StreamSlice>()
);

/// Suricata's stream offset of the slice's first byte (its app-layer
/// progress when it made the call).
fn slice_offset(slice: &StreamSlice) -> u64 {
    // SAFETY: both types are #[repr(C)] with the same fields in the same
    // order (size and alignment checked above); this only reads a u64
    // through a shared reference that lives for the call.
    unsafe { (*(slice as *const StreamSlice).cast::<StreamSliceLayout>()).offset }
}

unsafe fn parse(
    flow: *mut Flow,
    state: *mut c_void,
    pstate: *mut AppLayerParserState,
    slice: StreamSlice,
    dir: usize,
) -> AppLayerResult {
    crate::guard(AppLayerResult::ok(), || {
        let Some(s) = qm_state(state) else {
            return AppLayerResult::ok();
        };
        let isset = |flag| !pstate.is_null() && SCAppLayerParserStateIssetFlag(pstate, flag) > 0;
        let (mine, other) = if dir == TO_SERVER {
            (APP_LAYER_PARSER_EOF_TS, APP_LAYER_PARSER_EOF_TC)
        } else {
            (APP_LAYER_PARSER_EOF_TC, APP_LAYER_PARSER_EOF_TS)
        };
        let ahead = s.parse(flow, dir, &slice, isset(mine));
        // Suricata's flow timeout may mark the other direction ended
        // without calling its parser: the flow is over once both are.
        if isset(mine) && isset(other) {
            s.parse_eof(flow, 1 - dir);
        }
        match ahead {
            // Every byte given is consumed; Suricata calls again once that
            // many more are in (or the stream ends, or a gap comes: then it
            // may pass over what it held, which `catch_up` notices).
            Some(n) => AppLayerResult::incomplete(slice.len(), n),
            None => AppLayerResult::ok(),
        }
    })
}

unsafe extern "C" fn parse_ts(
    flow: *mut Flow,
    state: *mut c_void,
    pstate: *mut AppLayerParserState,
    slice: StreamSlice,
    _data: *const c_void,
) -> AppLayerResult {
    parse(flow, state, pstate, slice, TO_SERVER)
}

unsafe extern "C" fn parse_tc(
    flow: *mut Flow,
    state: *mut c_void,
    pstate: *mut AppLayerParserState,
    slice: StreamSlice,
    _data: *const c_void,
) -> AppLayerResult {
    parse(flow, state, pstate, slice, TO_CLIENT)
}

unsafe extern "C" fn state_get_tx(state: *mut c_void, tx_id: u64) -> *mut c_void {
    crate::guard(std::ptr::null_mut(), || {
        match qm_state(state)
            .and_then(|s| s.txs.iter_mut().find(|t| t.tx.id == tx_id.wrapping_add(1)))
        {
            Some(t) => t as *mut QmTx as *mut c_void,
            None => std::ptr::null_mut(),
        }
    })
}

unsafe extern "C" fn state_get_tx_count(state: *mut c_void) -> u64 {
    crate::guard(0, || {
        qm_state(state)
            .and_then(|s| s.core.as_ref())
            .map_or(0, FlowState::tx_count)
    })
}

/// Transactions are created complete: when their replies are in, or when
/// the flow ended; only the placeholder a flow holds open while it waits
/// for its end is in progress (see `FlowState::eof`).
unsafe extern "C" fn tx_get_progress(tx: *mut c_void, _direction: u8) -> c_int {
    crate::guard(1, || match (tx as *const QmTx).as_ref() {
        Some(t) if t.tx.open => 0,
        _ => 1,
    })
}

unsafe extern "C" fn get_tx_data(tx: *mut c_void) -> *mut AppLayerTxData {
    &mut (*(tx as *mut QmTx)).tx_data
}

unsafe extern "C" fn get_state_data(state: *mut c_void) -> *mut AppLayerStateData {
    &mut (*(state as *mut QmState)).state_data
}

unsafe extern "C" fn get_event_info(
    event_name: *const c_char,
    event_id: *mut u8,
    event_type: *mut AppLayerEventType,
) -> c_int {
    crate::guard(-1, || {
        if event_name.is_null() || event_id.is_null() || event_type.is_null() {
            return -1;
        }
        match events::id_by_name(CStr::from_ptr(event_name).to_bytes()) {
            Some(id) => {
                *event_id = id;
                *event_type = AppLayerEventType::APP_LAYER_EVENT_TYPE_TRANSACTION;
                0
            }
            None => -1,
        }
    })
}

unsafe extern "C" fn get_event_info_by_id(
    event_id: u8,
    event_name: *mut *const c_char,
    event_type: *mut AppLayerEventType,
) -> c_int {
    crate::guard(-1, || {
        if event_name.is_null() || event_type.is_null() {
            return -1;
        }
        match events::kind(event_id).and_then(events::c_name) {
            Some(name) => {
                *event_name = name.as_ptr();
                *event_type = AppLayerEventType::APP_LAYER_EVENT_TYPE_TRANSACTION;
                0
            }
            None => -1,
        }
    })
}

unsafe extern "C" fn get_tx_iterator(
    _ipproto: u8,
    _alproto: AppProto,
    state: *mut c_void,
    min_tx_id: u64,
    _max_tx_id: u64,
    istate: &mut u64,
) -> suricata::applayer::AppLayerGetTxIterTuple {
    use suricata::applayer::AppLayerGetTxIterTuple;
    crate::guard(AppLayerGetTxIterTuple::not_found(), || {
        let Some(s) = qm_state(state) else {
            return AppLayerGetTxIterTuple::not_found();
        };
        let mut index = usize::try_from(*istate).unwrap_or(usize::MAX);
        let len = s.txs.len();
        while index < len {
            let Some(t) = s.txs.get_mut(index) else {
                break;
            };
            let id = t.tx.id.wrapping_sub(1);
            if id < min_tx_id {
                index += 1;
                continue;
            }
            *istate = (index + 1) as u64;
            let has_next = index + 1 < len;
            return AppLayerGetTxIterTuple::with_values(
                t as *mut QmTx as *mut c_void,
                id,
                has_next,
            );
        }
        AppLayerGetTxIterTuple::not_found()
    })
}

fn parser(
    name: &'static CStr,
    port: &'static CStr,
    state_new: suricata::applayer::StateAllocFn,
) -> RustParser {
    RustParser {
        name: name.as_ptr(),
        default_port: port.as_ptr(),
        ipproto: IPPROTO_TCP,
        probe_ts: Some(qm_probe),
        probe_tc: Some(qm_probe),
        min_depth: 0,
        max_depth: PROBE_MAX_DEPTH,
        state_new,
        state_free,
        tx_free: state_tx_free,
        parse_ts,
        parse_tc,
        get_tx_count: state_get_tx_count,
        get_tx: state_get_tx,
        tx_comp_st_ts: 1,
        tx_comp_st_tc: 1,
        tx_get_progress,
        get_eventinfo: Some(get_event_info),
        get_eventinfo_byid: Some(get_event_info_by_id),
        localstorage_new: None,
        localstorage_free: None,
        get_tx_files: None,
        get_tx_iterator: Some(get_tx_iterator),
        get_tx_data,
        get_state_data,
        apply_tx_config: None,
        flags: APP_LAYER_PARSER_OPT_ACCEPT_GAPS,
        get_frame_id_by_name: None,
        get_frame_name_by_id: None,
        get_state_id_by_name: None,
        get_state_name_by_id: None,
    }
}

/// Patterns that send a direction's first bytes to the probing parser on
/// any port: the colon after a netstring length (at most 12 digits).
unsafe fn register_patterns(alproto: AppProto, pp: suricata_sys::sys::ProbingParserFPtr) {
    for dir in [STREAM_TOSERVER, STREAM_TOCLIENT] {
        if SCAppLayerProtoDetectPMRegisterPatternCSwPP(
            IPPROTO_TCP,
            alproto,
            c":".as_ptr(),
            13,
            0,
            dir,
            pp,
            0,
            PROBE_MAX_DEPTH,
        ) < 0
        {
            suricata::SCLogError!("qmwatch: could not register a detection pattern");
        }
    }
}

unsafe fn register(protocol: Protocol) {
    let (name, port, new, pp, slot): (
        &'static CStr,
        &'static CStr,
        suricata::applayer::StateAllocFn,
        suricata_sys::sys::ProbingParserFPtr,
        &AtomicU16,
    ) = match protocol {
        Protocol::Qmtp => (
            c"qmtp",
            c"209",
            qmtp_state_new,
            Some(qmtp_pm_probe),
            &ALPROTO_QMTP,
        ),
        Protocol::Qmqp => (
            c"qmqp",
            c"628",
            qmqp_state_new,
            Some(qmqp_pm_probe),
            &ALPROTO_QMQP,
        ),
    };
    let p = parser(name, port, new);
    let tcp = c"tcp";
    if SCAppLayerProtoDetectConfProtoDetectionEnabled(tcp.as_ptr(), p.name) != 0 {
        let alproto = AppLayerRegisterProtocolDetection(&p, 1);
        slot.store(alproto, Ordering::Relaxed);
        register_patterns(alproto, pp);
        if SCAppLayerParserConfParserEnabled(tcp.as_ptr(), p.name) != 0 {
            let _ = AppLayerRegisterParser(&p, alproto);
        }
        SCAppLayerParserRegisterLogger(IPPROTO_TCP, alproto);
    } else {
        suricata::SCLogNotice!("qmwatch: {} detection disabled", protocol.name());
    }
}

pub(crate) unsafe extern "C" fn qmtp_register_parser() {
    crate::guard((), || register(Protocol::Qmtp))
}

pub(crate) unsafe extern "C" fn qmqp_register_parser() {
    crate::guard((), || register(Protocol::Qmqp))
}
