//! Dropping root after start-up: switch to an unprivileged user and keep only
//! CAP_SYS_TIME, and that only when the system clock is disciplined (`clock
//! system`); every socket is bound before, so nothing else is needed. The
//! process also sets no_new_privs, so nothing it could ever execute gains
//! privileges, with or without a service manager that sets it.
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

/// Whether `id` is the shared `nobody` account, which other services may
/// also run as (and so reach this daemon's files and sockets).
pub fn is_shared_account(id: &Identity) -> bool {
    id.user == "nobody"
}

/// The capabilities kept after the drop.
pub fn kept(discipline_clock: bool) -> CapsHashSet {
    let mut keep = CapsHashSet::new();
    if discipline_clock {
        keep.insert(Capability::CAP_SYS_TIME);
    }
    keep
}

/// Becomes `id`, keeping CAP_SYS_TIME when `discipline_clock` and nothing
/// else (the bounding set is emptied of the rest, so no exec can regain
/// them), and sets no_new_privs.
pub fn drop_to(id: &Identity, discipline_clock: bool) -> Result<(), String> {
    let keep = kept(discipline_clock);
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
    set_no_new_privs()
}

/// Started without root but with capabilities (a service manager's ambient
/// set: CAP_NET_BIND_SERVICE and CAP_NET_ADMIN to bind, CAP_SYS_TIME): once
/// the sockets are bound, keeps CAP_SYS_TIME when `discipline_clock` and
/// nothing else, and sets no_new_privs.
pub fn drop_capabilities(discipline_clock: bool) -> Result<(), String> {
    let keep = kept(discipline_clock);
    caps::clear(None, CapSet::Ambient)
        .map_err(|e| format!("clearing ambient capabilities: {e}"))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| format!("capset inheritable: {e}"))?;
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| e.to_string())?;
    let keep: CapsHashSet = keep.intersection(&permitted).copied().collect();
    caps::set(None, CapSet::Effective, &keep).map_err(|e| format!("capset effective: {e}"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| format!("capset permitted: {e}"))?;
    set_no_new_privs()
}

/// PR_SET_NO_NEW_PRIVS: execve can never add privileges (setuid binaries,
/// file capabilities) to this process or its children.
pub fn set_no_new_privs() -> Result<(), String> {
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))
}

/// Whether no_new_privs is set on this thread.
pub fn no_new_privs() -> bool {
    nix::sys::prctl::get_no_new_privs().unwrap_or(false)
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
    /// and checks what is left, with and without the clock to discipline.
    /// Needs root; skipped only where TACHYON_SKIP_EXTERNAL=1 says so.
    #[test]
    fn drop_keeps_only_what_the_clock_needs() {
        if !Uid::effective().is_root() {
            assert_eq!(
                std::env::var("TACHYON_SKIP_EXTERNAL").as_deref(),
                Ok("1"),
                "dropping privileges needs root: run the tests as root (as CI does), \
                 or set TACHYON_SKIP_EXTERNAL=1 to skip"
            );
            eprintln!("SKIPPED: needs root to drop privileges (TACHYON_SKIP_EXTERNAL=1)");
            return;
        }
        let Some(id) = default_identity() else {
            panic!("none of {DEFAULT_USERS:?} exists");
        };
        for discipline in ["system", "software"] {
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
                .env("TACHYON_PRIV_CLOCK", discipline)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{discipline}: {text}");
            assert!(text.contains("CHILD-DROP-OK"), "{discipline}: {text}");
        }
    }

    #[test]
    #[ignore = "run by drop_keeps_only_what_the_clock_needs in a child process"]
    fn child_drop() {
        let user = std::env::var("TACHYON_PRIV_CHILD").expect("run by the parent test");
        let discipline = std::env::var("TACHYON_PRIV_CLOCK").as_deref() == Ok("system");
        let id = lookup(&user).unwrap();
        assert!(!no_new_privs());
        drop_to(&id, discipline).unwrap();
        assert_eq!(Uid::effective(), id.uid);
        assert_eq!(Uid::current(), id.uid);
        let effective = caps::read(None, CapSet::Effective).unwrap();
        assert_eq!(effective, kept(discipline));
        let bounding = caps::read(None, CapSet::Bounding).unwrap();
        assert_eq!(bounding, kept(discipline));
        assert_eq!(crate::clock::may_set_time(), discipline);
        assert!(no_new_privs());
        println!("CHILD-DROP-OK");
    }
}
