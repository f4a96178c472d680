//! The driftfile: the clock's frequency correction in ppm, one number on one
//! line, as ntpd writes it, so a restart resumes at the right frequency
//! instead of learning it again.
//!
//! Written at most hourly ([`should_write`]), atomically: a temporary file in
//! the same directory, flushed to disk, renamed over the old one, and the
//! directory synced, so a crash leaves either the old or the new value.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How the frequency is written in the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DriftFormat {
    /// ntpd's and NTPsec's: the frequency correction in ppm.
    #[default]
    Ntpd,
    /// chrony's: the clock's frequency offset in ppm, which is the
    /// correction with the opposite sign, then chrony's skew estimate.
    Chrony,
}

/// The skew written into a chrony drift file, ppm: tachyon keeps no skew
/// estimate of chrony's kind, so chronyd, if it takes the file over, starts
/// by trusting the frequency only to within this.
pub const CHRONY_SKEW_PPM: f64 = 1.0;

/// A driftfile and its format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Driftfile {
    pub path: PathBuf,
    pub format: DriftFormat,
}

impl Driftfile {
    /// The frequency correction kept in the file, ppm (`Ok(None)`: no file yet).
    pub fn read(&self) -> Result<Option<f64>, DriftError> {
        let ppm = read(&self.path)?;
        Ok(match self.format {
            DriftFormat::Ntpd => ppm,
            DriftFormat::Chrony => ppm.map(|p| -p),
        })
    }

    /// Keeps the frequency correction `ppm` (atomically, as [`write`]).
    pub fn write(&self, ppm: f64) -> Result<(), DriftError> {
        match self.format {
            DriftFormat::Ntpd => write(&self.path, ppm),
            DriftFormat::Chrony => {
                write_text(&self.path, &format!("{:.6} {CHRONY_SKEW_PPM:.6}\n", -ppm))
            }
        }
    }
}

/// Least time between two writes, seconds.
pub const WRITE_INTERVAL: f64 = 3600.0;
/// Values beyond this (ppm) are not a real oscillator's and are refused.
pub const MAX_DRIFT_PPM: f64 = 500.0;

/// Why a driftfile could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: expected a frequency in ppm, found {found:?}")]
    Parse { path: PathBuf, found: String },
    #[error("{path}: frequency {ppm} ppm is beyond ±{MAX_DRIFT_PPM} ppm")]
    OutOfRange { path: PathBuf, ppm: f64 },
}

/// Parses driftfile contents: the first whitespace-separated token, in ppm
/// (ntpd and NTPsec write just that; anything after it is ignored).
pub fn parse(text: &str) -> Option<f64> {
    let value: f64 = text.split_whitespace().next()?.parse().ok()?;
    value.is_finite().then_some(value)
}

/// Reads the frequency. A missing file is `Ok(None)` (first start).
pub fn read(path: &Path) -> Result<Option<f64>, DriftError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DriftError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let ppm = parse(&text).ok_or_else(|| DriftError::Parse {
        path: path.to_path_buf(),
        found: text.trim().chars().take(40).collect(),
    })?;
    if ppm.abs() > MAX_DRIFT_PPM {
        return Err(DriftError::OutOfRange {
            path: path.to_path_buf(),
            ppm,
        });
    }
    Ok(Some(ppm))
}

/// Writes the frequency atomically (temp file, fsync, rename, fsync of the
/// directory).
pub fn write(path: &Path, ppm: f64) -> Result<(), DriftError> {
    write_text(path, &format!("{ppm:.3}\n"))
}

/// Replaces the file's contents with `text`, atomically.
fn write_text(path: &Path, text: &str) -> Result<(), DriftError> {
    let io_err = |source| DriftError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io_err(io::Error::new(io::ErrorKind::InvalidInput, "no file name")))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp.{}", std::process::id()));
    let temp = dir.join(temp_name);
    let result = (|| {
        let mut f = create_exclusive(&temp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&temp, path)?;
        // Make the rename itself durable.
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(io_err)
}

/// Creates `temp` for writing, never through a symlink and never into an
/// existing file: the name is predictable, and the directory may be shared
/// with someone who plants a link there for a root tachyond to follow. A
/// leftover (a crash between create and rename, or a planted link) is
/// removed once — unlinking removes the link itself, not its target.
fn create_exclusive(temp: &Path) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644)
            .open(temp)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(temp)?;
            open()
        }
        other => other,
    }
}

/// Whether the frequency is known well enough to be kept: its standard
/// deviation, ppm, at most this. A value still close to its prior (the
/// previous driftfile, or the kernel's frequency at start) is not a
/// measurement, and a restart would trust it as one.
pub const MEASURED_SD_PPM: f64 = 0.5;

