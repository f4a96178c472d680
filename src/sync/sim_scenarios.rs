//! The simulation scenarios, each with numeric pass bars, each run over
//! several seeds. chrony's bar (its `test/simulation` defaults): in sync
//! within 120 s, max error ≤ 1 ms and RMS ≤ 300 µs after that, frequency
//! error ≤ 10 ppm. Every run must meet it; tighter bars of tachyon's own
//! (from the figures in docs/sync.md, with a margin) are asserted as well, so
//! a regression shows. `cargo test --lib sync::sim -- --nocapture` prints
//! every run and a worst-case summary per scenario.

use super::engine::{EngineConfig, SampleFilter};
use super::select::{Mark, Unusable};
use super::sim::{Kiss, Path, Report, Scenario, ServerSpec, Sim};
use crate::proto::LeapIndicator;

/// chrony's pass bars.
const CHRONY_SYNC_S: f64 = 120.0;
const CHRONY_MAX_S: f64 = 1e-3;
const CHRONY_RMS_S: f64 = 300e-6;
const CHRONY_FREQ_PPM: f64 = 10.0;

/// tachyon's own bars for one scenario; `max_settled` applies from 10
/// minutes on, after the start-up transient.
#[derive(Clone, Copy)]
struct Bars {
    sync: f64,
    rms: f64,
    max_settled: f64,
    freq_ppm: f64,
}

const BASELINE_BARS: Bars = Bars {
    sync: 30.0,
    rms: 80e-6,
    max_settled: 300e-6,
    freq_ppm: 0.25,
};

/// Asserts chrony's bars and `bars` on one run.
fn assert_bars(r: &Report, bars: Bars) {
    let name = r.name;
    assert!(
        r.time_to_sync <= CHRONY_SYNC_S.min(bars.sync),
        "{name}: sync {} s",
        r.time_to_sync
    );
    assert!(r.max_error <= CHRONY_MAX_S, "{name}: max {} s", r.max_error);
    assert!(
        r.rms_error <= CHRONY_RMS_S.min(bars.rms),
        "{name}: RMS {} s",
        r.rms_error
    );
    assert!(
        r.max_settled <= CHRONY_MAX_S.min(bars.max_settled),
        "{name}: max from 10 min {} s",
        r.max_settled
    );
    assert!(
        r.final_freq_ppm.abs() <= CHRONY_FREQ_PPM.min(bars.freq_ppm)
            && r.rms_freq_ppm <= CHRONY_FREQ_PPM,
        "{name}: frequency error {} ppm (RMS {})",
        r.final_freq_ppm,
        r.rms_freq_ppm
    );
}

/// Runs a scenario for each seed, prints every run and the worst case.
fn run_seeds(seeds: std::ops::Range<u64>, make: impl Fn(u64) -> Scenario) -> Vec<(Sim, Report)> {
    let runs: Vec<(Sim, Report)> = seeds.map(|seed| Sim::run(make(seed))).collect();
    let worst = |f: fn(&Report) -> f64| runs.iter().map(|r| f(&r.1)).fold(0.0, f64::max);
    let mean_rms = runs.iter().map(|r| r.1.rms_error).sum::<f64>() / runs.len() as f64;
    eprintln!(
        "== {} ({} seeds): worst sync {:.0} s, RMS mean {:.1} / worst {:.1} µs, worst max {:.1} µs, \
         from 10 min {:.1} µs, worst final freq {:.4} ppm, RMS freq {:.3} ppm",
        runs[0].1.name,
        runs.len(),
        worst(|r| r.time_to_sync),
        mean_rms * 1e6,
        worst(|r| r.rms_error) * 1e6,
        worst(|r| r.max_error) * 1e6,
        worst(|r| r.max_settled) * 1e6,
        worst(|r| r.final_freq_ppm.abs()),
        worst(|r| r.rms_freq_ppm),
    );
    runs
}

#[test]
fn baseline_chrony_reference_case() {
    for (name, offset, ppm) in [
        ("baseline +0.1 s +100 ppm", 0.1, 100.0),
        ("baseline -0.1 s -100 ppm", -0.1, -100.0),
        ("baseline +0.1 s -100 ppm", 0.1, -100.0),
        ("baseline -0.1 s +100 ppm", -0.1, 100.0),
    ] {
        for (sim, r) in run_seeds(1..6, |seed| {
            let mut s = Scenario::baseline(name, seed);
            s.initial_offset = offset;
            s.freq_ppm = ppm;
            s
        }) {
            assert_bars(&r, BASELINE_BARS);
            assert_eq!(r.steps, 0, "0.1 s is slewed, not stepped");
            assert!(sim.engine.is_synchronized());
            assert_eq!(sim.engine.system_info().stratum, 2);
        }
    }
}

