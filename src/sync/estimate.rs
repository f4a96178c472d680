//! Per-source offset and frequency estimation: a two-state Kalman filter.
//!
//! Every sample's offset is stored in the engine's *free-running frame*:
//! `y = θ + P(t)`, where `P(t)` is the total correction the discipline has
//! applied to the clock by the sample's time (frequency integrated, slews and
//! steps). In that frame a source sees the uncorrected oscillator, whatever
//! the discipline did in between: a phase `y` drifting at a frequency `b`
//! that itself does a random walk (the oscillator's wander). The filter
//! tracks `(y, b)` and their covariance, so a source yields its offset now
//! (`y + b·(now − t) − P(now)`), the frequency correction the clock needs
//! (`b`), and honest uncertainties for both.
//!
//! - **Measurement noise** comes from the delay: a sample whose round trip
//!   exceeds the smallest recently seen by `x` can be off by up to ±x/2
//!   (uniformly, if the excess split at random between the two directions),
//!   variance x²/12, on top of the clocks' precision. Low-delay samples
//!   dominate, which is what the RFC 5905 clock filter approximates by keeping
//!   only the lowest-delay one of eight.
//! - **Process noise** is the frequency random walk, spectral density `q`
//!   (s⁻¹): over Δt it adds q·Δt to the frequency variance and q·Δt³/3 to the
//!   phase variance. `q` is learnt from the innovations: the posterior mean
//!   over a grid of candidates, given the recent innovations and what
//!   measurement noise and state uncertainty explain of them (long intervals
//!   say much about it, 2 s bursts nothing).
//! - The learnt `q` sets how long the source may go between polls for a
//!   given accuracy: [`Estimator::allowed_interval`].

use std::collections::VecDeque;

/// Recent delays kept to find the minimum.
const DELAY_HISTORY: usize = 32;
/// Fewest delays from which their minimum is trusted as a reference.
const MIN_DELAYS_FOR_REFERENCE: usize = 4;
/// Forgetting factor of the wander likelihoods, per sample.
const WANDER_MEMORY: f64 = 0.97;
/// A sample's normalized squared innovation counts at most this much.
const WANDER_CLIP_NIS: f64 = 25.0;
/// The wander candidates: 10^(-22) to 10^(-13) s⁻¹ in quarter decades.
const WANDER_GRID: usize = 37;
const WANDER_GRID_LOW: f64 = -22.0;
const WANDER_GRID_STEP: f64 = 0.25;
/// Standard deviation of the prior on log10(q), decades.
const WANDER_PRIOR_DECADES: f64 = 3.0;
/// Innovations this many variances large (10σ), twice in a row, mean the
/// state is wrong, not the samples: typically a frequency prior (a driftfile)
/// far from the truth, which the wander alone would take hours to leave.
const DIVERGENCE_NIS: f64 = 100.0;
/// The frequency uncertainty the filter falls back to then: 100 ppm, as
/// without any prior.
const RESET_FREQUENCY_SD: f64 = 1e-4;

/// log10 of the k-th candidate.
fn wander_grid(k: usize) -> f64 {
    WANDER_GRID_LOW + WANDER_GRID_STEP * k as f64
}

/// How measurement variances are modelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weighting {
    /// By delay excess over the recent minimum: σ² = floor² + (excess² +
    /// the minimum's own uncertainty²)/12.
    Delay,
    /// All samples alike: σ² = floor² (for samples the RFC 5905 filter
    /// already picked; the caller passes the larger of their dispersion and
    /// the filter jitter as the floor).
    Equal,
}

/// Wander (process noise) bounds and prior.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WanderConfig {
    /// Prior spectral density of the frequency random walk, s⁻¹.
    pub initial: f64,
    pub min: f64,
    pub max: f64,
}

impl Default for WanderConfig {
    fn default() -> Self {
        // 1e-18 s⁻¹ (1 ppb/√s): an ordinary crystal in a quiet room.
        WanderConfig {
            initial: 1e-18,
            min: 1e-22,
            max: 1e-13,
        }
    }
}

/// One sample in the free-running frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Monotonic time, seconds.
    pub t: f64,
    /// Offset plus the correction applied by time `t`, seconds.
    pub y: f64,
    /// Round-trip delay, seconds.
    pub delay: f64,
    /// Noise floor of this sample (clock precisions), seconds.
    pub floor: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct State {
    t: f64,
    y: f64,
    b: f64,
    p00: f64,
    p01: f64,
    p11: f64,
}