pub fn is_measured(frequency_sd_ppm: f64) -> bool {
    frequency_sd_ppm <= MEASURED_SD_PPM
}

/// Whether to write now: the frequency is measured, and it was never written
/// or an hour has passed since (monotonic seconds).
pub fn should_write(last_write: Option<f64>, now: f64, frequency_sd_ppm: f64) -> bool {
    is_measured(frequency_sd_ppm)
        && match last_write {
            None => true,
            Some(t) => now - t >= WRITE_INTERVAL,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir().join(format!(
                "tachyon-drift-{tag}-{}-{nanos}",
                std::process::id()
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn parse_ntpd_format() {
        assert_eq!(parse("-12.345\n"), Some(-12.345));
        assert_eq!(parse("  7 extra"), Some(7.0));
        assert_eq!(parse(""), None);
        assert_eq!(parse("abc"), None);
        assert_eq!(parse("NaN"), None);
    }

    #[test]
    fn round_trip_and_replace() {
        let dir = TempDir::new("rt");
        let path = dir.0.join("ntp.drift");
        assert_eq!(read(&path).unwrap(), None);
        write(&path, -23.4567).unwrap();
        assert_eq!(read(&path).unwrap(), Some(-23.457));
        write(&path, 1.5).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "1.500\n");
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["ntp.drift"]);
    }

    #[test]
    fn bad_contents_are_errors() {
        let dir = TempDir::new("bad");
        let path = dir.0.join("drift");
        fs::write(&path, "garbage\n").unwrap();
        assert!(matches!(read(&path), Err(DriftError::Parse { .. })));
        fs::write(&path, "900\n").unwrap();
        assert!(matches!(read(&path), Err(DriftError::OutOfRange { .. })));
        // Writing into a missing directory fails cleanly.
        let missing = dir.0.join("no/such/dir/drift");
        assert!(matches!(write(&missing, 1.0), Err(DriftError::Io { .. })));
    }

    #[test]
    fn a_planted_symlink_is_not_followed() {
        let dir = TempDir::new("link");
        let path = dir.0.join("ntp.drift");
        let victim = dir.0.join("victim");
        fs::write(&victim, "precious\n").unwrap();
        // The temporary name is predictable: plant a link there.
        let temp = dir.0.join(format!(".ntp.drift.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &temp).unwrap();
        write(&path, 3.25).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        assert_eq!(read(&path).unwrap(), Some(3.25));
        assert!(fs::symlink_metadata(&temp).is_err(), "the link is gone");
        // A stale regular file left by a crash is replaced too.
        fs::write(&temp, "stale").unwrap();
        write(&path, 4.5).unwrap();
        assert_eq!(read(&path).unwrap(), Some(4.5));
    }

    #[test]
    fn chrony_drift_files_keep_the_offset_with_its_sign() {
        let dir = TempDir::new("chrony");
        let file = Driftfile {
            path: dir.0.join("chrony.drift"),
            format: DriftFormat::Chrony,
        };
        assert_eq!(file.read().unwrap(), None);
        // chronyd's own file: the clock runs 12.5 ppm fast, so the
        // correction is -12.5 ppm.
        fs::write(&file.path, "           12.500000             0.044000\n").unwrap();
        assert_eq!(file.read().unwrap(), Some(-12.5));
        file.write(-7.25).unwrap();
        assert_eq!(
            fs::read_to_string(&file.path).unwrap(),
            "7.250000 1.000000\n"
        );
        assert_eq!(file.read().unwrap(), Some(-7.25));
        let ntpd = Driftfile {
            path: dir.0.join("ntp.drift"),
            format: DriftFormat::Ntpd,
        };
        ntpd.write(-7.25).unwrap();
        assert_eq!(fs::read_to_string(&ntpd.path).unwrap(), "-7.250\n");
    }

    #[test]
    fn hourly_policy() {
        assert!(should_write(None, 0.0, 0.1));
        assert!(!should_write(Some(100.0), 100.0 + 3599.0, 0.1));
        assert!(should_write(Some(100.0), 100.0 + 3600.0, 0.1));
    }

    #[test]
    fn only_a_measured_frequency_is_written() {
        // At the first synchronization the frequency is still the prior
        // (100 ppm uncertain without a driftfile, 1 ppm with one).
        assert!(!should_write(None, 20.0, 100.0));
        assert!(!should_write(None, 20.0, 1.0));
        assert!(!should_write(Some(0.0), 7200.0, 0.6));
        assert!(should_write(None, 300.0, 0.4));
    }
}
