//! Dropping root after start-up: switch to an unprivileged user and keep only
//! CAP_SYS_TIME (to discipline the clock) and CAP_NET_BIND_SERVICE (to bind
//! port 123 again on a reload).
//!
//! Capabilities are per thread on Linux, so this runs on the main thread after
//! every socket is bound and before any other thread starts.

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{setgid, setgroups, setuid, Gid, Group, Uid, User};

/// Users tried, in order, when tachyond starts as root without `--user`.
pub const DEFAULT_USERS: &[&str] = &["tachyon", "ntp", "nobody"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub uid: Uid,
    pub gid: Gid,
}

/// Resolves `USER` or `USER:GROUP`.
pub fn lookup(spec: &str) -> Result<Identity, String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = User::from_name(user)
        .map_err(|e| format!("looking up user {user:?}: {e}"))?
        .ok_or_else(|| format!("no such user {user:?}"))?;
    let gid = match group {
        Some(g) => {
            Group::from_name(g)
                .map_err(|e| format!("looking up group {g:?}: {e}"))?
                .ok_or_else(|| format!("no such group {g:?}"))?
                .gid
        }
        None => entry.gid,
    };
    Ok(Identity {
        user: user.to_string(),
        uid: entry.uid,
        gid,
    })
}

/// The first of [`DEFAULT_USERS`] that exists.
pub fn default_identity() -> Option<Identity> {
    DEFAULT_USERS.iter().find_map(|u| lookup(u).ok())
}

fn kept() -> CapsHashSet {
    [Capability::CAP_SYS_TIME, Capability::CAP_NET_BIND_SERVICE]
        .into_iter()
        .collect()
}

/// Becomes `id`, keeping CAP_SYS_TIME and CAP_NET_BIND_SERVICE and nothing else
/// (the bounding set is emptied of the rest, so no exec can regain them).
pub fn drop_to(id: &Identity) -> Result<(), String> {
    let keep = kept();
    for cap in caps::all() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
        }
    }
    caps::securebits::set_keepcaps(true).map_err(|e| format!("PR_SET_KEEPCAPS: {e}"))?;
    setgroups(&[id.gid]).map_err(|e| format!("setgroups: {e}"))?;
    setgid(id.gid).map_err(|e| format!("setgid {}: {e}", id.gid))?;
    setuid(id.uid).map_err(|e| format!("setuid {}: {e}", id.uid))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| format!("capset permitted: {e}"))?;
    caps::set(None, CapSet::Effective, &keep).map_err(|e| format!("capset effective: {e}"))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| format!("capset inheritable: {e}"))?;
    caps::securebits::set_keepcaps(false).map_err(|e| format!("PR_SET_KEEPCAPS: {e}"))?;
    if Uid::effective().is_root() {
        return Err("still root after setuid".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let root = lookup("root").unwrap();
        assert!(root.uid.is_root());
        assert_eq!(lookup("root:root").unwrap().gid, Gid::from_raw(0));
        assert!(lookup("no-such-user-tachyon")
            .unwrap_err()
            .contains("no such user"));
        assert!(lookup("root:no-such-group-tachyon")
            .unwrap_err()
            .contains("no such group"));
    }

    /// Drops privileges in a child process (never in the test process itself)
    /// and checks what is left.
    #[test]
    fn drop_keeps_only_the_time_capabilities() {
        if !Uid::effective().is_root() {
            eprintln!("SKIPPED: needs root to drop privileges");
            return;
        }
        let Some(id) = default_identity() else {
            panic!("none of {DEFAULT_USERS:?} exists");
        };
        // Re-run this test binary with only the ignored child test, so the
        // test process itself keeps its privileges.
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "privileges::tests::child_drop",
                "--nocapture",
                "--include-ignored",
            ])
            .env("TACHYON_PRIV_CHILD", &id.user)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("CHILD-DROP-OK"), "{text}");
    }

    #[test]
    #[ignore = "run by drop_keeps_only_the_time_capabilities in a child process"]
    fn child_drop() {
        let Ok(user) = std::env::var("TACHYON_PRIV_CHILD") else {
            return;
        };
        let id = lookup(&user).unwrap();
        drop_to(&id).unwrap();
        assert_eq!(Uid::effective(), id.uid);
        assert_eq!(Uid::current(), id.uid);
        let effective = caps::read(None, CapSet::Effective).unwrap();
        assert_eq!(effective, kept());
        let bounding = caps::read(None, CapSet::Bounding).unwrap();
        assert_eq!(bounding, kept());
        assert!(crate::clock::may_set_time());
        println!("CHILD-DROP-OK");
    }
}
