//! The ntp.conf-style configuration file and the typed [`Config`] it yields.
//!
//! Pool operators bring the `ntp.conf` they already run `ntpd` with. The
//! parser reads the directives tachyon acts on (`server`, `pool`,
//! `driftfile`, `leapfile`, `restrict`), a few of tachyon's own (`listen`,
//! `workers`, `io`, `rcvbuf`, `metrics`, `clock`, `local stratum`), and accepts, with a
//! warning, the ntpd/NTPsec directives that have no meaning here. Anything
//! else is an error that names the file, the line and what was expected.
//!
//! The parser is pure: it never resolves names, opens sockets or reads the
//! clock. [`Config::load`] is the only function that touches the file system.
//! The operator reference is `docs/config.md`.

mod addr;
mod parser;
mod restrict;
mod upstream;

#[cfg(test)]
mod tests;

pub use restrict::{Family, RestrictFlags, RestrictRule, RestrictTarget};
pub use upstream::{ServerConfig, SourceKind};

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The configuration used when the daemon is started without a file.
pub const EMBEDDED_DEFAULT: &str = "\
# tachyon's built-in configuration, used when no configuration file is given.
# The listen addresses, the I/O backend (io_uring or recvmmsg) and the clock
# control (system or software) are chosen at start; see docs/config.md.

# Upstream servers. Pool operators should pick 4 to 7 servers by hand instead.
server 0.pool.ntp.org iburst
server 1.pool.ntp.org iburst
server 2.pool.ntp.org iburst
server 3.pool.ntp.org iburst

# Serve time to everybody, rate limited, and allow nothing else.
restrict default kod limited nomodify notrap nopeer noquery
# Local users may interrogate the server more closely.
restrict 127.0.0.1
restrict ::1
";

/// The receive buffer asked for each listening socket unless `rcvbuf` says
/// otherwise. The kernel doubles it for its bookkeeping and charges each
/// datagram its full buffer size (about 1.3 KiB for a 48-byte request), so
/// this holds about 1,600 requests: 4 ms of work for a worker at 400k/s,
/// 160 ms at 10k/s. Deeper queues only add delay in overload (measured with
/// 4 MiB: requests waited 15-18 ms instead of about 2 ms, for no more answers);
/// 512 KiB waited less but dropped a burst at 374k/s that 1 MiB absorbs
/// (docs/benchmarks.md, "Overload: the receive queue").
pub const DEFAULT_RCVBUF: usize = 1 << 20;

/// `rcvbuf` bounds: below 16 KiB a scheduling hiccup drops requests even at
/// low load; above 256 MiB nothing is gained but delay.
pub const RCVBUF_RANGE: std::ops::RangeInclusive<usize> = (16 << 10)..=(256 << 20);

/// The source name of [`Config::embedded_default`].
const EMBEDDED_SOURCE: &str = "<embedded default>";

/// The typed configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file the configuration came from, as shown in messages, or
    /// `"<embedded default>"`.
    pub source: String,
    /// Upstream servers and pools, in file order.
    pub servers: Vec<ServerConfig>,
    /// Where the frequency correction is kept across restarts.
    pub driftfile: Option<PathBuf>,
    /// An IETF/NIST `leap-seconds.list` file.
    pub leapfile: Option<PathBuf>,
    /// Access rules in file order. Rules with the same target are merged
    /// into the first one (flags combined), so each target appears once.
    pub restrict: Vec<RestrictRule>,
    /// Addresses to serve on; empty means the daemon chooses its defaults.
    pub listen: Vec<SocketAddr>,
    /// Number of worker threads; `None` means one per core (`workers auto`).
    pub workers: Option<usize>,
    /// The packet I/O backend.
    pub io: IoChoice,
    /// Where the Prometheus endpoint listens; `None` means no endpoint.
    pub metrics: Option<SocketAddr>,
    /// How the served clock is steered.
    pub clock: ClockChoice,
    /// `local stratum N`: serve at stratum N from the local clock when no
    /// upstream is usable (tests and standalone use, like chrony's `local`).
    pub local_stratum: Option<u8>,
    /// `holdover SECONDS`: how long the clock is still served as
    /// synchronized with no selectable upstream; `None`: the engine's default.
    pub holdover: Option<u32>,
    /// Per-client rate limiting for `restrict ... limited` (`ratelimit ...`).
    pub ratelimit: RateLimitParams,
    /// SO_RCVBUF asked for each listening socket (`rcvbuf SIZE`).
    pub rcvbuf: usize,
    /// Everything that was accepted but ignored, or overridden.
    pub warnings: Vec<ConfigWarning>,
}

