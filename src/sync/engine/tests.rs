//! Engine behaviour that needs a few sources talking: driven through the
//! simulation for short runs.

use super::*;
use crate::sync::sim::{Scenario, ServerSpec, Sim, BASE_UNIX};

fn short(name: &'static str, seed: u64) -> Scenario {
    let mut s = Scenario::baseline(name, seed);
    s.duration = 900.0;
    s
}

#[test]
fn system_info_follows_the_system_peer() {
    let mut s = short("system info", 1);
    for srv in &mut s.servers {
        srv.stratum = 2;
        srv.root_delay = 0.004;
        srv.root_dispersion = 0.002;
    }
    let (sim, _) = Sim::run(s);
    let info = sim.engine.system_info();
    assert!(info.is_synchronized());
    assert_eq!(info.stratum, 3);
    assert_eq!(info.leap, LeapIndicator::NoWarning);
    assert_eq!(info.precision, -20);
    let peer = sim.engine.system_peer().unwrap();
    let report = sim.engine.sources(sim.mono);
    let peer_report = report.iter().find(|r| r.id == peer).unwrap();
    assert_eq!(peer_report.mark, Mark::SystemPeer);
    let IpAddr::V4(v4) = peer_report.address else {
        panic!()
    };
    assert_eq!(info.reference_id, v4.octets());
    // Root delay: the upstream's plus our delay to it (≥ 200 µs base).
    assert!(
        info.root_delay > 0.004 + 190e-6 && info.root_delay < 0.004 + 1e-3,
        "{}",
        info.root_delay
    );
    // Root dispersion: the upstream's plus our own (mostly the clock filter's
    // dispersion, aged at 15 ppm).
    assert!(
        info.root_dispersion > 0.002 && info.root_dispersion < 0.012,
        "{}",
        info.root_dispersion
    );
    // Reference time: the served time of the last update, within a poll.
    let (unix, _) = info.reference_time.to_unix_near(BASE_UNIX);
    assert!(
        unix > BASE_UNIX + 900 - 1100 && unix <= BASE_UNIX + 901,
        "{unix}"
    );
    // Every source is reported with its figures.
    for r in &report {
        assert_eq!(r.stratum, 2);
        assert_eq!(r.refid, *b"GPS\0");
        assert!(r.reach != 0);
        assert!(r.offset.unwrap().abs() < 1e-3);
        assert!(r.delay.unwrap() > 190e-6);
        assert!(r.jitter.unwrap() > 0.0);
        assert!(r.last_sample_age.unwrap() < 1100.0);
        assert!(r.samples >= 8);
        assert!(r.mark.is_selected() || r.mark == Mark::Candidate);
        assert!(r.counters.valid >= 8);
    }
}

#[test]
fn ipv6_system_peer_refid_is_md5_hashed() {
    let mut s = short("ipv6 refid", 2);
    for (i, srv) in s.servers.iter_mut().enumerate() {
        srv.addr = format!("2001:db8::{}", i + 1).parse().unwrap();
    }
    let (sim, _) = Sim::run(s);
    let info = sim.engine.system_info();
    let peer = sim.engine.system_peer().unwrap();
    let addr = sim
        .engine
        .sources(sim.mono)
        .into_iter()
        .find(|r| r.id == peer)
        .unwrap()
        .address;
    assert_eq!(info.reference_id, crate::sync::refid::reference_id(addr));
    let IpAddr::V6(v6) = addr else { panic!() };
    assert_ne!(&info.reference_id[..], &v6.octets()[..4]);
}

#[test]
fn prefer_and_noselect() {
    let mut s = short("prefer and noselect", 3);
    s.servers[2].options.prefer = true;
    s.servers[3].options.noselect = true;
    let (sim, _) = Sim::run(s);
    assert_eq!(sim.engine.system_peer(), Some(sim.ids[2]));
    assert_eq!(sim.first_selected[3], None);
    assert_eq!(
        sim.engine.mark(sim.ids[3]),
        Some(Mark::Unusable(Unusable::NoSelect))
    );
    // A noselect source is still polled and measured.
    let r = &sim.engine.sources(sim.mono)[3];
    assert!(r.noselect && r.offset.is_some() && r.reach != 0);
}

#[test]
fn leap_from_majority_of_selected_sources() {
    let mut s = short("leap majority", 4);
    for srv in s.servers.iter_mut().take(3) {
        srv.leap = LeapIndicator::InsertSecond;
    }
    let (sim, _) = Sim::run(s);
    assert_eq!(sim.engine.system_info().leap, LeapIndicator::InsertSecond);
    // One of four is not a majority.
    let mut s = short("leap minority", 4);
    s.servers[0].leap = LeapIndicator::InsertSecond;
    let (sim, _) = Sim::run(s);
    assert_eq!(sim.engine.system_info().leap, LeapIndicator::NoWarning);
}