#[test]
fn large_initial_offset_is_stepped_once() {
    for (name, offset, seeds) in [("step +0.5 s", 0.5, 11..14), ("step -3 s", -3.0, 14..17)] {
        for (sim, r) in run_seeds(seeds, |seed| {
            let mut s = Scenario::baseline(name, seed);
            s.initial_offset = offset;
            s.duration = 2.0 * 3600.0;
            s
        }) {
            assert_eq!(sim.steps.len(), 1, "{:?}", sim.steps);
            let (t, step) = sim.steps[0];
            assert!(t < 1.0, "stepped at {t}");
            assert!(
                (step + offset).abs() < 1e-3,
                "step {step} for offset {offset}"
            );
            assert_bars(
                &r,
                Bars {
                    sync: 5.0,
                    ..BASELINE_BARS
                },
            );
        }
    }
}

#[test]
fn falseticker_is_never_selected() {
    for (sim, r) in run_seeds(21..24, |seed| {
        let mut s = Scenario::baseline("1 falseticker (+2 s) among 4", seed);
        s.servers.push(ServerSpec::honest(5).with_offset(2.0));
        s
    }) {
        assert_eq!(sim.first_selected[4], None, "falseticker selected");
        assert_eq!(sim.engine.mark(sim.ids[4]), Some(Mark::Falseticker));
        assert_bars(&r, BASELINE_BARS);
    }
}

#[test]
fn two_agreeing_falsetickers_among_three() {
    for (sim, r) in run_seeds(31..34, |seed| {
        let mut s = Scenario::baseline("2 agreeing falsetickers among 3", seed);
        s.servers.truncate(3);
        s.servers.push(ServerSpec::honest(4).with_offset(2.0));
        s.servers.push(ServerSpec::honest(5).with_offset(2.0005));
        s
    }) {
        for i in [3, 4] {
            assert_eq!(sim.first_selected[i], None, "falseticker {i} selected");
            assert_eq!(sim.engine.mark(sim.ids[i]), Some(Mark::Falseticker));
        }
        assert_bars(&r, BASELINE_BARS);
    }
}

#[test]
fn drifting_falseticker_is_rejected_once_it_drifts() {
    // Starts on time but runs 500 ppm fast: indistinguishable for the first
    // seconds, a falseticker once its error exceeds the intervals.
    for (sim, r) in run_seeds(41..44, |seed| {
        let mut s = Scenario::baseline("1 drifting falseticker (500 ppm)", seed);
        s.servers.push(ServerSpec::honest(5).with_freq_ppm(500.0));
        s
    }) {
        let last = sim.last_selected[4].unwrap_or(0.0);
        eprintln!("  drifting falseticker last selected at {last:.0} s");
        assert!(last < 30.0, "selected until {last} s");
        assert_eq!(sim.engine.mark(sim.ids[4]), Some(Mark::Falseticker));
        assert_bars(&r, BASELINE_BARS);
    }
}

#[test]
fn source_dies_mid_run() {
    for (sim, r) in run_seeds(51..54, |seed| {
        let mut s = Scenario::baseline("1 of 4 dies after 1 h", seed);
        s.servers[0] = ServerSpec::honest(1).dying_at(3600.0);
        s
    }) {
        assert_eq!(sim.engine.mark(sim.ids[0]), Some(Mark::Unreachable));
        let last = sim.last_selected[0].unwrap();
        assert!(
            last > 3600.0 && last < 3600.0 + 3.0 * 1024.0 + 60.0,
            "last selected {last}"
        );
        assert!(sim.engine.is_synchronized());
        let (rms, max, _) = sim.window(3600.0, sim.scenario.duration);
        eprintln!(
            "  after the death: RMS {:.1} µs, max {:.1} µs",
            rms * 1e6,
            max * 1e6
        );
        assert_bars(&r, BASELINE_BARS);
    }
}