impl Config {
    /// Parses configuration text. `source` names the text in messages
    /// (normally the file path). Names are never resolved here.
    pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
        parser::parse(text, source)
    }

    /// Reads and parses a configuration file. A file that cannot be read is
    /// reported with line 0 and the operating system's message.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ConfigError {
            source: source.clone(),
            line: 0,
            message: format!("cannot read the configuration file: {e}"),
        })?;
        match String::from_utf8(bytes) {
            Ok(text) => Config::parse(&text, &source),
            Err(e) => {
                let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
                Err(ConfigError {
                    source,
                    line,
                    message: "the line is not valid UTF-8".to_string(),
                })
            }
        }
    }

    /// The configuration of [`EMBEDDED_DEFAULT`].
    pub fn embedded_default() -> Config {
        match Config::parse(EMBEDDED_DEFAULT, EMBEDDED_SOURCE) {
            Ok(config) => config,
            // The text is a constant and a unit test parses it.
            Err(e) => panic!("the embedded default configuration does not parse: {e}"),
        }
    }
}

/// The packet I/O backend (`io uring|mmsg|auto`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IoChoice {
    /// io_uring where the kernel supports it, else recvmmsg/sendmmsg.
    #[default]
    Auto,
    /// io_uring only; failing to set it up is an error.
    Uring,
    /// recvmmsg/sendmmsg.
    Mmsg,
}

impl IoChoice {
    /// The keyword used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            IoChoice::Auto => "auto",
            IoChoice::Uring => "uring",
            IoChoice::Mmsg => "mmsg",
        }
    }
}

impl fmt::Display for IoChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IoChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(IoChoice::Auto),
            "uring" => Ok(IoChoice::Uring),
            "mmsg" => Ok(IoChoice::Mmsg),
            _ => Err(format!(
                "expected \"uring\", \"mmsg\" or \"auto\", got \"{s}\""
            )),
        }
    }
}

/// How the served clock is steered (`clock system|software|auto`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ClockChoice {
    /// The system clock when the process may adjust it, else software.
    #[default]
    Auto,
    /// Discipline the system clock (`clock_adjtime`).
    System,
    /// Leave the system clock alone; serve system time plus a correction.
    Software,
}

impl ClockChoice {
    /// The keyword used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            ClockChoice::Auto => "auto",
            ClockChoice::System => "system",
            ClockChoice::Software => "software",
        }
    }
}

impl fmt::Display for ClockChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ClockChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(ClockChoice::Auto),
            "system" => Ok(ClockChoice::System),
            "software" => Ok(ClockChoice::Software),
            _ => Err(format!(
                "expected \"system\", \"software\" or \"auto\", got \"{s}\""
            )),
        }
    }
}

/// Something accepted but ignored or overridden, to be logged at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The file, as in [`Config::source`].
    pub source: String,
    /// 1-based line number; 0 for the file as a whole.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_located(f, &self.source, self.line, &self.message)
    }
}

/// Why a configuration was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given to [`Config::parse`] or [`Config::load`].
    pub source: String,
    /// 1-based line number; 0 when the file as a whole is at fault.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_located(f, &self.source, self.line, &self.message)
    }
}

impl std::error::Error for ConfigError {}

/// `SOURCE:LINE: MESSAGE`, or `SOURCE: MESSAGE` for line 0.
fn write_located(f: &mut fmt::Formatter<'_>, source: &str, line: usize, msg: &str) -> fmt::Result {
    if line == 0 {
        write!(f, "{source}: {msg}")
    } else {
        write!(f, "{source}:{line}: {msg}")
    }
}

/// Rate-limit parameters (`ratelimit interval I burst B leak L table N ipv6prefix P`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitParams {
    /// log2 of the sustained average interval between requests, in seconds.
    pub interval: i8,
    /// Requests allowed back to back before limiting starts (1..=255).
    pub burst: u8,
    /// When limited, answer 1 in 2^leak anyway, so a spoofed flood cannot
    /// silence the address it spoofs (0 answers everything, i.e. no limiting).
    pub leak: u8,
    /// Entries in the table (rounded up to a power of two, at least 1024).
    pub table_entries: usize,
    /// IPv6 clients are limited per prefix of this length.
    pub ipv6_prefix: u8,
}

impl Default for RateLimitParams {
    fn default() -> Self {
        RateLimitParams {
            interval: 1,
            burst: 16,
            leak: 2,
            table_entries: 1 << 20,
            ipv6_prefix: 64,
        }
    }
}
