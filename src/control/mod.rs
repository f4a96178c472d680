//! The local control socket that tachyonctl talks to: a Unix stream socket, one
//! request line in, one JSON document out. There is no network control plane, so
//! `nomodify` and `noquery` hold by design.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::clock::system_unix_ns;
use crate::endpoint::{serve_clients, Limits};
use crate::observe::Observed;
use crate::server::stats::{merged, merged_signed, sum, Outcome, StampSource, WorkerStats};
use crate::state::unix_ns_to_ntp;
use crate::sync::refid::refid_text;
use crate::telemetry::histogram::Snapshot;
use crate::telemetry::signed::SignedSnapshot;

/// Where the socket lives unless told otherwise: `/run/tachyon/` as root;
/// otherwise a directory private to the user (`$XDG_RUNTIME_DIR`, else
/// `tachyon-UID` in the temp directory), never a fixed name in a directory
/// other users can write to.
pub fn default_socket_path() -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return Path::new(RUN_DIR).join(SOCKET_NAME);
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join(SOCKET_NAME),
        None => std::env::temp_dir()
            .join(format!("tachyon-{uid}"))
            .join(SOCKET_NAME),
    }
}

/// The directory the default socket lives in as root.
pub const RUN_DIR: &str = "/run/tachyon";
const SOCKET_NAME: &str = "tachyond.sock";