#[test]
fn all_sources_die_holdover_then_unsynchronized() {
    let holdover = 1800.0;
    let death = 2.0 * 3600.0;
    for (sim, _) in run_seeds(61..64, |seed| {
        let mut s = Scenario::baseline("all die after 2 h, holdover 30 min", seed);
        s.servers = (1..=4)
            .map(|n| ServerSpec::honest(n).dying_at(death))
            .collect();
        s.engine.holdover = holdover;
        s.duration = death + 3.0 * 3600.0;
        s
    }) {
        let lost_at = sim
            .sync_changes
            .iter()
            .rev()
            .find(|c| !c.1)
            .map(|c| c.0)
            .expect("never unsynchronized");
        let last_selection = sim
            .last_selected
            .iter()
            .flatten()
            .fold(0.0f64, |a, &b| a.max(b));
        eprintln!(
            "  sources dead at {death:.0} s, last selection at {last_selection:.0} s, \
             unsynchronized at {lost_at:.0} s"
        );
        assert!(
            last_selection >= death,
            "selection stopped before the sources died"
        );
        // Not before the holdover bound, and at it (the engine wakes for it).
        assert!(
            lost_at >= last_selection + holdover * 0.999,
            "unsynchronized early"
        );
        assert!(
            lost_at <= last_selection + holdover + 2.0,
            "unsynchronized late: {lost_at}"
        );
        assert!(sim.synchronized_at(lost_at - 1.0));
        assert!(!sim.synchronized_at(lost_at + 1.0));
        let info = sim.engine.system_info();
        assert!(!info.is_synchronized());
        assert_eq!((info.leap, info.stratum), (LeapIndicator::Unknown, 0));
        // Holdover quality: the clock kept its frequency while the sources were gone.
        let (_, max_holdover, _) = sim.window(death, lost_at);
        eprintln!("  max error during holdover {:.1} µs", max_holdover * 1e6);
        assert!(max_holdover < 1e-3);
    }
}

#[test]
fn rate_kiss_backs_the_poll_off() {
    // From 1 h on, two servers rate-limit: one wants 1500 s between requests
    // (more than the default maxpoll) and says nothing more, the other wants
    // 4000 s and says poll 12. Both are configured with `maxpoll 12`, so
    // backing off that far is allowed.
    let maxpoll_12 = |mut spec: ServerSpec| {
        spec.options.maxpoll = 12;
        spec
    };
    for (sim, r) in run_seeds(71..74, |seed| {
        let mut s = Scenario::baseline("RATE kisses from 2 of 4 at 1 h", seed);
        s.servers[1] = maxpoll_12(ServerSpec::honest(2)).kissing(
            3600.0,
            Kiss::Rate {
                min_interval: 1500.0,
                poll: 0,
            },
        );
        s.servers[2] = maxpoll_12(ServerSpec::honest(3)).kissing(
            3600.0,
            Kiss::Rate {
                min_interval: 4000.0,
                poll: 12,
            },
        );
        s.duration = 8.0 * 3600.0;
        s
    }) {
        let reports = sim.engine.sources(sim.mono);
        for (i, min_interval, server_poll) in [(1, 1500.0, 0i8), (2, 4000.0, 12)] {
            let times = &sim.requests[i];
            // The first request after the limiter started was kissed.
            let k = times.iter().position(|&t| t >= 3600.0).unwrap();
            let kissed = times[k] - times[k - 1];
            let next = times[k + 1] - times[k];
            let settled = times[times.len() - 3..]
                .windows(2)
                .map(|w| w[1] - w[0])
                .fold(f64::INFINITY, f64::min);
            eprintln!(
                "  source {i}: kissed after {kissed:.0} s, next request {next:.0} s later, \
                 {settled:.0} s apart at the end; poll {}, {} kisses, reach {:#010b}",
                reports[i].poll, reports[i].counters.kisses, reports[i].reach
            );
            assert!(kissed < min_interval);
            assert!(reports[i].counters.kisses >= 1);
            assert!(next >= 2.0 * kissed * 0.999, "poll not doubled");
            assert!(
                next >= 2f64.powi(server_poll as i32) * 0.999,
                "server poll not honoured"
            );
            assert!(settled >= min_interval, "still too fast for the server");
            // Backed off far enough, the source answers again and stays in use.
            assert!(reports[i].reach & 1 == 1, "source {i} no longer answers");
            let mark = reports[i].mark;
            assert!(
                mark.is_selected() || mark == Mark::Candidate,
                "source {i}: {mark}"
            );
        }
        assert_bars(&r, BASELINE_BARS);
    }
}