impl State {
    /// The state propagated to `t` with wander `q` (no measurement).
    fn at(&self, t: f64, q: f64) -> State {
        let dt = (t - self.t).max(0.0);
        State {
            t: self.t + dt,
            y: self.y + self.b * dt,
            b: self.b,
            p00: self.p00 + 2.0 * self.p01 * dt + self.p11 * dt * dt + q * dt * dt * dt / 3.0,
            p01: self.p01 + self.p11 * dt + q * dt * dt / 2.0,
            p11: self.p11 + q * dt,
        }
    }
}

/// What one sample did to the filter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Innovation {
    /// Measured minus predicted offset, seconds.
    pub value: f64,
    /// Its predicted variance (prediction plus measurement), s².
    pub variance: f64,
    /// Seconds since the previous sample.
    pub interval: f64,
    /// This sample and the one before were both beyond `DIVERGENCE_NIS`:
    /// the frequency belief was dropped.
    pub reset: bool,
}

impl Innovation {
    /// Normalized innovation squared (about 1 when the model fits).
    pub fn nis(&self) -> f64 {
        self.value * self.value / self.variance
    }
}

/// The Kalman filter of one source.
#[derive(Clone, Debug)]
pub struct Estimator {
    weighting: Weighting,
    config: WanderConfig,
    state: Option<State>,
    q: f64,
    /// Log-likelihood of each wander candidate.
    wander_ll: [f64; WANDER_GRID],
    delays: VecDeque<f64>,
    samples: u64,
    /// Consecutive innovations beyond `DIVERGENCE_NIS`.
    surprises: u32,
}

impl Estimator {
    pub fn new(weighting: Weighting, config: WanderConfig) -> Self {
        Estimator {
            weighting,
            config,
            state: None,
            q: config.initial,
            wander_ll: [0.0; WANDER_GRID],
            delays: VecDeque::with_capacity(DELAY_HISTORY),
            samples: 0,
            surprises: 0,
        }
    }

