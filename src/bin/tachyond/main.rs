//! tachyond: the NTP server daemon. Start-up decisions are in `startup`, the
//! SIGHUP reload in `reload`, the main thread's watch in `supervise`.

mod reload;
mod startup;
mod supervise;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;

use tachyon::clock::measure_precision;
use tachyon::clock::system::SystemClock;
use tachyon::config::{ClockChoice, Config, ConfigFormat};
use tachyon::control::{default_socket_path, ControlServer};
use tachyon::metrics::http::MetricsServer;
use tachyon::observe::queries::QueryView;
use tachyon::observe::Observed;
use tachyon::server::access::ratelimit::RateLimiter;
use tachyon::server::access::restrict::RestrictTable;
use tachyon::server::access::{AccessControl, SharedAccess};
use tachyon::server::queries::ControlQueries;
use tachyon::server::{choose_backend, stats, ServerOptions};
use tachyon::state::{shared_state, ServerState};
use tachyon::sync::driftfile::{DriftFormat, Driftfile};
use tachyon::sync::runner::{self, local_state, SyncClock, SyncHandle, SyncMode, SyncOptions};
use tachyon::sync::{EngineConfig, SoftwareClock, SourceBoard};

use reload::Reloader;
use supervise::{supervise, Supervision};

/// The port upstream servers are polled on.
const UPSTREAM_PORT: u16 = tachyon::sync::runner::NTP_PORT;
/// Where metrics are served when the configuration does not say: loopback only.
const DEFAULT_METRICS: &str = "127.0.0.1:9123";

