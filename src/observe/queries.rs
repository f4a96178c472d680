//! The daemon's answers to mode 6 queries (ntpq, check_ntp_peer): the
//! system and association variables, with the names and units ntpd uses
//! (milliseconds for offsets, delays and jitter; ppm for frequency;
//! timestamps in hexadecimal), from the published state and the sync
//! thread's reports.

use crate::clock::system_unix_ns;
use crate::proto::control::{peer_status, system_status, timestamp_text, Selection, SyncSource};
use crate::proto::LeapIndicator;
use crate::server::queries::ControlQueries;
use crate::state::{unix_ns_to_ntp, StateReader};
use crate::sync::refid::refid_text;
use crate::sync::{Mark, SourceBoard, SourceReport};

/// What mode 6 queries read.
pub struct QueryView {
    pub state: StateReader,
    pub sources: SourceBoard,
    /// `local stratum`: the host clock is served, no source is polled.
    pub local: bool,
}

fn ms(seconds: f64) -> String {
    format!("{:.3}", seconds * 1e3)
}

fn leap_bits(leap: LeapIndicator) -> &'static str {
    match leap {
        LeapIndicator::NoWarning => "00",
        LeapIndicator::InsertSecond => "01",
        LeapIndicator::DeleteSecond => "10",
        LeapIndicator::Unknown => "11",
    }
}

/// A source's place in selection, as ntpq's tally codes show it.
fn selection(mark: Mark) -> Selection {
    match mark {
        Mark::SystemPeer => Selection::SystemPeer,
        Mark::Survivor => Selection::Candidate,
        Mark::Candidate => Selection::Outlier,
        Mark::Falseticker => Selection::Falseticker,
        Mark::Unreachable | Mark::Unusable(_) => Selection::Reject,
    }
}

/// Associations are numbered as the sync thread numbers its sources.
fn association(r: &SourceReport) -> u16 {
    r.id.0 as u16
}

fn status_of(r: &SourceReport) -> u16 {
    peer_status(true, r.reach != 0, selection(r.mark))
}

impl ControlQueries for QueryView {
    fn associations(&self) -> Vec<(u16, u16)> {
        self.sources
            .read()
            .iter()
            .map(|r| (association(r), status_of(r)))
            .collect()
    }

    fn system_variables(&self) -> (u16, Vec<(&'static str, String)>) {
        let state = self.state.read();
        let sys = &state.system;
        let now = unix_ns_to_ntp(state.correction.apply(system_unix_ns()));
        let synced = sys.is_synchronized();
        let source = match (synced, self.local) {
            (false, _) => SyncSource::Unspecified,
            (true, true) => SyncSource::Local,
            (true, false) => SyncSource::Ntp,
        };
        let leap = if synced {
            sys.leap
        } else {
            LeapIndicator::Unknown
        };
        let engine = self.sources.status();
        let peer = engine
            .and_then(|e| e.system_peer)
            .map_or(0, |id| id.0 as u16);
        let reports = self.sources.read();
        let poll = reports
            .iter()
            .find(|r| r.mark == Mark::SystemPeer)
            .map_or(6, |r| r.poll);
        let mut vars: Vec<(&'static str, String)> = vec![
            (
                "version",
                format!("\"tachyond {}\"", env!("CARGO_PKG_VERSION")),
            ),
            ("processor", format!("\"{}\"", std::env::consts::ARCH)),
            ("system", format!("\"{}\"", system_name())),
            ("leap", leap_bits(leap).to_string()),
            ("stratum", if synced { sys.stratum } else { 16 }.to_string()),
            ("precision", sys.precision.to_string()),
            ("rootdelay", ms(sys.root_delay)),
            ("rootdisp", ms(sys.root_dispersion_at(now))),
            (
                "refid",
                refid_text(sys.reference_id, sys.stratum)
                    .trim_matches('.')
                    .to_string(),
            ),
            ("reftime", timestamp_text(sys.reference_time)),
            ("clock", timestamp_text(now)),
            ("peer", peer.to_string()),
            ("tc", poll.to_string()),
            ("mintc", "3".to_string()),
        ];
        match engine {
            Some(e) => {
                vars.push(("offset", ms(e.last_offset)));
                vars.push(("frequency", format!("{:.3}", e.frequency_ppm)));
                vars.push(("sys_jitter", ms(e.jitter)));
                vars.push(("clk_jitter", ms(e.jitter)));
            }
            None => {
                vars.push(("offset", "0.000".to_string()));
                vars.push((
                    "frequency",
                    format!("{:.3}", state.correction.frequency * 1e6),
                ));
            }
        }
        (system_status(leap, source), vars)
    }

    fn association_variables(&self, id: u16) -> Option<(u16, Vec<(&'static str, String)>)> {
        let reports = self.sources.read();
        let r = reports.iter().find(|r| association(r) == id)?;
        let now_ns = system_unix_ns();
        let mut vars: Vec<(&'static str, String)> = vec![
            ("srcadr", r.address.to_string()),
            ("srcport", "123".to_string()),
            (
                "stratum",
                if r.stratum == 0 { 16 } else { r.stratum }.to_string(),
            ),
            (
                "refid",
                refid_text(r.refid, r.stratum).trim_matches('.').to_string(),
            ),
            ("reach", format!("0x{:x}", r.reach)),
            ("hmode", "3".to_string()),
            ("pmode", "4".to_string()),
            ("hpoll", r.poll.to_string()),
            ("ppoll", r.poll.to_string()),
        ];
        if let Some(age) = r.last_sample_age {
            let rec = now_ns - (age * 1e9) as i64;
            vars.push(("rec", timestamp_text(unix_ns_to_ntp(rec))));
        }
        for (name, value) in [
            ("offset", r.offset),
            ("delay", r.delay),
            ("jitter", r.jitter),
        ] {
            if let Some(seconds) = value {
                vars.push((name, ms(seconds)));
            }
        }
        if let Some(distance) = r.root_distance {
            vars.push(("rootdisp", ms(distance)));
        }
        Some((status_of(r), vars))
    }
}

/// "Linux/6.1.0", as ntpd's `system` variable reads.
fn system_name() -> String {
    match nix::sys::utsname::uname() {
        Ok(u) => format!(
            "{}/{}",
            u.sysname().to_string_lossy(),
            u.release().to_string_lossy()
        ),
        Err(_) => std::env::consts::OS.to_string(),
    }
}