    /// Samples taken in.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    pub fn is_empty(&self) -> bool {
        self.state.is_none()
    }

    /// Time of the last sample.
    pub fn last_t(&self) -> Option<f64> {
        self.state.map(|s| s.t)
    }

    /// Smallest recent delay.
    pub fn min_delay(&self) -> Option<f64> {
        self.delays.iter().copied().reduce(f64::min)
    }

    /// The reference delay (the smallest recent one, or `delay` if smaller)
    /// and how uncertain it is as an estimate of the path's true minimum.
    /// The smallest of n delays still carries queueing: about the spread of
    /// the lower delays times √(2/n) (the minimum of n sums of two
    /// exponential delays), and at least the gap to the third smallest. The
    /// lower quartile measures the spread, so rare huge delays do not. With
    /// fewer than four delays nothing is known about the path, so the whole
    /// delay is uncertain (the RFC 5905 bound: the error is within ±delay/2).
    fn delay_reference(&self, delay: f64) -> (f64, f64) {
        let n = self.delays.len();
        let mut sorted: Vec<f64> = self.delays.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let min = sorted.first().map_or(delay, |&d| d.min(delay));
        if n < MIN_DELAYS_FOR_REFERENCE {
            return (min, min);
        }
        let quartile = sorted[n / 4];
        let spread = (quartile - min) * (2.0 / n as f64).sqrt();
        (min, spread.max(sorted[2] - min))
    }

    /// The learnt frequency random walk, s⁻¹.
    pub fn wander(&self) -> f64 {
        self.q
    }

    /// The measurement variance of a sample.
    pub fn measurement_variance(&self, p: &Point) -> f64 {
        let floor = p.floor.max(1e-9);
        match self.weighting {
            Weighting::Delay => {
                let (min, spread) = self.delay_reference(p.delay);
                let excess = p.delay - min;
                floor * floor + (excess * excess + spread * spread) / 12.0
            }
            Weighting::Equal => floor * floor,
        }
    }

    /// Offset (free frame) at `t` and its standard deviation.
    pub fn predict(&self, t: f64) -> Option<(f64, f64)> {
        let s = self.state?.at(t, self.q);
        Some((s.y, s.p00.max(0.0).sqrt()))
    }

    /// Frequency (free frame, dimensionless) at `t` and its variance.
    pub fn frequency(&self, t: f64) -> Option<(f64, f64)> {
        let s = self.state?.at(t, self.q);
        Some((s.b, s.p11.max(0.0)))
    }

    /// The longest poll interval (s) over which the wander alone keeps the
    /// prediction within `target` seconds (one standard deviation).
    pub fn allowed_interval(&self, target: f64) -> f64 {
        (3.0 * target * target / self.q.max(1e-30)).cbrt()
    }

    /// Takes in a sample. The first one starts the filter with frequency
    /// `prior` (standard deviation `prior_sd`); later ones return the
    /// innovation.
    pub fn add(&mut self, p: Point, prior: f64, prior_sd: f64) -> Option<Innovation> {
        let r = self.measurement_variance(&p);
        if self.delays.len() == DELAY_HISTORY {
            self.delays.pop_front();
        }
        self.delays.push_back(p.delay);
        self.samples += 1;
        let Some(state) = self.state else {
            self.state = Some(State {
                t: p.t,
                y: p.y,
                b: prior,
                p00: r,
                p01: 0.0,
                p11: prior_sd * prior_sd,
            });
            return None;
        };
        let interval = (p.t - state.t).max(0.0);
        let mut pred = state.at(p.t, self.q);
        let nu = p.y - pred.y;
        let mut s = pred.p00 + r;
        self.learn_wander(&pred, interval, nu, r);
        self.surprises = if nu * nu / s > DIVERGENCE_NIS {
            self.surprises + 1
        } else {
            0
        };
        let reset = self.surprises >= 2;
        if reset {
            // Forget what was believed of the frequency, and of the offset as
            // far as this innovation shows it wrong; the data decide from here.
            self.surprises = 0;
            pred.p11 = pred.p11.max(RESET_FREQUENCY_SD * RESET_FREQUENCY_SD);
            pred.p01 = 0.0;
            pred.p00 = pred.p00.max(nu * nu);
            s = pred.p00 + r;
        }
        let k0 = pred.p00 / s;
        let k1 = pred.p01 / s;
        self.state = Some(State {
            t: pred.t,
            y: pred.y + k0 * nu,
            b: pred.b + k1 * nu,
            p00: (pred.p00 - k0 * pred.p00).max(0.0),
            p01: pred.p01 - k0 * pred.p01,
            p11: (pred.p11 - k1 * pred.p01).max(0.0),
        });
        Some(Innovation {
            value: nu,
            variance: s,
            interval,
            reset,
        })
    }

    /// Updates the wander estimate from one innovation. Under the model the
    /// innovation is Gaussian with variance A + q·B + R (A: the propagated
    /// state variance without wander, B = Δt³/3, R: measurement). Each
    /// candidate q on a logarithmic grid accumulates that log-likelihood with
    /// exponential forgetting; the estimate is the posterior mean of log q
    /// (with a weak prior around the configured value). A 2 s burst interval
    /// gives every candidate the same likelihood and so says nothing; long
    /// intervals with good samples decide. Each sample's term is capped, so
    /// one glitch cannot make the oscillator look wild.
    fn learn_wander(&mut self, pred: &State, dt: f64, nu: f64, r: f64) {
        let b = dt * dt * dt / 3.0;
        if b <= 0.0 {
            return;
        }
        let a = (pred.p00 - self.q * b).max(0.0);
        let nu2 = nu * nu;
        let prior_center = self.config.initial.log10();
        let mut posterior = [0.0; WANDER_GRID];
        for (k, ll) in self.wander_ll.iter_mut().enumerate() {
            let log_q = wander_grid(k);
            let s = a + 10f64.powf(log_q) * b + r;
            *ll = WANDER_MEMORY * *ll - 0.5 * (s.ln() + (nu2 / s).min(WANDER_CLIP_NIS));
            posterior[k] = *ll - 0.5 * ((log_q - prior_center) / WANDER_PRIOR_DECADES).powi(2);
        }
        // The posterior mean of log10 q.
        let top = posterior.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (mut sum_w, mut sum_wx) = (0.0, 0.0);
        for (k, p) in posterior.iter().enumerate() {
            let w = (p - top).exp();
            sum_w += w;
            sum_wx += w * wander_grid(k);
        }
        let q = 10f64.powf(sum_wx / sum_w);
        self.q = q.clamp(self.config.min, self.config.max);
    }

    pub fn clear(&mut self) {
        self.state = None;
        self.delays.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: f64, y: f64, delay: f64) -> Point {
        Point {
            t,
            y,
            delay,
            floor: 1e-6,
        }
    }

    fn lcg(state: &mut u64) -> f64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    #[test]
    fn tracks_a_line() {
        let mut e = Estimator::new(Weighting::Delay, WanderConfig::default());
        let mut rng = 1u64;
        for i in 0..40 {
            let t = i as f64 * 64.0;
            e.add(
                point(t, 0.01 + 50e-6 * t + 2e-6 * lcg(&mut rng), 0.001),
                0.0,
                1e-4,
            );
        }
        let (b, var) = e.frequency(2560.0).unwrap();
        assert!((b - 50e-6).abs() < 0.01e-6, "{b}");
        assert!(var.sqrt() < 0.05e-6, "{}", var.sqrt());
        let (y, sd) = e.predict(2600.0).unwrap();
        assert!((y - (0.01 + 50e-6 * 2600.0)).abs() < 3e-6, "{y}");
        assert!(sd < 3e-6, "{sd}");
    }

    #[test]
    fn first_sample_uses_the_prior_frequency() {
        let mut e = Estimator::new(Weighting::Delay, WanderConfig::default());
        assert!(e.add(point(10.0, 0.5, 0.001), 1e-4, 1e-5).is_none());
        let (y, sd) = e.predict(20.0).unwrap();
        assert!((y - 0.501).abs() < 1e-12);
        // 10 ppm over 10 s, and the first sample's own uncertainty (its delay
        // is the only one known: up to ±0.5 ms).
        let expected = (1e-8f64 + 1e-6 / 12.0 + 1e-12).sqrt();
        assert!((sd - expected).abs() < 1e-9, "{sd} {expected}");
    }

    #[test]
    fn a_contradicted_frequency_prior_is_dropped() {
        // Prior 0 ± 1 ppm (a driftfile), truth 200 ppm: eight burst samples
        // 2 s apart show it plainly.
        let mut e = Estimator::new(Weighting::Delay, WanderConfig::default());
        let mut rng = 3u64;
        let mut resets = 0;
        for i in 0..8 {
            let t = i as f64 * 2.0;
            let innovation = e.add(
                point(t, 200e-6 * t + 20e-6 * lcg(&mut rng), 0.0002),
                0.0,
                1e-6,
            );
            resets += innovation.is_some_and(|i| i.reset) as u32;
        }
        assert!(resets >= 1, "the reset is reported");
        let (b, var) = e.frequency(14.0).unwrap();
        assert!((b - 200e-6).abs() < 10e-6, "{} ppm", b * 1e6);
        assert!(
            var.sqrt() > (b - 200e-6).abs() / 3.0,
            "overconfident: {}",
            var.sqrt()
        );
        // A right prior is kept: samples on a 0 ppm line, as noisy as their
        // delays say.
        let mut right = Estimator::new(Weighting::Delay, WanderConfig::default());
        for i in 0..8 {
            let t = i as f64 * 2.0;
            let innovation = right.add(point(t, 2e-6 * lcg(&mut rng), 0.0002), 0.0, 1e-6);
            assert!(!innovation.is_some_and(|i| i.reset));
        }
        let (b, var) = right.frequency(14.0).unwrap();
        assert!(b.abs() < 1e-6 && var.sqrt() <= 1e-6, "{b} {var}");
    }

    #[test]
    fn high_delay_samples_weigh_little() {
        let mut e = Estimator::new(Weighting::Delay, WanderConfig::default());
        // Low-delay samples on y = 0; high-delay ones 1 ms off.
        for i in 0..40 {
            let t = i as f64 * 16.0;
            if i % 2 == 0 {
                e.add(point(t, 0.0, 0.0001), 0.0, 1e-4);
            } else {
                e.add(point(t, 0.001, 0.0101), 0.0, 1e-4);
            }
        }
        let (y, _) = e.predict(640.0).unwrap();
        assert!(y.abs() < 5e-6, "{y}");
        let mut equal = Estimator::new(Weighting::Equal, WanderConfig::default());
        for i in 0..40 {
            let t = i as f64 * 16.0;
            let y = if i % 2 == 0 { 0.0 } else { 0.001 };
            equal.add(point(t, y, 0.0001), 0.0, 1e-4);
        }
        let (y, _) = equal.predict(640.0).unwrap();
        assert!(y > 1e-4, "{y}");
    }

    #[test]
    fn learns_a_large_wander_and_follows_it() {
        let config = WanderConfig::default();
        let mut quiet = Estimator::new(Weighting::Delay, config);
        let mut wild = Estimator::new(Weighting::Delay, config);
        let (mut rng, mut f, mut y) = (7u64, 0.0, 0.0);
        for i in 0..400 {
            let dt: f64 = 256.0;
            // Frequency random walk of 1e-7/√s: q = 1e-14.
            f += 1e-7 * dt.sqrt() * lcg(&mut rng) * 12f64.sqrt();
            y += f * dt;
            let t = i as f64 * dt;
            wild.add(point(t, y + 1e-6 * lcg(&mut rng), 0.001), 0.0, 1e-4);
            quiet.add(point(t, 1e-6 * lcg(&mut rng), 0.001), 0.0, 1e-4);
        }
        assert!(wild.wander() > 1e-15, "wild {}", wild.wander());
        assert!(quiet.wander() < 1e-18, "quiet {}", quiet.wander());
        assert!(wild.allowed_interval(20e-6) < 256.0);
        assert!(quiet.allowed_interval(20e-6) > 1024.0);
        // Following it: the last estimate is close to the truth.
        let (est, _) = wild.predict(399.0 * 256.0).unwrap();
        assert!((est - y).abs() < 50e-6, "{est} vs {y}");
    }
}
