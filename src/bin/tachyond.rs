//! tachyond: the NTP server daemon.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;

use tachyon::clock::system::SystemClock;
use tachyon::clock::{may_set_time, measure_precision, system_unix_ns};
use tachyon::config::{ClockChoice, Config};
use tachyon::control::{default_socket_path, ControlServer, ControlSource};
use tachyon::metrics::exposition::MetricsSource;
use tachyon::metrics::http::MetricsServer;
use tachyon::privileges;
use tachyon::proto::{LeapIndicator, SystemInfo};
use tachyon::server::ratelimit::RateLimiter;
use tachyon::server::responder::{AccessControl, SharedAccess};
use tachyon::server::restrict::RestrictTable;
use tachyon::server::stats::{Outcome, WorkerStats};
use tachyon::server::{choose_backend, stats, BoundServer, Server, ServerOptions};
use tachyon::state::{shared_state, unix_ns_to_ntp, ServerState, StatePublisher};
use tachyon::sync::runner::{self, SyncClock, SyncOptions};
use tachyon::sync::{EngineConfig, SoftwareClock, SourceOptions};

/// The port an unprivileged tachyond falls back to when it may not bind 123
/// (only with the embedded default configuration).
const FALLBACK_PORT: u16 = 12300;
const NTP_PORT: u16 = 123;
/// The port upstream servers are polled on.
const UPSTREAM_PORT: u16 = tachyon::sync::runner::NTP_PORT;
/// Where metrics are served when the configuration does not say: loopback only.
const DEFAULT_METRICS: &str = "127.0.0.1:9123";

#[derive(Parser, Debug)]
#[command(
    version,
    about = "tachyon NTP server: per-core io_uring workers for busy NTP Pool servers"
)]
struct Args {
    /// Configuration file (ntp.conf syntax). Without it, the embedded default runs.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check FILE and exit: 0 when it is valid, 1 with the errors otherwise.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// The control socket tachyonctl talks to [default: /run/tachyon/tachyond.sock
    /// as root, else $XDG_RUNTIME_DIR or the temp dir].
    #[arg(long, value_name = "PATH")]
    control_socket: Option<PathBuf>,
    /// Started as root: run as USER[:GROUP] after binding, keeping only
    /// CAP_SYS_TIME and CAP_NET_BIND_SERVICE [default: the first of tachyon, ntp,
    /// nobody that exists].
    #[arg(short, long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Started as root: stay root (not recommended).
    #[arg(long, conflicts_with = "user")]
    allow_root: bool,
    /// Log level: error, warn, info, debug, trace (RUST_LOG overrides it).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::new()
        .parse_filters(&args.log_level)
        .parse_env("RUST_LOG")
        .format_timestamp_micros()
        .init();