/// Makes sure the default socket's directory exists and is private: created
/// 0700 (0755 for `/run/tachyon`, which root hands to the service user) when
/// missing; an existing one must be a real directory that no group or other
/// user can write to (anyone could squat a name there), and, unless we are
/// root, our own.
fn prepare_directory(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let mode = if dir == Path::new(RUN_DIR) {
        0o755
    } else {
        0o700
    };
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    let uid = nix::unistd::geteuid();
    let unsafe_dir = !meta.is_dir()
        || (!uid.is_root() && meta.uid() != uid.as_raw())
        || meta.permissions().mode() & 0o022 != 0;
    if unsafe_dir {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a private directory of this user (owner uid {}, mode {:o}): \
                 give the control socket a path with --control-socket",
                dir.display(),
                meta.uid(),
                meta.permissions().mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// One row of `tachyonctl sources`, as `ntpq -p` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceRow {
    /// `*` system peer, `+` candidate, `-` outlier, `x` falseticker, ` ` other.
    pub mark: String,
    pub remote: String,
    pub refid: String,
    pub stratum: u8,
    /// Seconds since the last sample; None before the first.
    pub when: Option<f64>,
    /// Poll interval, log2 seconds.
    pub poll: i8,
    pub reach: u8,
    pub delay_ms: f64,
    pub offset_ms: f64,
    pub jitter_ms: f64,
    /// selected, candidate, falseticker, unreachable, ...
    pub state: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub uptime_seconds: f64,
    pub synchronized: bool,
    pub leap: u8,
    pub stratum: u8,
    pub refid: String,
    pub reference_age_seconds: Option<f64>,
    pub clock: String,
    pub offset_seconds: f64,
    pub frequency_ppm: f64,
    pub root_delay_seconds: f64,
    pub root_dispersion_seconds: f64,
    pub root_distance_seconds: f64,
    pub precision_log2: i8,
    pub workers: usize,
    pub backend: String,
    pub requests_per_second: f64,
    pub received: u64,
    pub answered: u64,
    /// Kiss-o'-Death replies (rate limiting): answered, but not with time.
    #[serde(default)]
    pub kod: u64,
    /// Neither answered nor sent a KoD: received − answered − kod.
    pub dropped: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// (outcome, count) over all workers, families and versions.
    pub outcomes: Vec<(String, u64)>,
    pub rate_limit_leaked: u64,
    pub rx_timestamp_missing: u64,
    /// Requests the kernel dropped for a full socket receive queue.
    #[serde(default)]
    pub socket_drops: u64,
    pub receive_errors: u64,
    pub send_errors: u64,
    /// Server processing time T3 − T2, seconds.
    pub response_time: Percentiles,
    /// Datagrams per worker wake-up.
    pub batch_size: Percentiles,
    /// Datagrams received per worker.
    pub per_worker: Vec<u64>,
    /// Kernel transmit stamp − transmit timestamp written, seconds, per
    /// basic reply: how far off the estimated departure (T3) was.
    #[serde(default)]
    pub t3_error: SignedPercentiles,
    /// Replies by where their transmit timestamp came from once sent.
    #[serde(default)]
    pub tx_stamps: TxStamps,
    /// The interleaved mode (RFC 9769).
    #[serde(default)]
    pub xleave: Xleave,
}

/// Percentiles of a signed quantity (seconds).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SignedPercentiles {
    pub count: u64,
    pub mean: Option<f64>,
    pub p1: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TxStamps {
    pub kernel: u64,
    pub hardware: u64,
    pub none: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Xleave {
    pub enabled: bool,
    /// Replies in the interleaved mode.
    pub interleaved: u64,
    /// Requests that asked for it, answered in the basic mode.
    pub missed: u64,
    /// Pairs held now, and at most.
    pub held: i64,
    pub capacity: u64,
    pub kept: u64,
    pub replaced: u64,
    pub not_kept: u64,
    pub removed: u64,
}

fn signed_percentiles(s: &SignedSnapshot, scale: f64) -> SignedPercentiles {
    let q = |p| s.quantile(p).map(|v| v as f64 * scale);
    let count = s.count();
    SignedPercentiles {
        count,
        mean: (count > 0).then(|| s.sum() as f64 / count as f64 * scale),
        p1: q(0.01),
        p50: q(0.5),
        p99: q(0.99),
        p999: q(0.999),
    }
}

fn xleave(view: &Observed) -> Xleave {
    let sum = |counter: fn(&WorkerStats) -> u64| sum(&view.workers, counter);
    Xleave {
        enabled: view.xleave_capacity.is_some(),
        interleaved: sum(|w| w.xleave.interleaved.get()),
        missed: sum(|w| w.xleave.missed.get()),
        held: view
            .workers
            .iter()
            .map(|w| w.xleave_held())
            .sum::<i64>()
            .max(0),
        capacity: view.xleave_capacity.unwrap_or(0) as u64,
        kept: sum(|w| w.xleave.kept.get()),
        replaced: sum(|w| w.xleave.replaced.get()),
        not_kept: sum(|w| w.xleave.not_kept.get()),
        removed: sum(|w| w.xleave.removed.get()),
    }
}

fn percentiles(s: &Snapshot, scale: f64) -> Percentiles {
    let q = |p| s.quantile(p).map(|v| v as f64 * scale);
    Percentiles {
        count: s.count,
        p50: q(0.5),
        p99: q(0.99),
        p999: q(0.999),
    }
}

/// `tachyonctl status`.
pub fn status(view: &Observed) -> Status {
    let st = view.state.read();
    let sys = &st.system;
    let now = unix_ns_to_ntp(st.correction.apply(system_unix_ns()));
    let counts = view.outcomes();
    let received = counts.received();
    let answered = counts.get(Outcome::Answered);
    let kod = counts.get(Outcome::Kod);
    let dispersion = sys.root_dispersion_at(now);
    Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: view.started.elapsed().as_secs_f64(),
        synchronized: sys.is_synchronized(),
        leap: sys.leap as u8,
        stratum: sys.stratum,
        refid: if sys.reference_id == *b"LOCL" {
            ".LOCL.".into()
        } else {
            refid_text(sys.reference_id, sys.stratum)
        },
        reference_age_seconds: (!sys.reference_time.is_zero())
            .then(|| now.seconds_since(sys.reference_time)),
        clock: view.clock.clone(),
        offset_seconds: st.correction.offset,
        frequency_ppm: st.correction.frequency * 1e6,
        root_delay_seconds: sys.root_delay,
        root_dispersion_seconds: dispersion,
        root_distance_seconds: sys.root_delay / 2.0 + dispersion,
        precision_log2: sys.precision,
        workers: view.workers.len(),
        backend: view.backend.to_string(),
        requests_per_second: view.requests_per_second(),
        received,
        answered,
        kod,
        dropped: received - answered - kod,
    }
}

/// `tachyonctl stats`.
pub fn stats(view: &Observed) -> Stats {
    let merge = |pick| merged(&view.workers, pick);
    let sum = |counter| sum(&view.workers, counter);
    Stats {
        outcomes: view
            .outcomes()
            .iter()
            .map(|(o, n)| (o.label().to_string(), n))
            .collect(),
        rate_limit_leaked: sum(|w| w.rate_limit_leaked.get()),
        rx_timestamp_missing: sum(|w| w.rx_stamp_missing.get()),
        socket_drops: sum(|w| w.socket_drops.get()),
        receive_errors: sum(|w| w.recv_errors.get()),
        send_errors: sum(|w| w.send_errors.get()),
        response_time: percentiles(&merge(|w| &w.response_time), 1e-9),
        batch_size: percentiles(&merge(|w| &w.batch_size), 1.0),
        per_worker: view.workers.iter().map(|w| w.received()).collect(),
        t3_error: signed_percentiles(&merged_signed(&view.workers, |w| &w.t3_error), 1e-9),
        tx_stamps: TxStamps {
            kernel: sum(|w| w.stamps(StampSource::Kernel)),
            hardware: sum(|w| w.stamps(StampSource::Hardware)),
            none: sum(|w| w.stamps(StampSource::None)),
        },
        xleave: xleave(view),
    }
}

/// `tachyonctl sources`: the sync thread's reports as `ntpq -p` shows them.
pub fn sources(view: &Observed) -> Vec<SourceRow> {
    view.sources
        .read()
        .iter()
        .map(|r| SourceRow {
            mark: r.mark.symbol().to_string(),
            remote: r.address.to_string(),
            refid: refid_text(r.refid, r.stratum),
            stratum: r.stratum,
            when: r.last_sample_age,
            poll: r.poll,
            reach: r.reach,
            delay_ms: r.delay.unwrap_or(0.0) * 1e3,
            offset_ms: r.offset.unwrap_or(0.0) * 1e3,
            jitter_ms: r.jitter.unwrap_or(0.0) * 1e3,
            state: r.mark.as_str().to_string(),
        })
        .collect()
}

/// The answer to one command line.
fn answer(view: &Observed, command: &str) -> Result<String, String> {
    let json = match command {
        "status" => serde_json::to_string(&status(view)),
        "stats" => serde_json::to_string(&stats(view)),
        "sources" => serde_json::to_string(&sources(view)),
        other => return Err(format!("unknown command {other:?}: status, sources, stats")),
    };
    json.map_err(|e| e.to_string())
}

/// The longest request line (a command word) read from a client.
const MAX_REQUEST_BYTES: u64 = 256;
/// Time for a whole exchange: a client that sends a byte at a time is cut
/// off, whatever the pace.
const EXCHANGE_DEADLINE: Duration = Duration::from_secs(2);
/// Clients served at once; more are closed at once.
const MAX_CLIENTS: usize = 16;

/// The control socket's server thread.
pub struct ControlServer {
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The control socket, bound (so it can be created before privileges are
/// dropped) but not yet served.
pub struct BoundControl {
    path: PathBuf,
    listener: std::os::unix::net::UnixListener,
    /// The socket's directory was made here (or is the default one), so it
    /// goes to the daemon's user with the socket.
    own_directory: bool,
}

impl ControlServer {
    /// Creates the socket (and, for the default path, its directory);
    /// [`BoundControl::start`] serves it.
    ///
    /// Call it before any other thread exists: the socket is created 0660
    /// through the process umask.
    pub fn bind(path: &Path) -> io::Result<BoundControl> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let own_directory = if path == default_socket_path() {
            prepare_directory(dir)?;
            true
        } else if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            // Group may enter, so tachyonctl users in the daemon's group can connect.
            std::fs::DirBuilder::new()
                .mode(0o750)
                .create(dir)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
            true
        } else {
            false
        };
        // A socket left by a crashed daemon is replaced; a live daemon's is not.
        if std::fs::symlink_metadata(path).is_ok() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use: is another tachyond running?", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        // Created 0660 (root, the daemon's user and its group may connect):
        // setting the mode afterwards would follow a link swapped in meanwhile.
        // Still single-threaded here, so the process umask is ours to borrow.
        let umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o117));
        let bound = std::os::unix::net::UnixListener::bind(path);
        nix::sys::stat::umask(umask);
        let listener = bound.map_err(|e| {
            io::Error::new(e.kind(), format!("control socket {}: {e}", path.display()))
        })?;
        listener.set_nonblocking(true)?;
        Ok(BoundControl {
            path: path.to_path_buf(),
            listener,
            own_directory,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl BoundControl {
    /// Hands the socket to the user the daemon is about to become (owned by
    /// it; its mode is 0660), and, for the default directory, the directory
    /// too, so the daemon can remove the socket when it stops. Links are
    /// never followed.
    pub fn hand_over(&self, uid: nix::unistd::Uid, gid: nix::unistd::Gid) -> io::Result<()> {
        use nix::fcntl::AT_FDCWD;
        use nix::unistd::{fchownat, FchownatFlags};
        let chown = |p: &Path| {
            fchownat(
                AT_FDCWD,
                p,
                Some(uid),
                Some(gid),
                FchownatFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("chown {}: {e}", p.display()),
                )
            })
        };
        chown(&self.path)?;
        if self.own_directory {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                chown(dir)?;
            }
        }
        Ok(())
    }

    pub fn start(self, view: Arc<Observed>) -> io::Result<ControlServer> {
        let BoundControl { path, listener, .. } = self;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("tachyon-control".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let limits = Limits {
                        what: "control socket",
                        max_clients: MAX_CLIENTS,
                        deadline: EXCHANGE_DEADLINE,
                    };
                    let serve_one = move |stream| {
                        let view = view.clone();
                        async move { serve(stream, &view).await }
                    };
                    match tokio::net::UnixListener::from_std(listener) {
                        Ok(listener) => serve_clients(listener, limits, stopped, serve_one).await,
                        Err(e) => log::error!("control socket: {e}"),
                    }
                })
            })?;
        Ok(ControlServer {
            path,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// One exchange: a command line in, one JSON document out.
async fn serve(stream: tokio::net::UnixStream, view: &Observed) -> io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let (reader, mut writer) = stream.into_split();
    let mut line = String::new();
    BufReader::new(reader.take(MAX_REQUEST_BYTES))
        .read_line(&mut line)
        .await?;
    let answer = match answer(view, line.trim()) {
        Ok(json) => json,
        Err(message) => serde_json::json!({ "error": message }).to_string(),
    };
    writer.write_all(answer.as_bytes()).await?;
    writer.write_all(b"\n").await?;
    writer.shutdown().await
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::warn!("control socket {}: not removed: {e}", self.path.display());
        }
    }
}

