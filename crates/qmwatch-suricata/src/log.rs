// qmwatch Suricata plugin. SPDX-License-Identifier: GPL-2.0-only
//
//! The EVE logger: one record per transaction, `"event_type": "qmtp"` or
//! `"qmqp"`, written into Suricata's JSON builder.
//!
//! Owns: [`JbWriter`], the core's [`EveWriter`] over Suricata's C JSON
//! builder API.
//!
//! Must not: choose fields or their layout (the core's `eve` module does,
//! and docs/suricata.md documents it).

use std::ffi::{c_void, CString};

use qmwatch_suricata_core::eve::{self, EveWriter};
use suricata_sys::jsonbuilder::{
    SCJbAppendString, SCJbAppendStringFromBytes, SCJbClose, SCJbOpenArray, SCJbOpenObject,
    SCJbSetBool, SCJbSetString, SCJbSetStringFromBytes, SCJbSetUint, SCJbStartObject,
    SCJsonBuilder,
};

use crate::parser::QmTx;

/// [`EveWriter`] over Suricata's JSON builder.
struct JbWriter {
    jb: *mut SCJsonBuilder,
}

fn key(k: &str) -> Option<CString> {
    CString::new(k).ok()
}

fn len(b: &[u8]) -> u32 {
    u32::try_from(b.len()).unwrap_or(u32::MAX)
}

impl EveWriter for JbWriter {
    fn open_object(&mut self, k: &str) -> bool {
        key(k).is_some_and(|k| unsafe { SCJbOpenObject(self.jb, k.as_ptr()) })
    }
    fn open_array(&mut self, k: &str) -> bool {
        key(k).is_some_and(|k| unsafe { SCJbOpenArray(self.jb, k.as_ptr()) })
    }
    fn start_object(&mut self) -> bool {
        unsafe { SCJbStartObject(self.jb) }
    }
    fn close(&mut self) -> bool {
        unsafe { SCJbClose(self.jb) }
    }
    fn set_bytes(&mut self, k: &str, val: &[u8]) -> bool {
        if val.is_empty() {
            // Suricata's builder refuses an empty byte string.
            return key(k)
                .is_some_and(|k| unsafe { SCJbSetString(self.jb, k.as_ptr(), c"".as_ptr()) });
        }
        let val = val.get(..len(val) as usize).unwrap_or_default();
        key(k).is_some_and(|k| unsafe {
            SCJbSetStringFromBytes(self.jb, k.as_ptr(), val.as_ptr(), len(val))
        })
    }
    fn set_str(&mut self, k: &str, val: &str) -> bool {
        self.set_bytes(k, val.as_bytes())
    }
    fn set_uint(&mut self, k: &str, val: u64) -> bool {
        key(k).is_some_and(|k| unsafe { SCJbSetUint(self.jb, k.as_ptr(), val) })
    }
    fn set_bool(&mut self, k: &str, val: bool) -> bool {
        key(k).is_some_and(|k| unsafe { SCJbSetBool(self.jb, k.as_ptr(), val) })
    }
    fn append_bytes(&mut self, val: &[u8]) -> bool {
        if val.is_empty() {
            return unsafe { SCJbAppendString(self.jb, c"".as_ptr()) };
        }
        let val = val.get(..len(val) as usize).unwrap_or_default();
        unsafe { SCJbAppendStringFromBytes(self.jb, val.as_ptr(), len(val)) }
    }
}

unsafe fn log_tx(key: &str, tx: *const c_void, jb: *mut c_void) -> bool {
    crate::guard(false, || {
        let (Some(tx), false) = ((tx as *const QmTx).as_ref(), jb.is_null()) else {
            return false;
        };
        // A placeholder the flow's end left empty: no record.
        if tx.tx.is_empty() {
            return false;
        }
        let mut w = JbWriter {
            jb: jb as *mut SCJsonBuilder,
        };
        eve::log_as(&tx.tx, key, &mut w)
    })
}

pub(crate) unsafe extern "C" fn qmtp_logger_log(tx: *const c_void, jb: *mut c_void) -> bool {
    log_tx("qmtp", tx, jb)
}

pub(crate) unsafe extern "C" fn qmqp_logger_log(tx: *const c_void, jb: *mut c_void) -> bool {
    log_tx("qmqp", tx, jb)
}
