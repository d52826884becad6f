// qmwatch Suricata plugin. SPDX-License-Identifier: GPL-2.0-only
//
//! Plugin entry: `SCPluginRegister`, and the registration of two app-layer
//! protocols, `qmtp` and `qmqp`, each with its parser, EVE logger
//! (`eve-log.qmtp` / `eve-log.qmqp`) and keywords.
//!
//! Must not: do work at load time beyond registering (Suricata calls the
//! registered functions once its configuration is read).

use std::ffi::c_char;

use suricata_sys::sys::{
    SCAppLayerPlugin, SCOutputJsonLogDirection, SCPlugin, SCPluginRegisterAppLayer, SC_API_VERSION,
    SC_PACKAGE_VERSION,
};

use crate::detect::{qmqp_keywords_register, qmtp_keywords_register};
use crate::log::{qmqp_logger_log, qmtp_logger_log};
use crate::parser::{qmqp_register_parser, qmtp_register_parser};

extern "C" fn qmwatch_plugin_init() {
    crate::guard((), || {
        suricata::plugin::init();
        let qmtp = SCAppLayerPlugin {
            name: c"qmtp".as_ptr(),
            logname: c"JsonQmtpLog".as_ptr(),
            confname: c"eve-log.qmtp".as_ptr(),
            dir: SCOutputJsonLogDirection::LOG_DIR_FLOW as u8,
            Register: Some(qmtp_register_parser),
            Logger: Some(qmtp_logger_log),
            KeywordsRegister: Some(qmtp_keywords_register),
        };
        let qmqp = SCAppLayerPlugin {
            name: c"qmqp".as_ptr(),
            logname: c"JsonQmqpLog".as_ptr(),
            confname: c"eve-log.qmqp".as_ptr(),
            dir: SCOutputJsonLogDirection::LOG_DIR_FLOW as u8,
            Register: Some(qmqp_register_parser),
            Logger: Some(qmqp_logger_log),
            KeywordsRegister: Some(qmqp_keywords_register),
        };
        for p in [qmtp, qmqp] {
            // Suricata keeps the pointer: leaked on purpose.
            let raw = Box::into_raw(Box::new(p));
            if unsafe { SCPluginRegisterAppLayer(raw) } != 0 {
                suricata::SCLogError!("qmwatch: failed to register an app-layer protocol");
            }
        }
    })
}

/// Suricata's plugin entry point.
#[no_mangle]
pub extern "C" fn SCPluginRegister() -> *const SCPlugin {
    crate::guard(std::ptr::null(), || {
        let plugin = SCPlugin {
            version: SC_API_VERSION,
            suricata_version: SC_PACKAGE_VERSION.as_ptr() as *const c_char,
            name: c"qmwatch".as_ptr(),
            plugin_version: concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char,
            license: c"GPL-2.0-only".as_ptr(),
            author: c"qmwatch developers".as_ptr(),
            Init: Some(qmwatch_plugin_init),
        };
        Box::into_raw(Box::new(plugin)) as *const SCPlugin
    })
}
