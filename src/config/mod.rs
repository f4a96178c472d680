//! The configuration file, in either of two dialects, and the typed
//! [`Config`] both yield.
//!
//! Pool operators bring the file they already run: ntpd's or NTPsec's
//! `ntp.conf`, or chronyd's `chrony.conf` with the files it includes. Each
//! dialect's parser reads the directives tachyon acts on, a few of
//! tachyon's own (`listen`, `workers`, `io`, `rcvbuf`, `metrics`, `clock`,
//! `xleave`, `txtimestamp`),
//! accepts with a warning the directives that have no meaning here, and
//! refuses the rest with an error that names the file, the line and what was
//! expected. The dialect is chosen by the command line, else the file's
//! name, else its first directive that only one dialect has.
//!
//! The parsers are pure: they never resolve names, open sockets or read the
//! clock. [`Config::load`] and [`Config::load_with`] read files, through
//! `loader`. The operator reference is `docs/config.md`.
//!
//! Modules, each importing only modules further down this list (a test
//! checks it): mod.rs (the entry points), `dialect` (which dialect),
//! `loader` (files and chrony's includes), `chrony` (the chrony.conf
//! directive table) with `chrony_access` (`allow`/`deny`) and
//! `chrony_source` (`server`/`pool` options), `ntp` (the ntp.conf directive
//! table), `own` (tachyon's own directives), `builder` (the configuration
//! under construction), `lines` (numbered lines and each dialect's words),
//! `model` (the typed configuration), the directive modules `addr`,
//! `restrict` and `upstream`, and `words` (argument helpers and how tokens
//! are shown in messages).

mod addr;
mod builder;
mod chrony;
mod chrony_access;
mod chrony_source;
mod dialect;
mod lines;
mod loader;
mod model;
mod ntp;
mod own;
pub mod reference;
mod restrict;
mod upstream;
mod words;

#[cfg(test)]
mod chrony_tests;
#[cfg(test)]
mod tests;

pub use model::{
    ClockChoice, Config, ConfigError, ConfigFormat, ConfigWarning, Dialect, IoChoice, MakeStep,
    RateLimitParams, XdpConfig, XleaveParams, DEFAULT_RCVBUF, DEFAULT_XLEAVE_ENTRIES,
    MAX_FILE_BYTES, MAX_LINE_BYTES, RCVBUF_RANGE, XDP_DEFAULT_COALESCE_US, XDP_MAX_COALESCE_US,
    XDP_MAX_QUEUES, XLEAVE_ENTRIES_RANGE,
};
pub use restrict::{Family, RestrictFlags, RestrictRule, RestrictTarget};
pub use upstream::{ServerConfig, SourceKind};

/// ntpd and NTPsec directives accepted with a warning, and why they do
/// nothing here.
pub fn ignored_ntp_directives() -> &'static [(&'static str, &'static str)] {
    ntp::IGNORED
}

/// ntpd directives refused with an error (they would configure what tachyon
/// does not have).
pub fn refused_ntp_directives() -> &'static [&'static str] {
    ntp::UNSUPPORTED
}

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
    /// Parses ntp.conf text. `source` names the text in messages (normally
    /// the file path). Names are never resolved here.
    pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
        Config::parse_as(text, source, Dialect::Ntp)
    }

    /// Parses text in `dialect`. chrony's `confdir`, `sourcedir` and
    /// `include` are checked but not followed: only [`Config::load_with`]
    /// reads files.
    pub fn parse_as(text: &str, source: &str, dialect: Dialect) -> Result<Config, ConfigError> {
        let mut config = match dialect {
            Dialect::Ntp => ntp::parse(text, source)?,
            Dialect::Chrony => chrony::parse_text(text, source)?,
        };
        config.dialect_reason = format!("text given as {dialect}");
        Ok(config)
    }

    /// Reads and parses a configuration file in the dialect its name or
    /// content says (see [`ConfigFormat::Auto`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, ConfigFormat::Auto)
    }

    /// Reads and parses a configuration file; for chrony.conf, with the
    /// files it includes. A file that cannot be read is reported with line 0
    /// and the operating system's message; so is one larger than
    /// [`MAX_FILE_BYTES`] (all files together, for chrony.conf), of which no
    /// more than that is read.
    pub fn load_with(path: &Path, format: ConfigFormat) -> Result<Config, ConfigError> {
        let source = path.display().to_string();
        let text = loader::read_text(path, &source, MAX_FILE_BYTES)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (dialect, reason) = dialect::choose(format, &name, &text);
        let mut config = match dialect {
            Dialect::Ntp => ntp::parse(&text, &source)?,
            Dialect::Chrony => chrony::parse(&loader::chrony_lines(&source, &text)?, &source)?,
        };
        config.dialect_reason = reason;
        Ok(config)
    }

    /// The configuration of [`EMBEDDED_DEFAULT`].
    pub fn embedded_default() -> Config {
        match Config::parse(EMBEDDED_DEFAULT, EMBEDDED_SOURCE) {
            Ok(mut config) => {
                config.dialect_reason = "the built-in configuration".to_string();
                config
            }
            // The text is a constant and a unit test parses it.
            Err(e) => panic!("the embedded default configuration does not parse: {e}"),
        }
    }
}
