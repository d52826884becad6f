//! App-layer event numbering: [`AnomalyKind`] as Suricata's `u8` event ids.
//!
//! Owns: the mapping both ways (id = position in [`AnomalyKind::ALL`]) and
//! the NUL-terminated names Suricata's `get_event_info_by_id` hands out, so
//! rules say `app-layer-event:qmtp.<kind>` with qmwatch's own kind names.
//!
//! Must not: rename or renumber kinds on its own (the names are
//! `qmwatch-proto`'s, the ids follow its list).

use std::ffi::CStr;
use std::sync::OnceLock;

use qmwatch_proto::AnomalyKind;

/// The event id of `kind`.
pub fn id(kind: AnomalyKind) -> u8 {
    AnomalyKind::ALL
        .iter()
        .position(|k| *k == kind)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(u8::MAX)
}

/// The kind of event id `id`.
pub fn kind(id: u8) -> Option<AnomalyKind> {
    AnomalyKind::ALL.get(usize::from(id)).copied()
}

/// The event id of the kind named `name`.
pub fn id_by_name(name: &[u8]) -> Option<u8> {
    let name = std::str::from_utf8(name).ok()?;
    AnomalyKind::from_name(name).map(id)
}

/// The kind's name, NUL-terminated, for as long as the process lives.
pub fn c_name(kind: AnomalyKind) -> Option<&'static CStr> {
    static NAMES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        AnomalyKind::ALL
            .iter()
            .map(|k| {
                let mut v = k.name().as_bytes().to_vec();
                v.push(0);
                v
            })
            .collect()
    });
    let v = names.get(usize::from(id(kind)))?;
    CStr::from_bytes_with_nul(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for k in AnomalyKind::ALL {
            assert_eq!(kind(id(k)), Some(k));
            assert_eq!(id_by_name(k.name().as_bytes()), Some(id(k)));
            assert_eq!(c_name(k).unwrap().to_str().unwrap(), k.name());
        }
        assert_eq!(kind(200), None);
        assert_eq!(id_by_name(b"nope"), None);
    }
}