#[derive(Parser, Debug)]
#[command(
    name = "tachyond",
    version,
    about = "tachyon NTP server: per-core io_uring workers for busy NTP Pool servers"
)]
pub struct Args {
    /// Configuration file (ntp.conf or chrony.conf syntax). Without it, the
    /// embedded default runs.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check FILE and exit: 0 when it is valid, 1 with the errors otherwise.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    /// The syntax of the configuration file: ntp, chrony, or auto (by the
    /// file's name, else its directives).
    #[arg(long, value_name = "FORMAT", default_value = "auto")]
    config_format: ConfigFormat,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// The control socket tachyonctl talks to [default: /run/tachyon/tachyond.sock
    /// as root, else $XDG_RUNTIME_DIR or the temp dir].
    #[arg(long, value_name = "PATH")]
    control_socket: Option<PathBuf>,
    /// Started as root: run as USER[:GROUP] after binding, keeping only
    /// CAP_SYS_TIME, and that only to discipline the system clock [default:
    /// the first of tachyon, ntp, nobody that exists].
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Started as root: stay root (not recommended).
    #[arg(long, conflicts_with = "user")]
    pub allow_root: bool,
    /// Log level: error, warn, info, debug, trace (RUST_LOG overrides it).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    // The package build's manual pages: tachyond(8), or tachyon.conf(5).
    if std::env::args().nth(1).as_deref() == Some("--generate-man") {
        match std::env::args().nth(2).as_deref() {
            Some("tachyon.conf") => print!("{}", tachyon::manual::config_page()),
            _ => print!(
                "{}",
                tachyon::manual::command_page(<Args as clap::CommandFactory>::command(), "8")
            ),
        }
        return ExitCode::SUCCESS;
    }
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
    if let Some(path) = &args.check_config {
        return check_config(path, args.config_format);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &std::path::Path, format: ConfigFormat) -> ExitCode {
    match Config::load_with(path, format) {
        Ok(config) => {
            for w in &config.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: read as {} ({})",
                path.display(),
                config.dialect,
                config.dialect_reason
            );
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

fn run(args: &Args) -> anyhow::Result<()> {
    let drop_to = startup::identity_to_drop_to(args)?;
    let config = match &args.config {
        Some(path) => Config::load_with(path, args.config_format)?,
        None => Config::embedded_default(),
    };
    for w in &config.warnings {
        log::warn!("{w}");
    }
    log::info!(
        "tachyond {} starting with {}, read as {} ({})",
        env!("CARGO_PKG_VERSION"),
        config.source,
        config.dialect,
        config.dialect_reason
    );
    // Block the signals we handle before any thread starts, so every thread
    // inherits the mask and only the signalfd below sees them.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block()?;
    let signal_fd = SignalFd::new(&signals)?;

    let clock_mode = startup::choose_clock(&config)?;
    let precision = measure_precision();
    let initial = match config.local_stratum {
        Some(stratum) => {
            log::info!(
                "local stratum {stratum}: serving the host clock as a stratum {stratum} source"
            );
            local_state(stratum, precision)
        }
        None => {
            log::info!(
                "{} upstream lines; serving as unsynchronized (LI 3, stratum 0) until enough agree",
                config.servers.len()
            );
            ServerState::unsynchronized(precision)
        }
    };
    let (publisher, reader) = shared_state(initial);
    let access = shared_access(&config);
    let backend = choose_backend(&config.io).map_err(anyhow::Error::msg)?;
    let workers = config.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let board = SourceBoard::default();
    let queries: Arc<dyn ControlQueries> = Arc::new(QueryView {
        state: reader.clone(),
        sources: board.clone(),
        local: config.local_stratum.is_some(),
    });
    let options = |listen: Vec<SocketAddr>| ServerOptions {
        listen,
        workers,
        backend,
        access: access.clone(),
        pin: true,
        rcvbuf: config.rcvbuf,
        xdp: match &config.io {
            tachyon::config::IoChoice::Xdp(x) => Some(x.clone()),
            _ => None,
        },
        queries: Some(queries.clone()),
        tx_timestamps: config.tx_timestamps,
        xleave: config.xleave.enabled.then_some(config.xleave.table_entries),
    };
    let bound = startup::bind_listeners(&config, args.config.is_none(), options)?;
    let control_path = args
        .control_socket
        .clone()
        .unwrap_or_else(default_socket_path);
    let control = ControlServer::bind(&control_path)?;
    let disciplines_clock = clock_mode == ClockChoice::System && config.local_stratum.is_none();
    startup::drop_privileges(drop_to.as_ref(), &control, disciplines_clock)?;
    if config.local_stratum.is_none() {
        startup::check_driftfile_directory(&config);
    }
    let server = bound.spawn(reader.clone())?;
    let sync = start_sync(&config, clock_mode, precision, publisher, board.clone())?;
    let addrs: Vec<String> = server.local_addrs().iter().map(|a| a.to_string()).collect();
    log::info!(
        "serving on {} with {} worker(s), backend {}",
        addrs.join(", "),
        server.stats().len(),
        server.backend().name()
    );
    match server.xleave() {
        Some(table) => log::info!(
            "interleaved mode (RFC 9769): a table of {} pairs ({} MiB)",
            table.capacity(),
            table.memory_bytes() >> 20
        ),
        None => log::info!("interleaved mode off"),
    }

    let request_rate = Arc::new(AtomicU64::new(0f64.to_bits()));
    let view = Arc::new(Observed {
        workers: server.stats().to_vec(),
        backend: server.backend().name(),
        clock: clock_mode.to_string(),
        state: reader.clone(),
        access: access.clone(),
        started: Instant::now(),
        sources: board,
        request_rate: request_rate.clone(),
        xleave_capacity: server.xleave().map(|t| t.capacity()),
    });
    let _control = control.start(view.clone())?;
    log::info!("control socket {}", control_path.display());
    let _metrics = start_metrics(&config, view)?;

    let mut reloader = Reloader {
        path: args.config.clone(),
        format: args.config_format,
        running: config.clone(),
        access: access.clone(),
    };
    let result = supervise(Supervision {
        signal_fd: &signal_fd,
        server: &server,
        request_rate: &request_rate,
        sync_alive: &|| sync.is_running(),
        reload: &mut || reloader.reload(),
    });
    log::info!("stopping: {}", stats::summary(server.stats()));
    server.stop()?;
    result
}

/// The restrict rules and the rate limiter, shared by the workers and
/// replaced as a whole on SIGHUP.
fn shared_access(config: &Config) -> Arc<SharedAccess> {
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
    access
}

/// The sync thread: polling the upstreams and disciplining the clock, or
/// serving the host clock with `local stratum`. It is the one publisher of
/// the server state.
fn start_sync(
    config: &Config,
    clock_mode: ClockChoice,
    precision: i8,
    publisher: tachyon::state::StatePublisher,
    board: SourceBoard,
) -> anyhow::Result<SyncHandle> {
    let mode = match config.local_stratum {
        Some(stratum) => SyncMode::Local { stratum },
        None => SyncMode::Upstreams {
            clock: match clock_mode {
                ClockChoice::System => SyncClock::System(SystemClock::open()?),
                _ => SyncClock::Software(SoftwareClock::new()),
            },
        },
    };
    let options = SyncOptions {
        servers: config.servers.clone(),
        driftfile: driftfile(config),
        leapfile: config.leapfile.clone(),
        engine: engine_config(config, precision),
        port: UPSTREAM_PORT,
    };
    Ok(runner::spawn(options, mode, publisher, board)?)
}

/// The driftfile, in the format of the file the configuration came from.
fn driftfile(config: &Config) -> Option<Driftfile> {
    match (&config.driftfile, &config.chrony_driftfile) {
        (Some(path), _) => Some(Driftfile {
            path: path.clone(),
            format: DriftFormat::Ntpd,
        }),
        (None, Some(path)) => Some(Driftfile {
            path: path.clone(),
            format: DriftFormat::Chrony,
        }),
        (None, None) => None,
    }
}

/// The engine's settings: defaults, and what a chrony.conf asks for
/// (`minsources`, `makestep`).
fn engine_config(config: &Config, precision: i8) -> EngineConfig {
    let mut engine = EngineConfig {
        precision,
        ..EngineConfig::default()
    };
    if let Some(n) = config.min_sources {
        engine.minsane = Some(n as usize);
    }
    if let Some(seconds) = config.holdover {
        engine.holdover = f64::from(seconds);
    }
    if let Some(step) = config.makestep {
        engine.discipline.step_threshold = step.threshold.as_secs_f64();
        engine.discipline.step_limit = step.limit.map_or(u64::MAX, u64::from);
    }
    engine
}

/// The Prometheus endpoint: where the configuration says (an error if it
/// cannot be served there), else on loopback port 9123 when free.
fn start_metrics(config: &Config, view: Arc<Observed>) -> anyhow::Result<Option<MetricsServer>> {
    let server = match config.metrics {
        Some(addr) => MetricsServer::start(addr, view)?,
        None => match MetricsServer::start(DEFAULT_METRICS.parse()?, view) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("{e}; running without a metrics endpoint (set `metrics ADDR:PORT`)");
                return Ok(None);
            }
        },
    };
    log::info!("metrics on http://{}/metrics", server.local_addr());
    Ok(Some(server))
}