    if args.print_default_config {
        print!("{}", tachyon::config::EMBEDDED_DEFAULT);
        return ExitCode::SUCCESS;
    }
    if let Some(path) = args.check_config {
        return check_config(&path);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            for w in &config.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: OK ({} upstream lines, {} restrict rules, {} warnings)",
                path.display(),
                config.servers.len(),
                config.restrict.len(),
                config.warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The state served until the sync thread exists: unsynchronized, or with
/// `local stratum N`, the host clock trusted at stratum N.
fn initial_state(config: &Config, precision: i8) -> ServerState {
    let mut state = ServerState::unsynchronized(precision);
    if let Some(stratum) = config.local_stratum {
        state.system = SystemInfo {
            leap: LeapIndicator::NoWarning,
            stratum,
            precision,
            root_delay: 0.0,
            root_dispersion: 0.0,
            reference_id: *b"LOCL",
            reference_time: unix_ns_to_ntp(system_unix_ns()),
        };
    }
    state
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

/// Who to become after binding: None to stay as we are.
fn identity_to_drop_to(args: &Args) -> anyhow::Result<Option<privileges::Identity>> {
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

fn run(args: &Args) -> anyhow::Result<()> {
    let config_path = args.config.clone();
    let embedded = config_path.is_none();
    let drop_to = identity_to_drop_to(args)?;
    let config = match &config_path {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(),
    };
    for w in &config.warnings {
        log::warn!("{w}");
    }
    log::info!(
        "tachyond {} starting with {}",
        env!("CARGO_PKG_VERSION"),
        config.source
    );

    // Block the signals we handle before any thread starts, so every thread
    // inherits the mask and only the signalfd below sees them.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block()?;
    let signal_fd = SignalFd::new(&signals)?;

    let clock_mode = match config.clock {
        ClockChoice::Auto if may_set_time() => ClockChoice::System,
        ClockChoice::Auto => ClockChoice::Software,
        other => other,
    };
    let precision = measure_precision();
    log::info!(
        "clock: {clock_mode} (chosen {}), precision 2^{precision} s",
        if config.clock == ClockChoice::Auto {
            "automatically"
        } else {
            "by the configuration"
        }
    );
    if config.local_stratum.is_none() {
        log::info!(
            "{} upstream lines; serving as unsynchronized (LI 3, stratum 0) until enough agree",
            config.servers.len()
        );
    } else {
        log::info!(
            "local stratum {}: serving the host clock as a stratum {} source",
            config.local_stratum.unwrap_or(0),
            config.local_stratum.unwrap_or(0)
        );
    }

    let (publisher, reader) = shared_state(initial_state(&config, precision));
    let backend = choose_backend(config.io).map_err(anyhow::Error::msg)?;
    let workers = config.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let access = SharedAccess::new(AccessControl {
        restrict: Arc::new(RestrictTable::new(&config.restrict)),
        limiter: Arc::new(RateLimiter::new(config.ratelimit)),
    });
    let limiter = access.current().limiter;
    log::info!(
        "rate limiting for `limited` clients: 1 request per 2^{} s sustained, burst {}, leak 1/2^{}; table of {} entries ({} MiB)",
        config.ratelimit.interval,
        config.ratelimit.burst,
        config.ratelimit.leak,
        limiter.capacity(),
        limiter.memory_bytes() >> 20
    );
    let options = |listen: Vec<SocketAddr>| ServerOptions {
        listen,
        workers,
        backend,
        access: access.clone(),
        pin: true,
        rcvbuf: config.rcvbuf,
    };
    let listen = if config.listen.is_empty() {
        default_listen(NTP_PORT)
    } else {
        config.listen.clone()
    };
    let bound = match BoundServer::bind(options(listen)) {
        Ok(s) => s,
        Err(e)
            if embedded
                && matches!(
                    e.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::AddrInUse
                ) =>
        {
            log::warn!(
                "{e}; with the embedded default configuration tachyond falls back to port \
                 {FALLBACK_PORT}: query it with `ntpdig -p 1 ...` or chronyd's `port {FALLBACK_PORT}`. \
                 Run as root or with CAP_NET_BIND_SERVICE to serve port 123."
            );
            BoundServer::bind(options(default_listen(FALLBACK_PORT)))?
        }
        Err(e) => return Err(e.into()),
    };
    let control_path = args
        .control_socket
        .clone()
        .unwrap_or_else(default_socket_path);
    let control_listener = ControlServer::bind(&control_path)?;
    if let Some(id) = &drop_to {
        privileges::drop_to(id).map_err(anyhow::Error::msg)?;
        log::info!(
            "running as {} (uid {}), keeping CAP_SYS_TIME and CAP_NET_BIND_SERVICE",
            id.user,
            id.uid
        );
    }
    let server = bound.spawn(reader.clone())?;
    let source_rows = Arc::new(Mutex::new(Vec::new()));
    // With `local stratum`, the main loop publishes the local reference; otherwise
    // the sync thread owns the publisher.
    let (mut local_publisher, _sync) = if config.local_stratum.is_some() {
        (Some(publisher), None)
    } else {
        let clock = match clock_mode {
            ClockChoice::System => SyncClock::System(SystemClock::open()?),
            _ => SyncClock::Software(SoftwareClock::new()),
        };
        let options = SyncOptions {
            servers: config.servers.clone(),
            driftfile: config.driftfile.clone(),
            leapfile: config.leapfile.clone(),
            engine: EngineConfig {
                precision,
                holdover: config
                    .holdover
                    .map_or(EngineConfig::default().holdover, f64::from),
                ..EngineConfig::default()
            },
            port: UPSTREAM_PORT,
        };
        let handle = runner::spawn(options, clock, publisher, source_rows.clone())?;
        (None, Some(handle))
    };
    let addrs: Vec<String> = server.local_addrs().iter().map(|a| a.to_string()).collect();
    log::info!(
        "serving on {} with {workers} worker(s), backend {}",
        addrs.join(", "),
        server.backend().name()
    );

    let request_rate = Arc::new(AtomicU64::new(0f64.to_bits()));
    let control_source = ControlSource {
        workers: server.stats().to_vec(),
        backend: server.backend().name(),
        clock: clock_mode.to_string(),
        state: reader.clone(),
        started: Instant::now(),
        sources: source_rows.clone(),
        request_rate: request_rate.clone(),
    };
    let _control = control_listener.start(control_source)?;
    log::info!("control socket {}", control_path.display());

    let metrics_source = MetricsSource {
        workers: server.stats().to_vec(),
        backend: server.backend().name(),
        state: reader.clone(),
        access: access.clone(),
        started: Instant::now(),
        sources: source_rows.clone(),
    };
    let _metrics = match config.metrics {
        Some(addr) => {
            let m = MetricsServer::start(addr, metrics_source)?;
            log::info!("metrics on http://{}/metrics", m.local_addr());
            Some(m)
        }
        None => match MetricsServer::start(DEFAULT_METRICS.parse()?, metrics_source) {
            Ok(m) => {
                log::info!("metrics on http://{}/metrics", m.local_addr());
                Some(m)
            }
            Err(e) => {
                log::warn!("{e}; running without a metrics endpoint (set `metrics ADDR:PORT`)");
                None
            }
        },
    };

    let mut reloader = Reloader {
        path: config_path.clone(),
        running: config.clone(),
        access: access.clone(),
    };
    let result = wait_for_signal(Supervision {
        signal_fd: &signal_fd,
        server: &server,
        config: &config,
        local_publisher: local_publisher.as_mut(),
        precision,
        request_rate: &request_rate,
        sync_alive: &|| _sync.as_ref().is_none_or(|s| s.is_running()),
        reload: &mut || reloader.reload(),
    });
    log::info!("stopping: {}", stats::summary(server.stats()));
    server.stop()?;
    result
}

/// SIGHUP: re-reads the configuration file and applies what can change while
/// serving (restrict rules and rate limits); says what needs a restart.
struct Reloader {
    path: Option<PathBuf>,
    running: Config,
    access: Arc<SharedAccess>,
}

impl Reloader {
    fn reload(&mut self) {
        let Some(path) = &self.path else {
            log::warn!("SIGHUP: running the embedded default configuration; nothing to reload");
            return;
        };
        let new = match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                log::error!("SIGHUP: {e}; keeping the running configuration");
                return;
            }
        };
        for w in &new.warnings {
            log::warn!("{w}");
        }
        let old = &self.running;
        let limits_changed = new.ratelimit != old.ratelimit;
        let limiter = if limits_changed {
            Arc::new(RateLimiter::new(new.ratelimit))
        } else {
            self.access.current().limiter
        };
        self.access.replace(AccessControl {
            restrict: Arc::new(RestrictTable::new(&new.restrict)),
            limiter,
        });
        log::info!(
            "SIGHUP: reloaded {} restrict rules{}",
            new.restrict.len(),
            if limits_changed {
                " and new rate limits (client history starts afresh)"
            } else {
                ""
            }
        );
        let upstreams = |c: &Config| -> Vec<String> {
            c.servers
                .iter()
                .map(|s| {
                    format!(
                        "{} {} {:?}",
                        s.kind.as_str(),
                        s.host,
                        SourceOptions::from(s)
                    )
                })
                .collect()
        };
        let mut restart = Vec::new();
        for (changed, what) in [
            (upstreams(&new) != upstreams(old), "server/pool"),
            (new.listen != old.listen, "listen"),
            (new.workers != old.workers, "workers"),
            (new.io != old.io, "io"),
            (new.rcvbuf != old.rcvbuf, "rcvbuf"),
            (new.clock != old.clock, "clock"),
            (new.metrics != old.metrics, "metrics"),
            (new.driftfile != old.driftfile, "driftfile"),
            (new.leapfile != old.leapfile, "leapfile"),
            (new.local_stratum != old.local_stratum, "local"),
            (new.holdover != old.holdover, "holdover"),
        ] {
            if changed {
                restart.push(what);
            }
        }
        if !restart.is_empty() {
            log::warn!(
                "SIGHUP: changes to {} take effect after a restart",
                restart.join(", ")
            );
        }
        self.running = new;
    }
}

/// Waits for SIGTERM or SIGINT while watching the workers; refreshes the local
/// reference time when serving `local stratum`.
/// What the main thread watches and drives while the workers serve.
struct Supervision<'a> {
    signal_fd: &'a SignalFd,
    server: &'a Server,
    config: &'a Config,
    /// With `local stratum`: the publisher of the local reference.
    local_publisher: Option<&'a mut StatePublisher>,
    precision: i8,
    request_rate: &'a AtomicU64,
    sync_alive: &'a dyn Fn() -> bool,
    reload: &'a mut dyn FnMut(),
}

fn wait_for_signal(supervision: Supervision<'_>) -> anyhow::Result<()> {
    let Supervision {
        signal_fd,
        server,
        config,
        mut local_publisher,
        precision,
        request_rate,
        sync_alive,
        reload,
    } = supervision;
    const LOCAL_REFRESH: Duration = Duration::from_secs(16);
    const RATE_WINDOW: usize = 10;
    const LIMIT_REPORT: Duration = Duration::from_secs(300);
    let mut last_refresh = Instant::now();
    // (when, datagrams received so far), one per second, for requests/s.
    let mut history: std::collections::VecDeque<(Instant, u64)> = Default::default();
    let mut limit_report = (Instant::now(), 0u64, 0u64);
    loop {
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(signal_fd),
            PollFlags::POLLIN,
        )];
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => {
                if let Some(info) = signal_fd.read_signal()? {
                    match Signal::try_from(info.ssi_signo as i32) {
                        Ok(Signal::SIGHUP) => reload(),
                        Ok(sig) => {
                            log::info!("{sig} received");
                            return Ok(());
                        }
                        Err(_) => {}
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
        if !server.healthy() {
            anyhow::bail!("a worker stopped; exiting so the service manager can restart tachyond");
        }
        if !sync_alive() {
            // Serving the last published state forever would be serving wrong time.
            anyhow::bail!(
                "the sync thread stopped; exiting so the service manager can restart tachyond"
            );
        }
        let received = stats::sum(server.stats(), WorkerStats::received);
        history.push_back((Instant::now(), received));
        if history.len() > RATE_WINDOW {
            history.pop_front();
        }
        if let (Some(first), Some(last)) = (history.front(), history.back()) {
            let dt = last.0.duration_since(first.0).as_secs_f64();
            let rate = if dt > 0.0 {
                (last.1 - first.1) as f64 / dt
            } else {
                0.0
            };
            request_rate.store(rate.to_bits(), Ordering::Relaxed);
        }
        if limit_report.0.elapsed() >= LIMIT_REPORT {
            // A summary at most every few minutes while limiting is active; never
            // a line per packet.
            let limited = stats::total(server.stats(), Outcome::RateLimited);
            let kods = stats::total(server.stats(), Outcome::Kod);
            if limited > limit_report.1 || kods > limit_report.2 {
                log::info!(
                    "rate limiting: {} requests dropped and {} KoDs sent in the last {} s",
                    limited - limit_report.1,
                    kods - limit_report.2,
                    LIMIT_REPORT.as_secs()
                );
            }
            limit_report = (Instant::now(), limited, kods);
        }
        if let Some(publisher) = local_publisher.as_deref_mut() {
            if last_refresh.elapsed() >= LOCAL_REFRESH {
                // The host clock is the reference: keep the reference time fresh
                // so root dispersion does not grow without bound.
                publisher.publish(&initial_state(config, precision));
                last_refresh = Instant::now();
            }
        }
    }
}