/// Who may connect, named from the owner and group of the socket, or of its
/// directory when the socket itself cannot be seen.
fn permission_hint(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).or_else(|e| match path.parent() {
        Some(dir) => std::fs::metadata(dir),
        None => Err(e),
    });
    let Ok(meta) = meta else {
        return format!("permission denied on {}", path.display());
    };
    let user = nix::unistd::User::from_uid(meta.uid().into())
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {}", meta.uid()), |u| u.name);
    let group = nix::unistd::Group::from_gid(meta.gid().into())
        .ok()
        .flatten()
        .map_or_else(|| format!("gid {}", meta.gid()), |g| g.name);
    format!(
        "permission denied on {} (owned by {user}:{group}): run tachyonctl as root, as {user}, \
         or as a member of group {group}",
        path.display()
    )
}

/// Sends one command and returns the JSON answer (used by tachyonctl).
pub fn request(path: &Path, command: &str) -> Result<String, String> {
    let mut stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => format!(
            "tachyond is not running (no control socket at {}); start it, or give its socket with --control-socket",
            path.display()
        ),
        io::ErrorKind::PermissionDenied => permission_hint(path),
        _ => format!("cannot connect to {}: {e}", path.display()),
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    writeln!(stream, "{command}").map_err(|e| format!("sending to tachyond: {e}"))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| format!("reading from tachyond: {e}"))?;
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(&answer) {
        if let Some(serde_json::Value::String(e)) = map.get("error") {
            return Err(format!("tachyond: {e}"));
        }
    }
    Ok(answer)
}
