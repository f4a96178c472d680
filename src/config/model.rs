//! The typed configuration both dialects yield, and its messages.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use super::restrict::RestrictRule;
use super::upstream::ServerConfig;

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

/// The most a configuration file may hold, in bytes: far above any real
/// file (the largest pool operators' files are well under 1 MiB), low enough
/// that a wrong path such as `/dev/zero` is refused at once instead of
/// filling memory.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// The longest line, in bytes.
pub const MAX_LINE_BYTES: usize = 4096;

/// The typed configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file the configuration came from, as shown in messages, or
    /// `"<embedded default>"`.
    pub source: String,
    /// The syntax the file was read in.
    pub dialect: Dialect,
    /// Why that dialect, for the log: the command line, the file's name, or
    /// its first directive that only one dialect has.
    pub dialect_reason: String,
    /// Upstream servers and pools, in file order.
    pub servers: Vec<ServerConfig>,
    /// Where the frequency correction is kept across restarts.
    pub driftfile: Option<PathBuf>,
    /// An IETF/NIST `leap-seconds.list` file.
    pub leapfile: Option<PathBuf>,
    /// Access rules, each target once. From an ntp.conf: in file order,
    /// rules with the same target merged into the first one (flags
    /// combined). From a chrony.conf: a default for each family (denied
    /// unless `allow` covers it), then each subnet `allow`/`deny` left.
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
    /// `local stratum N`: serve the host clock at stratum N and poll no
    /// upstream (tests and standalone use).
    pub local_stratum: Option<u8>,
    /// `holdover SECONDS`: how long the clock is still served as
    /// synchronized with no selectable upstream; `None`: the engine's default.
    pub holdover: Option<u32>,
    /// chrony's `driftfile`: a drift file in chrony's format (the frequency
    /// in ppm with the opposite sign to ntpd's, then a skew), which must not
    /// be read or written as an ntpd driftfile.
    pub chrony_driftfile: Option<PathBuf>,
    /// chrony's `makestep THRESHOLD LIMIT` (without it: a step only at the
    /// first update, beyond 0.128 s).
    pub makestep: Option<MakeStep>,
    /// chrony's `minsources N`: the fewest selectable sources before the
    /// clock is steered (without it: 3 with 4 or more sources, else 1).
    pub min_sources: Option<u32>,
    /// Per-client rate limiting for `restrict ... limited` (`ratelimit ...`).
    pub ratelimit: RateLimitParams,
    /// SO_RCVBUF asked for each listening socket (`rcvbuf SIZE`).
    pub rcvbuf: usize,
    /// The interleaved mode (RFC 9769) and its table (`xleave ...`).
    pub xleave: XleaveParams,
    /// Kernel transmit timestamps on the listening sockets (`txtimestamp
    /// on|off`): the T3 error histogram, the departure estimate's
    /// calibration, and the interleaved mode need them.
    pub tx_timestamps: bool,
    /// Everything that was accepted but ignored, or overridden.
    pub warnings: Vec<ConfigWarning>,
}

/// The two configuration file syntaxes tachyon reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// ntpd's and NTPsec's `ntp.conf`, with tachyon's own directives.
    #[default]
    Ntp,
    /// chronyd's `chrony.conf`, with tachyon's own directives.
    Chrony,
}

impl Dialect {
    /// The name used on the command line and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Ntp => "ntp",
            Dialect::Chrony => "chrony",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the dialect of a file is chosen (`--config-format ntp|chrony|auto`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConfigFormat {
    /// By the file's name, else by its first dialect-specific directive,
    /// else ntp.conf.
    #[default]
    Auto,
    /// This dialect, whatever the file.
    Only(Dialect),
}

impl fmt::Display for ConfigFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigFormat::Auto => f.write_str("auto"),
            ConfigFormat::Only(d) => d.fmt(f),
        }
    }
}

impl FromStr for ConfigFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(ConfigFormat::Auto),
            "ntp" => Ok(ConfigFormat::Only(Dialect::Ntp)),
            "chrony" => Ok(ConfigFormat::Only(Dialect::Chrony)),
            _ => Err(format!(
                "expected \"ntp\", \"chrony\" or \"auto\", got {s:?}"
            )),
        }
    }
}

/// chrony's `makestep THRESHOLD LIMIT`: step the clock instead of slewing
/// when the offset is larger than `threshold`, in the first `limit` clock
/// updates (`None`: in any update, chrony's negative limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MakeStep {
    pub threshold: std::time::Duration,
    pub limit: Option<u32>,
}

