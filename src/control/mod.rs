//! The local control socket that tachyonctl talks to: a Unix stream socket, one
//! request line in, one JSON document out. There is no network control plane, so
//! `nomodify` and `noquery` hold by design.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::clock::system_unix_ns;
use crate::metrics::histogram::Snapshot;
use crate::server::stats::{merged, sum, total, Outcome, WorkerStats, OUTCOMES};
use crate::state::{unix_ns_to_ntp, StateReader};

/// Where the socket lives unless told otherwise.
pub fn default_socket_path() -> PathBuf {
    let run = Path::new("/run/tachyon");
    if nix::unistd::geteuid().is_root() && std::fs::create_dir_all(run).is_ok() {
        return run.join("tachyond.sock");
    }
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    dir.join("tachyond.sock")
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
}

/// What the control socket reads.
#[derive(Clone)]
pub struct ControlSource {
    pub workers: Vec<Arc<WorkerStats>>,
    pub backend: &'static str,
    pub clock: String,
    pub state: StateReader,
    pub started: Instant,
    /// Filled by the sync thread.
    pub sources: Arc<Mutex<Vec<SourceRow>>>,
    /// Requests per second over the last seconds (f64 bits), kept by the daemon.
    pub request_rate: Arc<AtomicU64>,
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

/// Renders a reference ID the way ntpq does: dotted quad, or ASCII for
/// stratum 0/1 codes such as GPS, LOCL, RATE.
pub fn refid_text(id: [u8; 4], stratum: u8) -> String {
    if stratum <= 1 && id.iter().all(|b| *b == 0 || b.is_ascii_graphic()) {
        let s: String = id
            .iter()
            .take_while(|b| **b != 0)
            .map(|b| *b as char)
            .collect();
        return format!(".{s}.");
    }
    format!("{}.{}.{}.{}", id[0], id[1], id[2], id[3])
}

impl ControlSource {
    pub fn status(&self) -> Status {
        let st = self.state.read();
        let sys = &st.system;
        let now = unix_ns_to_ntp(st.correction.apply(system_unix_ns()));
        let received = sum(&self.workers, WorkerStats::received);
        let answered = total(&self.workers, Outcome::Answered);
        let kod = total(&self.workers, Outcome::Kod);
        let dispersion = sys.root_dispersion_at(now);
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            synchronized: sys.is_synchronized(),
            leap: sys.leap as u8,
            stratum: sys.stratum,
            refid: if sys.reference_id == [b'L', b'O', b'C', b'L'] {
                ".LOCL.".into()
            } else {
                refid_text(sys.reference_id, sys.stratum)
            },
            reference_age_seconds: (!sys.reference_time.is_zero())
                .then(|| now.seconds_since(sys.reference_time)),
            clock: self.clock.clone(),
            offset_seconds: st.correction.offset,
            frequency_ppm: st.correction.frequency * 1e6,
            root_delay_seconds: sys.root_delay,
            root_dispersion_seconds: dispersion,
            root_distance_seconds: sys.root_delay / 2.0 + dispersion,
            precision_log2: sys.precision,
            workers: self.workers.len(),
            backend: self.backend.to_string(),
            requests_per_second: f64::from_bits(self.request_rate.load(Ordering::Relaxed)),
            received,
            answered,
            dropped: received - answered - kod,
        }
    }

    pub fn stats(&self) -> Stats {
        let merge = |pick| merged(&self.workers, pick);
        let sum = |counter| sum(&self.workers, counter);
        Stats {
            outcomes: OUTCOMES
                .iter()
                .map(|o| (o.label().to_string(), total(&self.workers, *o)))
                .collect(),
            rate_limit_leaked: sum(|w| w.rate_limit_leaked.get()),
            rx_timestamp_missing: sum(|w| w.rx_stamp_missing.get()),
            socket_drops: sum(|w| w.socket_drops.get()),
            receive_errors: sum(|w| w.recv_errors.get()),
            send_errors: sum(|w| w.send_errors.get()),
            response_time: percentiles(&merge(|w| &w.response_time), 1e-9),
            batch_size: percentiles(&merge(|w| &w.batch_size), 1.0),
            per_worker: self.workers.iter().map(|w| w.received()).collect(),
        }
    }

    pub fn sources(&self) -> Vec<SourceRow> {
        self.sources.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn answer(&self, command: &str) -> Result<String, String> {
        let json = match command {
            "status" => serde_json::to_string(&self.status()),
            "stats" => serde_json::to_string(&self.stats()),
            "sources" => serde_json::to_string(&self.sources()),
            other => return Err(format!("unknown command {other:?}: status, sources, stats")),
        };
        json.map_err(|e| e.to_string())
    }
}

/// The control socket's server thread.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The control socket, bound (so it can be created before privileges are
/// dropped) but not yet served.
pub struct BoundControl {
    path: PathBuf,
    listener: UnixListener,
}

impl ControlServer {
    /// Creates the socket; [`BoundControl::start`] serves it.
    pub fn bind(path: &Path) -> io::Result<BoundControl> {
        // A socket left by a crashed daemon is replaced; a live daemon's is not.
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use: is another tachyond running?", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path).map_err(|e| {
            io::Error::new(e.kind(), format!("control socket {}: {e}", path.display()))
        })?;
        listener.set_nonblocking(true)?;
        Ok(BoundControl {
            path: path.to_path_buf(),
            listener,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl BoundControl {
    pub fn start(self, source: ControlSource) -> io::Result<ControlServer> {
        let BoundControl { path, listener } = self;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tachyon-control".into())
            .spawn(move || {
                while !stop_flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if let Err(e) = serve(stream, &source) {
                                log::debug!("control socket: {e}");
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(e) => {
                            log::warn!("control socket: {e}");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            })?;
        Ok(ControlServer {
            path,
            stop,
            thread: Some(thread),
        })
    }
}

fn serve(stream: UnixStream, source: &ControlSource) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(io::Read::take(&stream, 256)).read_line(&mut line)?;
    let mut out = &stream;
    match source.answer(line.trim()) {
        Ok(json) => writeln!(out, "{json}"),
        Err(message) => writeln!(out, "{}", serde_json::json!({ "error": message })),
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends one command and returns the JSON answer (used by tachyonctl).
pub fn request(path: &Path, command: &str) -> Result<String, String> {
    let mut stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => format!(
            "tachyond is not running (no control socket at {}); start it, or give its socket with --socket",
            path.display()
        ),
        io::ErrorKind::PermissionDenied => format!(
            "permission denied on {}: run tachyonctl as root or as the user tachyond runs as",
            path.display()
        ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refids_render_like_ntpq() {
        assert_eq!(refid_text([192, 0, 2, 1], 2), "192.0.2.1");
        assert_eq!(refid_text(*b"GPS\0", 1), ".GPS.");
        assert_eq!(refid_text(*b"RATE", 0), ".RATE.");
        assert_eq!(refid_text([0, 0, 0, 0], 0), "..");
    }
}