#[test]
fn a_rate_kiss_never_stretches_the_poll_beyond_maxpoll() {
    // A hostile pool member kisses every request from 1 h on and asks for
    // poll 17 (36 h). With the default maxpoll (10) its requests stay at most
    // 1024 s apart, and the other three keep the clock in sync.
    for (sim, r) in run_seeds(81..83, |seed| {
        let mut s = Scenario::baseline("RATE poll 17 from 1 of 4 at 1 h", seed);
        s.servers[1] = ServerSpec::honest(2).kissing(
            3600.0,
            Kiss::Rate {
                min_interval: f64::INFINITY,
                poll: 17,
            },
        );
        s.duration = 6.0 * 3600.0;
        s
    }) {
        let times = &sim.requests[1];
        let after: Vec<f64> = times.iter().copied().filter(|&t| t >= 3600.0).collect();
        assert!(
            after.len() >= 10,
            "{} requests after the kisses",
            after.len()
        );
        let longest = after.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
        eprintln!("  longest interval after the kisses: {longest:.0} s");
        assert!(longest <= 1024.0 * 1.01, "poll beyond maxpoll: {longest} s");
        assert!(sim.engine.is_synchronized());
        assert_bars(&r, BASELINE_BARS);
    }
}

#[test]
fn deny_kiss_stops_polling() {
    for (sim, r) in run_seeds(81..84, |seed| {
        let mut s = Scenario::baseline("DENY kiss from 1 of 4 at 30 min", seed);
        s.servers[3] = ServerSpec::honest(4).kissing(1800.0, Kiss::Deny);
        s
    }) {
        let after = sim.requests[3].iter().filter(|&&t| t > 1800.0).count();
        eprintln!("  requests after the DENY: {after}");
        assert_eq!(after, 1, "the kissed request only");
        assert_eq!(
            sim.engine.mark(sim.ids[3]),
            Some(Mark::Unusable(Unusable::Denied))
        );
        assert_bars(&r, BASELINE_BARS);
    }
}

#[test]
fn frequency_wander() {
    // Ten times chrony's default wander: the frequency drifts ~3 ppm a day.
    for (_, r) in run_seeds(91..94, |seed| {
        let mut s = Scenario::baseline("wander 1e-8/√s (12 h)", seed);
        s.wander = 1e-8;
        s.duration = 12.0 * 3600.0;
        s
    }) {
        assert_bars(
            &r,
            Bars {
                max_settled: 600e-6,
                freq_ppm: 0.5,
                ..BASELINE_BARS
            },
        );
    }
}

#[test]
fn asymmetric_paths_bias_is_bounded() {
    // Every path 400 µs slower outbound: NTP cannot see it; the error must be
    // half the asymmetry, and never more.
    let asym = 400e-6;
    for (sim, r) in run_seeds(101..104, |seed| {
        let mut s = Scenario::baseline("asymmetry 400 µs on all paths", seed);
        for srv in &mut s.servers {
            srv.path.base_up += asym;
        }
        s
    }) {
        let (_, max, mean) = sim.window(600.0, sim.scenario.duration);
        eprintln!(
            "  mean error {:.1} µs (asymmetry/2 = {:.1} µs), max {:.1} µs",
            mean * 1e6,
            asym / 2.0 * 1e6,
            max * 1e6
        );
        assert!(mean <= asym / 2.0 + 20e-6 && mean >= asym / 2.0 - 40e-6);
        assert!(max <= asym / 2.0 + 300e-6);
        assert_bars(
            &r,
            Bars {
                rms: asym / 2.0 + 80e-6,
                max_settled: asym / 2.0 + 300e-6,
                ..BASELINE_BARS
            },
        );
    }

    // Mixed asymmetries: the combined bias stays within the largest half.
    for (sim, r) in run_seeds(105..108, |seed| {
        let mut s = Scenario::baseline("mixed asymmetry +600/+200/0/-200 µs", seed);
        for (srv, a) in s.servers.iter_mut().zip([600e-6, 200e-6, 0.0, -200e-6]) {
            srv.path = Path {
                base_up: 300e-6 + a / 2.0,
                base_down: 300e-6 - a / 2.0,
                ..srv.path
            };
        }
        s
    }) {
        let (_, max, mean) = sim.window(600.0, sim.scenario.duration);
        eprintln!(
            "  mean error {:.1} µs, max {:.1} µs (largest asymmetry/2 = 300 µs)",
            mean * 1e6,
            max * 1e6
        );
        assert!(mean.abs() <= 300e-6);
        assert!(max <= 300e-6 + 300e-6);
        assert_bars(
            &r,
            Bars {
                sync: CHRONY_SYNC_S,
                rms: 150e-6,
                max_settled: 500e-6,
                ..BASELINE_BARS
            },
        );
    }
}

