//! The IETF/IERS `leap-seconds.list` file: when leap seconds happen, and
//! whether one is due at the end of the current UTC day.
//!
//! Format: `#@ NTPSECONDS` is the expiry, `#$ NTPSECONDS` the last update,
//! `#h ...` a SHA-1 of the data (not checked here: no hash crate, and the file
//! comes from the operator's own package manager), other `#` lines are
//! comments, and each data line is `NTPSECONDS TAI-UTC [# comment]`, the
//! instant (00:00:00 UTC of the day after the leap second) from which the new
//! TAI−UTC offset applies.

use crate::proto::time::UNIX_TO_NTP_SECONDS;
use crate::proto::LeapIndicator;

const DAY: i64 = 86_400;

/// Why a leap-seconds file could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeapFileError {
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("no leap second entries")]
    Empty,
}

/// One entry: from `unix` (seconds) on, TAI − UTC = `tai_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeapEntry {
    pub unix: i64,
    pub tai_offset: i32,
}

/// A parsed leap-seconds list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeapTable {
    entries: Vec<LeapEntry>,
    /// Unix seconds after which the table must not be trusted.
    expires: Option<i64>,
}

fn ntp_to_unix(ntp: i64) -> i64 {
    ntp - UNIX_TO_NTP_SECONDS
}

impl LeapTable {
    pub fn parse(text: &str) -> Result<LeapTable, LeapFileError> {
        let mut entries = Vec::new();
        let mut expires = None;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let syntax = |message: String| LeapFileError::Syntax { line, message };
            let trimmed = raw.trim();
            if let Some(rest) = trimmed.strip_prefix("#@") {
                let ntp: i64 = rest
                    .trim()
                    .parse()
                    .map_err(|_| syntax(format!("bad expiry {:?}", rest.trim())))?;
                expires = Some(ntp_to_unix(ntp));
                continue;
            }
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let data = trimmed.split('#').next().unwrap_or("");
            let mut fields = data.split_whitespace();
            let (Some(when), Some(offset)) = (fields.next(), fields.next()) else {
                return Err(syntax(format!(
                    "expected \"NTPSECONDS TAI-UTC\", got {trimmed:?}"
                )));
            };
            let when: i64 = when
                .parse()
                .map_err(|_| syntax(format!("bad time {when:?}")))?;
            let tai_offset: i32 = offset
                .parse()
                .map_err(|_| syntax(format!("bad offset {offset:?}")))?;
            let entry = LeapEntry {
                unix: ntp_to_unix(when),
                tai_offset,
            };
            if entries
                .last()
                .is_some_and(|e: &LeapEntry| e.unix >= entry.unix)
            {
                return Err(syntax("entries out of order".to_string()));
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(LeapFileError::Empty);
        }
        Ok(LeapTable { entries, expires })
    }

    pub fn entries(&self) -> &[LeapEntry] {
        &self.entries
    }

    /// Expiry, Unix seconds.
    pub fn expires(&self) -> Option<i64> {
        self.expires
    }

    pub fn is_expired(&self, unix: i64) -> bool {
        self.expires.is_some_and(|e| unix >= e)
    }

    /// What an operator should hear about the table's expiry at `unix`: a
    /// warning once it has expired (leap seconds then come from the sources'
    /// leap indicators alone), else when it is good until.
    pub fn expiry_note(&self, unix: i64) -> Result<String, String> {
        let Some(expires) = self.expires else {
            return Ok("no expiry date (#@ line)".to_string());
        };
        let date = jiff::Timestamp::from_second(expires).map_or_else(
            |_| format!("{expires} (Unix)"),
            |t| t.strftime("%Y-%m-%d").to_string(),
        );
        if self.is_expired(unix) {
            Err(format!(
                "expired on {date}, {} days ago: leap seconds are taken from the sources' \
                 leap indicators only; install a current leap-seconds.list (Debian: tzdata)",
                (unix - expires) / DAY
            ))
        } else {
            Ok(format!("good until {date}"))
        }
    }

    /// TAI − UTC at `unix`, if the table covers it.
    pub fn tai_offset(&self, unix: i64) -> Option<i32> {
        let at = self.entries.partition_point(|e| e.unix <= unix);
        (at > 0).then(|| self.entries[at - 1].tai_offset)
    }