/// The packet I/O backend (`io uring|mmsg|auto|xdp IFACE ...`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum IoChoice {
    /// io_uring where the kernel supports it, else recvmmsg/sendmmsg.
    #[default]
    Auto,
    /// io_uring only; failing to set it up is an error.
    Uring,
    /// recvmmsg/sendmmsg.
    Mmsg,
    /// AF_XDP on one interface (kernel bypass); never chosen by `auto`.
    Xdp(XdpConfig),
}

impl IoChoice {
    /// The keyword used in the configuration file.
    pub fn as_str(&self) -> &'static str {
        match self {
            IoChoice::Auto => "auto",
            IoChoice::Uring => "uring",
            IoChoice::Mmsg => "mmsg",
            IoChoice::Xdp(_) => "xdp",
        }
    }
}

impl fmt::Display for IoChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoChoice::Xdp(x) => write!(f, "xdp {x}"),
            other => f.write_str(other.as_str()),
        }
    }
}

impl FromStr for IoChoice {
    type Err = String;

    /// The one-word choices; `xdp` takes arguments (`io xdp IFACE ...`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(IoChoice::Auto),
            "uring" => Ok(IoChoice::Uring),
            "mmsg" => Ok(IoChoice::Mmsg),
            _ => Err(format!(
                "expected \"uring\", \"mmsg\", \"auto\" or \"xdp IFACE\", got \"{s}\""
            )),
        }
    }
}

/// `io xdp IFACE [queues N] [mode native|generic|auto] [zerocopy on|off|auto]
/// [coalesce USEC]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct XdpConfig {
    /// The interface the XDP program is attached to.
    pub interface: String,
    /// Serve receive queues 0..N (one worker each); `None`: every RX queue
    /// the interface has.
    pub queues: Option<u32>,
    /// Where the program runs: `Some(true)` in the driver (native),
    /// `Some(false)` in the generic path, `None` native where the driver
    /// supports it, else generic.
    pub native: Option<bool>,
    /// Zero-copy sockets: `Some(true)` required, `Some(false)` never (copy
    /// mode), `None` where the driver supports it.
    pub zerocopy: Option<bool>,
    /// `coalesce USEC`: under load, a worker waits this long after a batch
    /// so that the next one is larger (fewer wake-ups); `None`:
    /// [`XDP_DEFAULT_COALESCE_US`].
    pub coalesce_us: Option<u32>,
}

/// The default of `io xdp ... coalesce USEC`.
pub const XDP_DEFAULT_COALESCE_US: u32 = 20;
/// The most `coalesce` takes.
pub const XDP_MAX_COALESCE_US: u32 = 1000;

/// The most queues `io xdp` serves (the XDP program's socket map size).
pub const XDP_MAX_QUEUES: u32 = 256;

impl fmt::Display for XdpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.interface)?;
        if let Some(n) = self.queues {
            write!(f, " queues {n}")?;
        }
        let word = |choice: Option<bool>, yes: &'static str, no: &'static str| match choice {
            Some(true) => yes,
            Some(false) => no,
            None => "auto",
        };
        write!(
            f,
            " mode {} zerocopy {}",
            word(self.native, "native", "generic"),
            word(self.zerocopy, "on", "off")
        )?;
        if let Some(us) = self.coalesce_us {
            write!(f, " coalesce {us}")?;
        }
        Ok(())
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
    /// The file: [`Config::source`], or a file it includes.
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
    /// The file, as given to [`Config::parse`] or [`Config::load`], or a
    /// file it includes.
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

/// The pairs table of the interleaved mode, by default: 16 Mi pairs (128 MiB
/// when full, committed only as used): the requests of three 64-second polls
/// at 90k interleaved requests/s.
pub const DEFAULT_XLEAVE_ENTRIES: usize = 1 << 24;

/// `xleave table N` bounds.
pub const XLEAVE_ENTRIES_RANGE: std::ops::RangeInclusive<usize> = 1024..=(1 << 30);

/// The interleaved mode (`xleave on|off [table N]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XleaveParams {
    /// Answer requests in the interleaved mode (on by default).
    pub enabled: bool,
    /// Pairs the table holds (rounded up to a power of two).
    pub table_entries: usize,
}

impl Default for XleaveParams {
    fn default() -> Self {
        XleaveParams {
            enabled: true,
            table_entries: DEFAULT_XLEAVE_ENTRIES,
        }
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
    /// silence the address it spoofs (1..=8; the parser refuses 0, which
    /// would answer everything, i.e. not limit at all).
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
