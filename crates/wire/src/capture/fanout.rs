//! `PACKET_FANOUT`: several capture sockets sharing one interface, the
//! kernel spreading flows over them (Linux, feature `live`).
//!
//! libpcap has no call for it, so the option is set with `setsockopt` on
//! each handle's descriptor. This is the ONLY module of qmwatch allowed
//! `unsafe` code: two libc calls, each on a descriptor borrowed for the
//! duration of the call, with a pointer to a local integer and its exact
//! size.
//!
//! Owns: joining the sockets into one group with `PACKET_FANOUT_HASH` (the
//! kernel's symmetric flow hash, so both directions of a connection reach
//! the same socket) and `PACKET_FANOUT_FLAG_DEFRAG` (IP fragments are
//! reassembled before the hash, so they follow their flow); the group id is
//! picked by the kernel (`PACKET_FANOUT_FLAG_UNIQUEID`), or derived from
//! the process id on a kernel that cannot.
//!
//! Must not: touch anything but the socket option, or be used on a
//! descriptor it does not borrow.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Flows hashed (symmetric on Linux ≥ 4.2), fragments reassembled first.
const MODE: u32 = libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG;

fn set(fd: BorrowedFd<'_>, value: u32) -> io::Result<()> {
    let v = value as libc::c_int;
    // SAFETY: `fd` is an open socket for the lifetime of the borrow; the
    // kernel reads exactly `size_of::<c_int>()` bytes from `&v`, a live
    // local, and keeps no pointer to it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            (&v as *const libc::c_int).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn get(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is an open socket for the lifetime of the borrow; the
    // kernel writes at most `len` bytes into `v`, a live local, and updates
    // `len`, another live local.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            (&mut v as *mut libc::c_int).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(v as u32)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Joins every socket into one new fanout group; returns its id.
pub(crate) fn join_all(fds: &[BorrowedFd<'_>]) -> io::Result<u16> {
    let Some((first, rest)) = fds.split_first() else {
        return Ok(0);
    };
    let id = match set(*first, libc::PACKET_FANOUT_FLAG_UNIQUEID << 16 | MODE << 16) {
        Ok(()) => (get(*first)? & 0xffff) as u16,
        Err(_) => {
            // Kernels without UNIQUEID (before 4.20): the low bits of the
            // process id, unlikely to be another group's on this host.
            let id = (std::process::id() & 0xffff) as u16;
            set(*first, u32::from(id) | MODE << 16)?;
            id
        }
    };
    for fd in rest {
        set(*fd, u32::from(id) | MODE << 16)?;
    }
    Ok(id)
}
