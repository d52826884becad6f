//! Live capture from a network interface through libpcap (feature `live`).
//!
//! Owns: opening the interface with sensor-grade options ([`LiveOptions`]:
//! promiscuous, whole frames, a large kernel buffer, a short packet-buffer
//! timeout so that TPACKET_V3 hands over a partly filled block quickly,
//! immediate mode only when asked), the BPF filter, checking the link type
//! is one the decoder knows, on Linux joining several handles into one
//! `PACKET_FANOUT` group (through [`super::fanout`]), waiting for packets
//! with `poll` (so a quiet line never blocks the capture thread past the
//! timeout), copying ready packets into a block buffer with a
//! [`PacketRecord`] each, and reading libpcap's drop counters.
//!
//! Must not: decode packets, block (handles are non-blocking; the only wait
//! is `poll` with a timeout), or panic on anything libpcap hands over (a
//! packet longer than its block or with an absurd time stamp is skipped).

use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use pcap::{Active, Capture};

use super::file::{PacketRecord, MAXIMUM_SNAPLEN};
use crate::decode::supported_link_type;

/// How to open an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveOptions {
    pub interface: String,
    /// Promiscuous mode (a SPAN port needs it).
    pub promisc: bool,
    /// Bytes captured of each frame.
    pub snaplen: u32,
    /// Kernel ring size in bytes, per handle.
    pub buffer_bytes: u32,
    /// Packet-buffer timeout in milliseconds: the kernel hands over a
    /// partly filled block after this long.
    pub timeout_ms: u32,
    /// libpcap immediate mode: every packet at once, without TPACKET_V3's
    /// batched blocks (more CPU per packet).
    pub immediate: bool,
    /// A BPF filter, as tcpdump takes it.
    pub filter: Option<String>,
}

impl LiveOptions {
    /// The defaults for `interface`: promiscuous, 262,144-byte snap length,
    /// 128 MiB buffer, 100 ms timeout, not immediate, no filter.
    pub fn new(interface: &str) -> LiveOptions {
        LiveOptions {
            interface: interface.to_string(),
            promisc: true,
            snaplen: MAXIMUM_SNAPLEN,
            buffer_bytes: 128 << 20,
            timeout_ms: 100,
            immediate: false,
            filter: None,
        }
    }
}

/// Drop counters libpcap reported since the previous reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// Dropped by the kernel because the ring was full (`ps_drop`).
    pub kernel: u64,
    /// Dropped by the interface or driver (`ps_ifdrop`).
    pub interface: u64,
}

/// One open capture handle.
pub struct Handle {
    cap: Capture<Active>,
    link_type: u32,
    interface: String,
    /// libpcap's cumulative counters at the previous reading (32-bit, wrap).
    last_drop: u32,
    last_ifdrop: u32,
}

/// Opens `count` handles on the interface (more than one: joined into one
/// `PACKET_FANOUT` group that hashes flows, Linux only). An error is one
/// line naming the interface and what went wrong.
pub fn open(opts: &LiveOptions, count: usize) -> Result<Vec<Handle>, String> {
    let mut v = Vec::new();
    for _ in 0..count.max(1) {
        v.push(open_one(opts)?);
    }
    if v.len() > 1 {
        join_fanout(&v, &opts.interface)?;
    }
    Ok(v)
}

#[cfg(target_os = "linux")]
fn join_fanout(handles: &[Handle], interface: &str) -> Result<(), String> {
    let fds: Vec<_> = handles.iter().map(|h| h.cap.as_fd()).collect();
    super::fanout::join_all(&fds)
        .map(|_| ())
        .map_err(|e| format!("{interface}: cannot join the PACKET_FANOUT group: {e}"))
}

#[cfg(not(target_os = "linux"))]
fn join_fanout(_: &[Handle], _: &str) -> Result<(), String> {
    Err("--fanout needs Linux (PACKET_FANOUT)".into())
}