#[test]
fn lossy_jittery_network() {
    // Ten times the jitter, 2 ms base delay each way, 10% loss each way.
    for (_, r) in run_seeds(111..114, |seed| {
        let mut s = Scenario::baseline("1 ms jitter, 10% loss each way", seed);
        for srv in &mut s.servers {
            srv.path = Path {
                base_up: 2e-3,
                base_down: 2e-3,
                jitter: 1e-3,
                loss: 0.1,
            };
        }
        s
    }) {
        // chrony's bar is for 100 µs of jitter; here each sample's offset is
        // ten times noisier, so only the accuracy bars are asserted, and the
        // time to sync is allowed longer.
        let name = r.name;
        assert!(r.time_to_sync <= 300.0, "{name}: sync {} s", r.time_to_sync);
        assert!(r.rms_error <= CHRONY_RMS_S, "{name}: RMS {} s", r.rms_error);
        assert!(
            r.max_settled <= CHRONY_MAX_S,
            "{name}: max {} s",
            r.max_settled
        );
        assert!(
            r.final_freq_ppm.abs() <= 0.5,
            "{name}: frequency {} ppm",
            r.final_freq_ppm
        );
    }
}

#[test]
fn driftfile_start() {
    // The driftfile knows the frequency: no frequency transient at all.
    for (sim, r) in run_seeds(121..124, |seed| {
        let mut s = Scenario::baseline("driftfile start (100 ppm known)", seed);
        s.engine.initial_frequency_ppm = Some(-100.0);
        s.initial_offset = 0.01;
        s
    }) {
        assert_bars(
            &r,
            Bars {
                sync: 10.0,
                ..BASELINE_BARS
            },
        );
        let worst = sim
            .freq_errors
            .iter()
            .map(|f| f.1.abs())
            .fold(0.0, f64::max);
        eprintln!("  largest frequency error {:.3} ppm", worst * 1e6);
        assert!(worst < 2e-6);
    }
}

#[test]
fn wrong_driftfile_is_unlearnt() {
    // A driftfile 200 ppm off (another machine's, or one written before the
    // frequency was known): the first burst contradicts it, and the
    // estimators drop it instead of creeping away from it at the wander's pace.
    for (sim, r) in run_seeds(131..134, |seed| {
        let mut s = Scenario::baseline("wrong driftfile (200 ppm off)", seed);
        s.engine.initial_frequency_ppm = Some(100.0);
        s.initial_offset = 0.01;
        s
    }) {
        assert_bars(
            &r,
            Bars {
                sync: 90.0,
                rms: 100e-6,
                ..BASELINE_BARS
            },
        );
        let late = sim
            .freq_errors
            .iter()
            .filter(|f| f.0 > 600.0)
            .map(|f| f.1.abs())
            .fold(0.0, f64::max);
        eprintln!(
            "  largest frequency error after 10 min {:.3} ppm",
            late * 1e6
        );
        assert!(late < 1e-6);
    }
}

#[test]
fn delay_weighting_beats_the_rfc_filter() {
    // The same runs with the RFC 5905 clock filter choosing which samples
    // feed the estimator, instead of all samples weighted by delay.
    let ours = run_seeds(1..6, |seed| {
        Scenario::baseline("delay-weighted samples (default)", seed)
    });
    let rfc = run_seeds(1..6, |seed| {
        let mut s = Scenario::baseline("RFC 5905 clock filter samples", seed);
        s.engine.sample_filter = SampleFilter::Rfc5905;
        s
    });
    let mean = |v: &[(Sim, Report)]| v.iter().map(|r| r.1.rms_error).sum::<f64>() / v.len() as f64;
    let (o, r) = (mean(&ours), mean(&rfc));
    eprintln!(
        "  mean RMS: delay-weighted {:.1} µs, RFC filter {:.1} µs",
        o * 1e6,
        r * 1e6
    );
    assert!(o * 1.5 < r, "delay weighting {o} vs RFC filter {r}");
    for (_, r) in &rfc {
        assert_bars(
            r,
            Bars {
                sync: CHRONY_SYNC_S,
                rms: CHRONY_RMS_S,
                max_settled: CHRONY_MAX_S,
                freq_ppm: 1.0,
            },
        );
    }
}