#[test]
fn leap_table_overrides_sources() {
    let mut s = short("leap table", 5);
    for srv in &mut s.servers {
        srv.leap = LeapIndicator::InsertSecond;
    }
    let mut sim = Sim::new(s);
    // A leap 12 hours after the simulation's start; the table expires later.
    let ntp = BASE_UNIX + crate::proto::time::UNIX_TO_NTP_SECONDS;
    let text = format!(
        "#@ {}\n{} 36\n{} 37\n",
        ntp + 86_400 * 30,
        ntp - 86_400 * 400,
        ntp + 43_200
    );
    sim.engine
        .set_leap_table(Some(LeapTable::parse(&text).unwrap()));
    sim.run_until(600.0);
    assert_eq!(sim.engine.system_info().leap, LeapIndicator::InsertSecond);
    // The kernel gets TAI − UTC from the table: 36 until the leap, 37 after.
    let tai = |sim: &Sim| sim.statuses.last().and_then(|s| s.1.tai_offset);
    assert_eq!(tai(&sim), Some(36));
    sim.run_until(45_400.0);
    assert_eq!(tai(&sim), Some(37));
    assert_eq!(sim.engine.system_info().leap, LeapIndicator::NoWarning);
    // An expired table says nothing of it.
    let text = format!("#@ {}\n{} 37\n", ntp + 600, ntp - 86_400 * 400);
    sim.engine
        .set_leap_table(Some(LeapTable::parse(&text).unwrap()));
    sim.run_until(47_600.0);
    assert_eq!(tai(&sim), None);
    // A table with nothing scheduled wins over the sources' bits.
    let text = format!("#@ {}\n{} 37\n", ntp + 86_400 * 30, ntp - 86_400 * 400);
    sim.engine
        .set_leap_table(Some(LeapTable::parse(&text).unwrap()));
    sim.run_until(49_800.0);
    assert_eq!(sim.engine.system_info().leap, LeapIndicator::NoWarning);
}

#[test]
fn unknown_source_and_removal() {
    let mut sim = Sim::new(short("removal", 6));
    sim.run_until(100.0);
    let t = NtpTimestamp::ZERO;
    assert_eq!(
        sim.engine.on_reply(SourceId(999), &[0; 48], t, t, sim.mono),
        Err(Reject::UnknownSource)
    );
    let peer = sim.engine.system_peer().unwrap();
    assert!(sim.engine.remove_source(peer));
    assert!(!sim.engine.remove_source(peer));
    assert_eq!(sim.engine.sources(sim.mono).len(), 3);
}

#[test]
fn unsynchronized_until_the_first_update_and_during_a_big_slew() {
    let mut s = short("start", 7);
    s.initial_offset = 0.1;
    let mut sim = Sim::new(s);
    assert!(!sim.engine.system_info().is_synchronized());
    assert_eq!(sim.engine.system_info().stratum, 0);
    sim.run_until(3.0);
    // Slewing 0.1 s: not yet.
    assert!(!sim.engine.is_synchronized());
    assert!(sim.engine.status(sim.mono).remaining_slew.abs() > 0.05);
    sim.run_until(60.0);
    assert!(sim.engine.is_synchronized());
}

#[test]
fn step_abandons_requests_in_flight() {
    let mut s = short("step in flight", 8);
    s.initial_offset = 1.0;
    // One slow server whose first reply arrives after the step.
    s.servers[3].path.base_down = 0.5;
    let (sim, r) = Sim::run(s);
    assert_eq!(sim.steps.len(), 1);
    assert!(
        sim.rejected >= 1,
        "the reply to a pre-step request was used"
    );
    assert!(r.max_error < 1e-3);
}

#[test]
fn a_holdover_shorter_than_the_poll_interval_does_not_flap() {
    // Healthy sources polled every 64 s or more, holdover 30 s: the engine
    // selects again at the bound instead of declaring them gone.
    let mut s = short("holdover 30 s", 9);
    s.engine.holdover = 30.0;
    let (sim, r) = Sim::run(s);
    // The first entry is the start, unsynchronized.
    assert_eq!(
        sim.sync_changes.iter().skip(1).filter(|c| !c.1).count(),
        0,
        "lost synchronization with every source answering: {:?}",
        sim.sync_changes
    );
    assert!(sim.engine.is_synchronized());
    assert!(r.max_error < 1e-3);
}

#[test]
fn a_short_holdover_still_ends_when_the_sources_die() {
    let holdover = 30.0;
    let death = 600.0;
    let mut s = short("holdover 30 s, all die", 10);
    s.servers = (1..=4)
        .map(|n| ServerSpec::honest(n).dying_at(death))
        .collect();
    s.engine.holdover = holdover;
    s.duration = death + 1200.0;
    let (sim, _) = Sim::run(s);
    let lost: Vec<f64> = sim
        .sync_changes
        .iter()
        .skip(1)
        .filter(|c| !c.1)
        .map(|c| c.0)
        .collect();
    assert_eq!(lost.len(), 1, "{:?}", sim.sync_changes);
    let last_selection = sim
        .last_selected
        .iter()
        .flatten()
        .fold(0.0f64, |a, &b| a.max(b));
    assert!(last_selection >= death);
    assert!(
        lost[0] >= last_selection + holdover * 0.999 && lost[0] <= last_selection + holdover + 2.0,
        "unsynchronized at {} s, last selection at {last_selection} s",
        lost[0]
    );
}

#[test]
fn kernel_max_error_is_never_below_the_served_root_distance() {
    // The status goes to the kernel whenever it changes (a new jitter at a
    // poll, too), not only at clock updates; the kernel's maxerror then grows
    // by 500 ppm a second by itself, replies' root dispersion by 15 ppm. It
    // must start from what is served at that moment, never from less.
    let (sim, _) = Sim::run(short("status", 11));
    let synced: Vec<_> = sim.statuses.iter().filter(|s| s.1.synchronized).collect();
    assert!(synced.len() > 10, "{} statuses", synced.len());
    for (t, status, served) in synced {
        assert!(
            status.max_error >= served - 1e-9,
            "at {t:.1} s maxerror {:.6} s, served root distance {served:.6} s",
            status.max_error
        );
        assert!(status.est_error <= status.max_error);
    }
}
