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

//!
//! Modules, each importing only modules further down this list (a test
//! checks it): mod.rs (the entry points), `parser` (the ntp.conf dialect:
//! lines and the directive table), `own` (tachyon's own directives),
//! `builder` (the configuration under construction), `model` (the typed
//! configuration), the directive modules `addr`, `restrict` and `upstream`,
//! and `words` (argument helpers and how tokens are shown in messages).

mod addr;
mod builder;
mod model;
mod own;
mod parser;
mod restrict;
mod upstream;
mod words;

#[cfg(test)]
mod tests;

pub use model::{
    ClockChoice, Config, ConfigError, ConfigWarning, IoChoice, RateLimitParams, DEFAULT_RCVBUF,
    MAX_FILE_BYTES, MAX_LINE_BYTES, RCVBUF_RANGE,
};
pub use restrict::{Family, RestrictFlags, RestrictRule, RestrictTarget};
pub use upstream::{ServerConfig, SourceKind};

use std::path::Path;

/// The source name of [`Config::embedded_default`].
const EMBEDDED_SOURCE: &str = "<embedded default>";

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

impl Config {
    /// Parses configuration text. `source` names the text in messages
    /// (normally the file path). Names are never resolved here.
    pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
        parser::parse(text, source)
    }

    /// Reads and parses a configuration file. A file that cannot be read is
    /// reported with line 0 and the operating system's message; so is one
    /// larger than [`MAX_FILE_BYTES`], of which no more than that is read.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = path.display().to_string();
        let text = read_text(path, &source)?;
        Config::parse(&text, &source)
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

/// The whole of a file as text, read with a size limit.
fn read_text(path: &Path, source: &str) -> Result<String, ConfigError> {
    use std::io::Read;
    let located = |line: usize, message: String| ConfigError {
        source: source.to_string(),
        line,
        message,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| located(0, format!("cannot read the configuration file: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(located(
            0,
            format!(
                "the file is larger than {} MiB, the limit for a configuration file; \
                 is this the right path?",
                MAX_FILE_BYTES >> 20
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
        located(line, "the line is not valid UTF-8".to_string())
    })
}