#[test]
fn minsane_without_enough_sources_never_syncs() {
    // Four configured (minsane 3), only two ever answer.
    let two_of_four = |name, seed| {
        let mut s = Scenario::baseline(name, seed);
        s.servers[2] = ServerSpec::honest(3).dying_at(0.0);
        s.servers[3] = ServerSpec::honest(4).dying_at(0.0);
        s.duration = 3600.0;
        s
    };
    let (sim, _) = Sim::run(two_of_four("2 of 4 answer (minsane 3)", 131));
    assert!(sim.sync_changes.iter().all(|c| !c.1));
    assert_eq!(sim.engine.status(sim.mono).clock_updates, 0);
    assert!(!sim.engine.system_info().is_synchronized());
    // With minsane 1 the same two suffice.
    for (sim, r) in run_seeds(131..134, |seed| {
        let mut s = two_of_four("2 of 4 answer (minsane 1)", seed);
        s.engine = EngineConfig {
            minsane: Some(1),
            ..s.engine
        };
        s
    }) {
        assert!(sim.engine.is_synchronized());
        assert_bars(
            &r,
            Bars {
                rms: 120e-6,
                ..BASELINE_BARS
            },
        );
    }
}

#[test]
fn simulation_is_deterministic() {
    let mut s = Scenario::baseline("determinism", 7);
    s.duration = 1800.0;
    let (_, a) = Sim::run(s.clone());
    let (_, b) = Sim::run(s);
    assert_eq!(a, b);
}

/// Noisy paths (300 µs exponential jitter each way), no driftfile: the
/// first burst's frequency estimate is vague (σ of several ppm). When the
/// kernel's own frequency is right, applying that estimate would put the
/// clock off by up to 14 ppm and the served time by up to 1 ms before the
/// first regular poll (seen with these seeds before the estimate was held);
/// held, the first minute stays within the offset noise. When the kernel is
/// 20 ppm off, the estimate is significant, or the first polls make it so:
/// the price is bounded to the first poll intervals.
#[test]
fn a_vague_burst_frequency_is_not_applied() {
    let noisy = |name: &'static str, seed: u64, ppm: f64| {
        let mut s = Scenario::baseline(name, seed);
        s.initial_offset = 0.0;
        s.freq_ppm = ppm;
        for server in &mut s.servers {
            server.path.jitter *= 3.0;
        }
        s
    };
    for (sim, _) in run_seeds(1..21, |seed| {
        noisy("noisy paths, kernel frequency right", seed, 0.0)
    }) {
        let (at_40s, freq_error) = sim
            .freq_errors
            .iter()
            .copied()
            .find(|e| e.0 >= 40.0)
            .unwrap();
        assert!(
            freq_error.abs() < 3e-6,
            "frequency error {:+.1} ppm at {at_40s:.0} s",
            freq_error * 1e6
        );
        let (_, max, _) = sim.window(20.0, 80.0);
        assert!(max < 300e-6, "max {:.0} µs between 20 and 80 s", max * 1e6);
    }
    for (sim, r) in run_seeds(1..21, |seed| {
        noisy("noisy paths, kernel 20 ppm off", seed, 20.0)
    }) {
        assert!(r.time_to_sync <= CHRONY_SYNC_S, "{}", r.line());
        let (rms, max, _) = sim.window(30.0, 600.0);
        // Up to 1.4 ms and 314 µs RMS in these seeds (0.9 ms and 231 µs
        // with the burst's estimate applied): the price of holding.
        assert!(
            max < 1.6e-3 && rms < 350e-6,
            "{:.0} / {:.0} µs",
            max * 1e6,
            rms * 1e6
        );
        assert!(sim.freq_error().abs() < 0.5e-6, "{}", r.line());
    }
}
