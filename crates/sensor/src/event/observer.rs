//! Who observed the traffic: the `observer.*` fields stamped on every event.
//!
//! Owns: the sensor's host name (read once, sanitised) and the capture
//! interface. Must not: change per event (one observer a run).

/// Who observed the traffic: the `observer.*` fields stamped on every event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observer {
    /// `observer.hostname`; also the syslog HOSTNAME.
    pub hostname: String,
    /// `observer.ingress.interface.name`: the interface packets were
    /// captured on. Live capture sets it; a replay has none.
    pub ingress_interface: Option<String>,
}

impl Default for Observer {
    fn default() -> Self {
        Observer::from_system()
    }
}

impl Observer {
    /// The machine's host name (kernel, then `/etc/hostname`, then
    /// `$HOSTNAME`, else `localhost`), printable ASCII, at most 255 bytes.
    pub fn from_system() -> Observer {
        let from_files = ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|s| sanitize_hostname(&s))
            .find(|s| !s.is_empty());
        let hostname = from_files
            .or_else(|| {
                std::env::var("HOSTNAME")
                    .ok()
                    .map(|s| sanitize_hostname(&s))
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "localhost".to_string());
        Observer {
            hostname,
            ingress_interface: None,
        }
    }
}

/// Printable ASCII without spaces, at most 255 bytes.
fn sanitize_hostname(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect()
}