    /// The leap indicator to publish at `unix` (Unix seconds, UTC):
    /// `InsertSecond`/`DeleteSecond` during the last day before a leap,
    /// `NoWarning` otherwise, and `None` when the table has expired and so
    /// cannot tell.
    pub fn leap_indicator(&self, unix: i64) -> Option<LeapIndicator> {
        if self.is_expired(unix) {
            return None;
        }
        let next = self.entries.partition_point(|e| e.unix <= unix);
        let Some(entry) = self.entries.get(next) else {
            return Some(LeapIndicator::NoWarning);
        };
        if next == 0 || entry.unix - unix > DAY {
            return Some(LeapIndicator::NoWarning);
        }
        let change = entry.tai_offset - self.entries[next - 1].tai_offset;
        Some(match change {
            1 => LeapIndicator::InsertSecond,
            -1 => LeapIndicator::DeleteSecond,
            _ => LeapIndicator::NoWarning,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tail of a real leap-seconds.list, with its header lines.
    const SAMPLE: &str = "\
#	ATOMIC TIME
#	Coordinated Universal Time (UTC) is the reference time scale ...
#$	 3913697179
#@	3960057600
#
2272060800	10	# 1 Jan 1972
2287785600	11	# 1 Jul 1972
3439756800	34	# 1 Jan 2009
3550089600	35	# 1 Jul 2012
3644697600	36	# 1 Jul 2015
3692217600	37	# 1 Jan 2017
#
#h	16edd0f0 3666784f 37db6bdd e74ced87 59af48f1
";

    /// 2017-01-01T00:00:00Z.
    const LEAP_2016: i64 = 1_483_228_800;

    #[test]
    fn an_expired_table_is_a_warning_with_its_date() {
        let t = LeapTable::parse(SAMPLE).unwrap();
        let expires = t.expires().unwrap();
        assert_eq!(t.expiry_note(expires - 1).unwrap(), "good until 2025-06-28");
        let warning = t.expiry_note(expires + 10 * DAY + 5).unwrap_err();
        assert!(
            warning.starts_with("expired on 2025-06-28, 10 days ago"),
            "{warning}"
        );
    }

    #[test]
    fn parses_entries_and_expiry() {
        let t = LeapTable::parse(SAMPLE).unwrap();
        assert_eq!(t.entries().len(), 6);
        assert_eq!(
            t.entries()[5],
            LeapEntry {
                unix: LEAP_2016,
                tai_offset: 37
            }
        );
        // 3960057600 NTP = 2025-06-28.
        assert_eq!(t.expires(), Some(3_960_057_600 - UNIX_TO_NTP_SECONDS));
        assert_eq!(t.tai_offset(LEAP_2016 - 1), Some(36));
        assert_eq!(t.tai_offset(LEAP_2016), Some(37));
        assert_eq!(t.tai_offset(0), None);
    }

    #[test]
    fn insert_during_the_last_day_only() {
        let t = LeapTable::parse(SAMPLE).unwrap();
        let ins = Some(LeapIndicator::InsertSecond);
        let none = Some(LeapIndicator::NoWarning);
        assert_eq!(t.leap_indicator(LEAP_2016 - DAY - 1), none);
        assert_eq!(t.leap_indicator(LEAP_2016 - DAY), ins);
        assert_eq!(t.leap_indicator(LEAP_2016 - 1), ins);
        assert_eq!(t.leap_indicator(LEAP_2016), none);
        // Mid 2012 leap too.
        assert_eq!(
            t.leap_indicator(3_550_089_600 - UNIX_TO_NTP_SECONDS - 3600),
            ins
        );
        // After the last entry, before expiry: nothing scheduled.
        assert_eq!(t.leap_indicator(LEAP_2016 + 100 * DAY), none);
        // Expired: unknown.
        assert_eq!(t.leap_indicator(3_960_057_600 - UNIX_TO_NTP_SECONDS), None);
    }

    #[test]
    fn negative_leap() {
        let t = LeapTable::parse("3692217600 37\n3723753600 36\n").unwrap();
        assert_eq!(t.expires(), None);
        assert_eq!(
            t.leap_indicator(3_723_753_600 - UNIX_TO_NTP_SECONDS - 10),
            Some(LeapIndicator::DeleteSecond)
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            LeapTable::parse("# only comments\n"),
            Err(LeapFileError::Empty)
        );
        assert!(matches!(
            LeapTable::parse("3692217600\n"),
            Err(LeapFileError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            LeapTable::parse("x 1\n"),
            Err(LeapFileError::Syntax { .. })
        ));
        assert!(matches!(
            LeapTable::parse("#@ soon\n1 1\n"),
            Err(LeapFileError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            LeapTable::parse("3692217600 37\n3644697600 36\n"),
            Err(LeapFileError::Syntax { line: 2, .. })
        ));
    }
}