fn open_one(o: &LiveOptions) -> Result<Handle, String> {
    let name = o.interface.as_str();
    let fail = |e: pcap::Error| {
        let why = describe(e);
        let hint = if why.contains("not permitted") || why.contains("ermission denied") {
            " (no permission: run as root, or give the binary CAP_NET_RAW and CAP_NET_ADMIN with `setcap cap_net_raw,cap_net_admin=eip`)"
        } else {
            ""
        };
        format!("cannot capture on {name}: {why}{hint}")
    };
    let inactive = Capture::from_device(name)
        .map_err(fail)?
        .promisc(o.promisc)
        .snaplen(i32::try_from(o.snaplen).unwrap_or(i32::MAX))
        .buffer_size(i32::try_from(o.buffer_bytes).unwrap_or(i32::MAX))
        .timeout(i32::try_from(o.timeout_ms).unwrap_or(1000))
        .immediate_mode(o.immediate);
    let mut cap = inactive.open().map_err(fail)?;
    let link_type = u32::try_from(cap.get_datalink().0).unwrap_or(u32::MAX);
    if !supported_link_type(link_type) {
        let lt = cap.get_datalink();
        let lname = lt.get_name().unwrap_or_else(|_| "unknown".into());
        return Err(format!(
            "{name}: link type {lname} ({}) is not one qmwatch decodes (Ethernet, Linux cooked, raw IP, BSD loopback)",
            lt.0
        ));
    }
    if let Some(f) = &o.filter {
        cap.filter(f, true)
            .map_err(|e| format!("bad capture filter {f:?}: {}", describe(e)))?;
    }
    let cap = cap.setnonblock().map_err(fail)?;
    Ok(Handle {
        cap,
        link_type,
        interface: name.to_string(),
        last_drop: 0,
        last_ifdrop: 0,
    })
}

/// libpcap's message, without the enum's decoration.
fn describe(e: pcap::Error) -> String {
    match e {
        pcap::Error::PcapError(s) if !s.is_empty() => s,
        other => other.to_string(),
    }
}

impl Handle {
    /// The link type of the interface (a pcap LINKTYPE value).
    pub fn link_type(&self) -> u32 {
        self.link_type
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Waits until packets are ready, at most `timeout`. `Ok(false)` on a
    /// timeout or a signal (the caller checks its stop flag).
    pub fn wait(&self, timeout: Duration) -> Result<bool, String> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.cap.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) => Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(format!("{}: poll: {e}", self.interface)),
        }
    }

    /// Copies at most `max_packets` ready packets to the end of `buf`, each
    /// with its record; returns how many were ready (fewer than
    /// `max_packets`: the ring is empty for now).
    pub fn read(
        &mut self,
        buf: &mut Vec<u8>,
        records: &mut Vec<PacketRecord>,
        max_packets: usize,
    ) -> Result<usize, String> {
        let link_type = self.link_type;
        let r = self.cap.dispatch(Some(max_packets.max(1)), |p| {
            let Ok(data_start) = u32::try_from(buf.len()) else {
                return;
            };
            let Ok(caplen) = u32::try_from(p.data.len()) else {
                return;
            };
            let sec = u64::try_from(p.header.ts.tv_sec).unwrap_or(0);
            let usec = u64::try_from(p.header.ts.tv_usec).unwrap_or(0);
            buf.extend_from_slice(p.data);
            records.push(PacketRecord {
                ts_nanos: sec
                    .saturating_mul(1_000_000_000)
                    .saturating_add(usec.saturating_mul(1000)),
                link_type,
                data_start,
                caplen,
                origlen: p.header.len.max(caplen),
                interface: 0,
            });
        });
        r.map_err(|e| format!("{}: capture failed: {}", self.interface, describe(e)))
    }

    /// Kernel and interface drops since the previous call.
    pub fn drops(&mut self) -> Result<Drops, String> {
        let s = self
            .cap
            .stats()
            .map_err(|e| format!("{}: statistics: {}", self.interface, describe(e)))?;
        let d = Drops {
            kernel: u64::from(s.dropped.wrapping_sub(self.last_drop)),
            interface: u64::from(s.if_dropped.wrapping_sub(self.last_ifdrop)),
        };
        self.last_drop = s.dropped;
        self.last_ifdrop = s.if_dropped;
        Ok(d)
    }
}
