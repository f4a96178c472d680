//! Start-up decisions: the clock mode, who to become, where to listen, and
//! what to warn about before serving.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use tachyon::clock::may_set_time;
use tachyon::config::{ClockChoice, Config};
use tachyon::control::BoundControl;
use tachyon::privileges;
use tachyon::server::{BoundServer, ServerOptions};

use crate::Args;

/// The port an unprivileged tachyond falls back to when it may not bind 123
/// (only with the embedded default configuration).
pub const FALLBACK_PORT: u16 = 12300;
const NTP_PORT: u16 = 123;

/// How the clock is steered. `clock auto` disciplines the system clock when
/// the process may (root, or CAP_SYS_TIME) and no other time daemon does;
/// `clock system` beside another time daemon is refused: two daemons
/// steering one clock fight, and neither serves good time.
pub fn choose_clock(config: &Config) -> anyhow::Result<ClockChoice> {
    let others = if config.local_stratum.is_none() && config.clock != ClockChoice::Software {
        tachyon::clock::other_time_daemons()
    } else {
        Vec::new()
    };
    let names = || {
        others
            .iter()
            .map(|d| format!("{} (pid {})", d.name, d.pid))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mode = match config.clock {
        ClockChoice::System if !others.is_empty() => anyhow::bail!(
            "`clock system`, but {} already disciplines this machine's clock: stop it first, \
             or serve with `clock software`",
            names()
        ),
        ClockChoice::Auto if !others.is_empty() => {
            log::warn!(
                "{} disciplines this machine's clock: tachyond leaves it alone and serves with a \
                 software correction (stop it, or set `clock system`, to let tachyond discipline it)",
                names()
            );
            ClockChoice::Software
        }
        ClockChoice::Auto if may_set_time() => ClockChoice::System,
        ClockChoice::Auto => ClockChoice::Software,
        other => other,
    };
    let how = match (config.clock, mode) {
        (ClockChoice::Auto, ClockChoice::System) => {
            "chosen automatically: allowed to set the time; tachyond disciplines this machine's clock"
        }
        (ClockChoice::Auto, _) => "chosen automatically: the host clock is left alone",
        _ => "chosen by the configuration",
    };
    if config.local_stratum.is_some() {
        log::info!("clock: the host clock, served as is (local stratum)");
    } else {
        log::info!("clock: {mode} ({how})");
    }
    Ok(mode)
}

/// Warns when the driftfile cannot be written by the user tachyond now runs
/// as: the frequency would be learned again at every start.
pub fn check_driftfile_directory(config: &Config) {
    let Some(path) = config
        .driftfile
        .as_ref()
        .or(config.chrony_driftfile.as_ref())
    else {
        return;
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if let Err(e) = nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK) {
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map_or_else(|| nix::unistd::geteuid().to_string(), |u| u.name);
        log::warn!(
            "driftfile {}: its directory is not writable by {user} ({e}): the frequency will not \
             be kept across restarts; make {} writable by {user}",
            path.display(),
            dir.display()
        );
    }
}

/// Who to become after binding: None to stay as we are.
pub fn identity_to_drop_to(args: &Args) -> anyhow::Result<Option<privileges::Identity>> {
    let root = nix::unistd::Uid::effective().is_root();
    match (&args.user, root) {
        (Some(_), false) => anyhow::bail!("--user needs tachyond to be started as root"),
        (Some(spec), true) => Ok(Some(privileges::lookup(spec).map_err(anyhow::Error::msg)?)),
        (None, true) if args.allow_root => {
            log::warn!("running as root (--allow-root): prefer --user");
            Ok(None)
        }
        (None, true) => match privileges::default_identity() {
            Some(id) => Ok(Some(id)),
            None => anyhow::bail!(
                "started as root and none of the users {:?} exists: give --user, or --allow-root",
                privileges::DEFAULT_USERS
            ),
        },
        (None, false) => Ok(None),
    }
}

fn default_listen(port: u16) -> Vec<SocketAddr> {
    let mut addrs = vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)];
    if UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_ok() {
        addrs.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
    } else {
        log::warn!("IPv6 is not available here; serving IPv4 only");
    }
    addrs
}

/// Binds every listening socket: the configured addresses, or port 123 on
/// every address; with the embedded default, port 12300 when 123 may not be
/// bound or is taken.
pub fn bind_listeners(
    config: &Config,
    embedded: bool,
    options: impl Fn(Vec<SocketAddr>) -> ServerOptions,
) -> anyhow::Result<BoundServer> {
    let listen = if config.listen.is_empty() {
        default_listen(NTP_PORT)
    } else {
        config.listen.clone()
    };
    match BoundServer::bind(options(listen)) {
        Ok(s) => Ok(s),
        Err(e)
            if embedded
                && matches!(
                    e.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::AddrInUse
                ) =>
        {
            log::warn!(
                "{e}; with the embedded default configuration tachyond falls back to port \
                 {FALLBACK_PORT}: query it with `chronyd -Q -t 5 'server 127.0.0.1 port \
                 {FALLBACK_PORT} iburst'` (ntpdig always asks port 123). Run as root or with \
                 CAP_NET_BIND_SERVICE to serve port 123."
            );
            Ok(BoundServer::bind(options(default_listen(FALLBACK_PORT)))?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Gives up what serving does not need: becomes `drop_to` (handing it the
/// control socket) when started as root, else sheds ambient capabilities;
/// either way keeps CAP_SYS_TIME only to discipline the system clock.
pub fn drop_privileges(
    drop_to: Option<&privileges::Identity>,
    control: &BoundControl,
    disciplines_clock: bool,
) -> anyhow::Result<()> {
    let Some(id) = drop_to else {
        return privileges::drop_capabilities(disciplines_clock).map_err(anyhow::Error::msg);
    };
    control.hand_over(id.uid, id.gid)?;
    privileges::drop_to(id, disciplines_clock).map_err(anyhow::Error::msg)?;
    log::info!(
        "running as {} (uid {}), keeping {}",
        id.user,
        id.uid,
        if disciplines_clock {
            "CAP_SYS_TIME only"
        } else {
            "no capabilities"
        }
    );
    if privileges::is_shared_account(id) {
        log::warn!(
            "running as the shared account {}: other services running as it can reach \
             tachyond's files; create a user of its own (useradd --system tachyon)",
            id.user
        );
    }
    Ok(())
}
