//! Dropping root after the capture device is open (`--user`, as
//! `tcpdump -Z`), feature `live`.
//!
//! Owns: looking the user up, and switching to its groups, group and user
//! (initgroups, setgid, setuid — in that order, so that nothing of root's
//! remains), then checking root cannot be regained.
//!
//! Must not: be called before every privileged step is done (opening the
//! capture handles), or leave the process half-switched: any failure is an
//! error and qmwatch does not start.

use std::ffi::CString;

use nix::unistd::{self, Uid, User};

/// Switches the whole process to `name`'s user, group and supplementary
/// groups. A process already running as that user is left as it is.
pub fn drop_to(name: &str) -> Result<(), String> {
    let user = User::from_name(name)
        .map_err(|e| format!("--user {name}: cannot look the user up: {e}"))?
        .ok_or_else(|| format!("--user {name}: no such user"))?;
    if unistd::geteuid() == user.uid && unistd::getegid() == user.gid {
        return Ok(());
    }
    let cname = CString::new(name).map_err(|_| format!("--user {name}: bad user name"))?;
    let fail = |what: &str, e: nix::Error| {
        format!(
            "--user {name}: cannot drop privileges ({what}: {e}); run as root, or without --user"
        )
    };
    unistd::initgroups(&cname, user.gid).map_err(|e| fail("initgroups", e))?;
    unistd::setgid(user.gid).map_err(|e| fail("setgid", e))?;
    unistd::setuid(user.uid).map_err(|e| fail("setuid", e))?;
    if !user.uid.is_root() && unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(format!(
            "--user {name}: root could be regained after dropping it"
        ));
    }
    Ok(())
}
