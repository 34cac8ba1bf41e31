//! Dropping root after binding: supplementary groups, then the group, then the
//! user (nix), then a check that the drop really happened.
//!
//! Order of the pool's start (see `pool::Pool::bind`): bind every listener, read
//! every certificate and key, create the attach socket (and give it to the target
//! user, so that zerglings running as that user can attach and the pool can
//! remove it at exit), then call [`drop_privileges`]. Any failure is an error:
//! the pool never goes on running as root by accident.

use nix::unistd::{getegid, geteuid, getgid, getgroups, getuid, setgid, setgroups, setuid, Gid, Uid, User};
use tracing::{info, warn};

/// Why the privilege drop failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivilegeError {
    /// `uid`/`gid` given, but the pool is not root.
    #[error("uid/gid are set but the pool runs as uid {0}, not root: start it as root, or remove uid/gid")]
    NotRoot(u32),
    /// A system call failed.
    #[error("cannot {step}")]
    Step {
        /// What was being done.
        step: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// The check after the drop failed.
    #[error("privilege drop did not hold: {0}; refusing to run")]
    Verify(String),
}

/// The ids to become: `uid` and `gid` as configured. Without `gid`, the group is
/// the user's primary group (never root's group by accident).
pub fn target_ids(uid: Option<u32>, gid: Option<u32>) -> Option<(Uid, Gid)> {
    let uid = Uid::from_raw(uid?);
    let gid = match gid {
        Some(g) => Gid::from_raw(g),
        None => User::from_uid(uid).ok().flatten().map_or(Gid::from_raw(uid.as_raw()), |u| u.gid),
    };
    Some((uid, gid))
}

/// Drops to `uid`/`gid`, or warns once when running as root with no `uid`.
pub fn drop_privileges(uid: Option<u32>, gid: Option<u32>) -> Result<(), PrivilegeError> {
    let Some((uid, gid)) = target_ids(uid, gid) else {
        if let Some(g) = gid {
            // Only a group: switch group, keep the user.
            return drop_group_only(Gid::from_raw(g));
        }
        if geteuid().is_root() {
            warn!("running as root: set `uid` (and `gid`) to drop privileges after binding");
        }
        return Ok(());
    };
    if !geteuid().is_root() {
        if geteuid() == uid {
            return Ok(()); // already the target user
        }
        return Err(PrivilegeError::NotRoot(geteuid().as_raw()));
    }
    let step = |step: &str| {
        let step = step.to_owned();
        move |source| PrivilegeError::Step { step, source }
    };
    setgroups(&[gid]).map_err(step("drop supplementary groups (setgroups)"))?;
    setgid(gid).map_err(step(&format!("set gid {gid}")))?;
    setuid(uid).map_err(step(&format!("set uid {uid}")))?;
    verify(uid, gid)?;
    info!(uid = uid.as_raw(), gid = gid.as_raw(), "dropped privileges");
    Ok(())
}

fn drop_group_only(gid: Gid) -> Result<(), PrivilegeError> {
    if !geteuid().is_root() {
        return Err(PrivilegeError::NotRoot(geteuid().as_raw()));
    }
    setgroups(&[gid]).map_err(|source| PrivilegeError::Step { step: "drop supplementary groups".into(), source })?;
    setgid(gid).map_err(|source| PrivilegeError::Step { step: format!("set gid {gid}"), source })?;
    warn!(gid = gid.as_raw(), "gid set without uid: still running as root");
    Ok(())
}

/// Checks that every id is the target's and that root cannot be regained.
fn verify(uid: Uid, gid: Gid) -> Result<(), PrivilegeError> {
    if getuid() != uid || geteuid() != uid {
        return Err(PrivilegeError::Verify(format!("uid is {}/{} instead of {uid}", getuid(), geteuid())));
    }
    if getgid() != gid || getegid() != gid {
        return Err(PrivilegeError::Verify(format!("gid is {}/{} instead of {gid}", getgid(), getegid())));
    }
    match getgroups() {
        Ok(groups) if groups.iter().all(|g| *g == gid) => {}
        Ok(groups) => return Err(PrivilegeError::Verify(format!("supplementary groups {groups:?} remain"))),
        Err(e) => return Err(PrivilegeError::Verify(format!("cannot read groups: {e}"))),
    }
    if !uid.is_root() && setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivilegeError::Verify("setuid(0) succeeded after the drop".into()));
    }
    Ok(())
}
