//! Source selection (RFC 5905 §11.2): the intersection algorithm finds the
//! largest clique of sources whose correctness intervals [θ − λ, θ + λ]
//! overlap, the rest are falsetickers; clustering prunes the survivors whose
//! offsets sit furthest from the others; the survivors are combined with
//! weights 1/λ.

use std::fmt;

/// Fewest survivors clustering keeps (RFC 5905 NMIN / ntpd `minclock`).
pub const MIN_CLUSTER: usize = 3;
/// Root distance floor (RFC 5905 MINDISP), seconds.
pub const MIN_DISPERSION: f64 = 0.01;
/// Root distance above which a source is not selectable (RFC 5905 MAXDIST).
pub const MAX_DISTANCE: f64 = 1.5;

/// Why a source cannot be a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unusable {
    /// No valid sample yet.
    NoSamples,
    /// Configured `noselect`.
    NoSelect,
    /// Stopped by a DENY or RSTR kiss.
    Denied,
    /// Root distance above [`MAX_DISTANCE`].
    Distance,
}

/// A source's standing after selection (the ntpq/chronyc tally codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mark {
    /// The system peer: its stratum, refid and root values are published.
    SystemPeer,
    /// Survived selection and clustering; combined into the system offset.
    Survivor,
    /// A truechimer, but pruned by clustering or short of `minsane`.
    Candidate,
    /// Its interval does not overlap the majority's.
    Falseticker,
    /// None of its last three polls was answered.
    Unreachable,
    Unusable(Unusable),
}

impl Mark {
    /// One character, as ntpq shows it: `*` `+` `-` `x` `?` and space.
    pub fn symbol(self) -> char {
        match self {
            Mark::SystemPeer => '*',
            Mark::Survivor => '+',
            Mark::Candidate => '-',
            Mark::Falseticker => 'x',
            Mark::Unreachable => '?',
            Mark::Unusable(_) => ' ',
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mark::SystemPeer => "system peer",
            Mark::Survivor => "survivor",
            Mark::Candidate => "candidate",
            Mark::Falseticker => "falseticker",
            Mark::Unreachable => "unreachable",
            Mark::Unusable(Unusable::NoSamples) => "no samples",
            Mark::Unusable(Unusable::NoSelect) => "noselect",
            Mark::Unusable(Unusable::Denied) => "denied",
            Mark::Unusable(Unusable::Distance) => "too far",
        }
    }

    /// Whether the source contributes to the system offset.
    pub fn is_selected(self) -> bool {
        matches!(self, Mark::SystemPeer | Mark::Survivor)
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One selectable source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// θ now, seconds.
    pub offset: f64,
    /// λ: root distance now, seconds.
    pub distance: f64,
    /// ψ: peer jitter, seconds.
    pub jitter: f64,
    pub stratum: u8,
    pub prefer: bool,
}

/// What selection made of the candidates.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// One mark per candidate, in input order.
    pub marks: Vec<Mark>,
    /// Present when enough candidates agree.
    pub result: Option<Combined>,
}

/// The combined survivors.
#[derive(Clone, Debug, PartialEq)]
pub struct Combined {
    /// Index of the system peer.
    pub peer: usize,
    /// Indices of the survivors, the system peer included.
    pub survivors: Vec<usize>,
    /// Weights of the survivors (1/λ, summing to one), same order.
    pub weights: Vec<f64>,
    /// Combined offset, seconds.
    pub offset: f64,
    /// Selection jitter ψ_s: the weighted RMS of survivor offsets about the
    /// system peer's.
    pub jitter: f64,
    /// Whether the combined offset is the `prefer` peer's alone.
    pub prefer_used: bool,
}

/// Runs intersection, clustering and combining.
///
/// `minsane`: fewest truechimers needed for a result. `previous_peer`: the
/// index of the current system peer, kept while it survives (no clock hopping).
pub fn select(candidates: &[Candidate], minsane: usize, previous_peer: Option<usize>) -> Selection {
    let n = candidates.len();
    let mut marks = vec![Mark::Falseticker; n];
    let Some((low, high)) = intersection(candidates) else {
        // No majority clique: nobody can be called a falseticker either.
        return Selection {
            marks: vec![Mark::Candidate; n],
            result: None,
        };
    };
    let mut truechimers: Vec<usize> = (0..n)
        .filter(|&i| {
            let c = &candidates[i];
            c.offset - c.distance <= high && c.offset + c.distance >= low
        })
        .collect();
    for &i in &truechimers {
        marks[i] = Mark::Candidate;
    }
    if truechimers.is_empty() || truechimers.len() < minsane.max(1) {
        return Selection {
            marks,
            result: None,
        };
    }

    // Clustering: sort by merit (stratum first, then distance) and drop the
    // one with the largest selection jitter while that jitter exceeds the
    // smallest peer jitter and more than MIN_CLUSTER remain. A prefer peer
    // is never dropped.
    let merit = |i: usize| candidates[i].stratum as f64 * MAX_DISTANCE + candidates[i].distance;
    truechimers.sort_by(|&a, &b| merit(a).total_cmp(&merit(b)));
    let mut survivors = truechimers;
    while survivors.len() > MIN_CLUSTER {
        let min_peer_jitter = survivors
            .iter()
            .map(|&i| candidates[i].jitter)
            .fold(f64::INFINITY, f64::min);
        let (worst_pos, worst_jitter) = survivors
            .iter()
            .enumerate()
            .filter(|(_, &i)| !candidates[i].prefer)
            .map(|(pos, &i)| {
                let sum: f64 = survivors
                    .iter()
                    .map(|&j| (candidates[i].offset - candidates[j].offset).powi(2))
                    .sum();
                (pos, (sum / (survivors.len() - 1) as f64).sqrt())
            })
            .fold((usize::MAX, f64::NEG_INFINITY), |best, x| {
                if x.1 > best.1 {
                    x
                } else {
                    best
                }
            });
        if worst_pos == usize::MAX || worst_jitter <= min_peer_jitter {
            break;
        }
        survivors.remove(worst_pos);
    }

    // The system peer: the prefer peer if it survived, else the current peer
    // if it survived, else the best by merit.
    let peer = survivors
        .iter()
        .copied()
        .find(|&i| candidates[i].prefer)
        .or_else(|| previous_peer.filter(|p| survivors.contains(p)))
        .unwrap_or(survivors[0]);
    let prefer_used = candidates[peer].prefer;

    let inv: Vec<f64> = survivors
        .iter()
        .map(|&i| 1.0 / candidates[i].distance.max(1e-9))
        .collect();
    let total: f64 = inv.iter().sum();
    let weights: Vec<f64> = inv.iter().map(|w| w / total).collect();
    let offset = if prefer_used {
        candidates[peer].offset
    } else {
        survivors
            .iter()
            .zip(&weights)
            .map(|(&i, w)| w * candidates[i].offset)
            .sum()
    };
    let jitter = survivors
        .iter()
        .zip(&weights)
        .map(|(&i, w)| w * (candidates[i].offset - candidates[peer].offset).powi(2))
        .sum::<f64>()
        .sqrt();
    for &i in &survivors {
        marks[i] = Mark::Survivor;
    }
    marks[peer] = Mark::SystemPeer;
    Selection {
        marks,
        result: Some(Combined {
            peer,
            survivors,
            weights,
            offset,
            jitter,
            prefer_used,
        }),
    }
}

/// The RFC 5905 §11.2.1 intersection: the smallest interval containing points
/// from the largest number of correctness intervals, allowing `f` of `m`
/// falsetickers for f < m/2, with at most `f` midpoints outside it.
fn intersection(candidates: &[Candidate]) -> Option<(f64, f64)> {
    let m = candidates.len();
    if m == 0 {
        return None;
    }
    // (value, type): -1 lower edge, 0 midpoint, +1 upper edge.
    let mut edges: Vec<(f64, i32)> = Vec::with_capacity(3 * m);
    for c in candidates {
        edges.push((c.offset - c.distance, -1));
        edges.push((c.offset, 0));
        edges.push((c.offset + c.distance, 1));
    }
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let m = m as i32;
    let mut allow = 0;
    while 2 * allow < m {
        let mut found = 0;
        let mut chime = 0;
        let mut low = f64::INFINITY;
        for &(value, kind) in &edges {
            chime -= kind;
            if chime >= m - allow {
                low = value;
                break;
            }
            if kind == 0 {
                found += 1;
            }
        }
        chime = 0;
        let mut high = f64::NEG_INFINITY;
        for &(value, kind) in edges.iter().rev() {
            chime += kind;
            if chime >= m - allow {
                high = value;
                break;
            }
            if kind == 0 {
                found += 1;
            }
        }
        if found <= allow && low <= high {
            return Some((low, high));
        }
        allow += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(offset: f64, distance: f64) -> Candidate {
        Candidate {
            offset,
            distance,
            jitter: 1e-4,
            stratum: 1,
            prefer: false,
        }
    }

    #[test]
    fn one_falseticker_among_four() {
        let cands = [
            c(0.0, 0.01),
            c(0.001, 0.01),
            c(-0.001, 0.01),
            c(2.0, 0.01),
            c(0.0005, 0.01),
        ];
        let s = select(&cands, 3, None);
        assert_eq!(s.marks[3], Mark::Falseticker);
        let r = s.result.unwrap();
        assert!(!r.survivors.contains(&3));
        assert!(r.offset.abs() < 0.001);
        assert_eq!(
            s.marks.iter().filter(|m| m.is_selected()).count(),
            r.survivors.len()
        );
    }

    #[test]
    fn two_agreeing_falsetickers_among_three() {
        let cands = [
            c(0.0, 0.01),
            c(0.002, 0.01),
            c(-0.001, 0.01),
            c(2.0, 0.01),
            c(2.001, 0.01),
        ];
        let s = select(&cands, 3, None);
        assert_eq!(s.marks[3], Mark::Falseticker);
        assert_eq!(s.marks[4], Mark::Falseticker);
        let r = s.result.unwrap();
        assert_eq!(r.survivors.len(), 3);
        assert!(r.offset.abs() < 0.002);
    }

    #[test]
    fn no_majority() {
        // Two against two: no clique of more than half.
        let cands = [c(0.0, 0.01), c(0.001, 0.01), c(1.0, 0.01), c(1.001, 0.01)];
        let s = select(&cands, 1, None);
        assert!(s.result.is_none());
        assert!(s.marks.iter().all(|&m| m == Mark::Candidate));
    }

    #[test]
    fn minsane_not_met() {
        let cands = [c(0.0, 0.01), c(0.001, 0.01), c(5.0, 0.01)];
        let s = select(&cands, 3, None);
        assert!(s.result.is_none());
        assert_eq!(
            s.marks,
            [Mark::Candidate, Mark::Candidate, Mark::Falseticker]
        );
        let s = select(&cands, 2, None);
        assert!(s.result.is_some());
    }

    #[test]
    fn weights_are_inverse_distance() {
        let cands = [c(0.0, 0.01), c(0.003, 0.02)];
        let r = select(&cands, 1, None).result.unwrap();
        assert_eq!(r.peer, 0);
        // weights 2/3 and 1/3.
        assert!((r.offset - 0.001).abs() < 1e-12, "{}", r.offset);
        assert!((r.jitter - (0.003f64.powi(2) / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn prefer_wins_and_is_used_alone() {
        let mut cands = [c(0.0, 0.01), c(0.001, 0.01), c(0.002, 0.05)];
        cands[2].prefer = true;
        let s = select(&cands, 1, None);
        let r = s.result.unwrap();
        assert_eq!(r.peer, 2);
        assert!(r.prefer_used);
        assert_eq!(r.offset, 0.002);
        assert_eq!(s.marks[2], Mark::SystemPeer);
    }

    #[test]
    fn clustering_prunes_the_outlier_down_to_three() {
        let mut cands = [
            c(0.0, 0.01),
            c(0.0001, 0.01),
            c(-0.0001, 0.01),
            c(0.008, 0.01),
            c(0.00005, 0.01),
        ];
        for x in &mut cands {
            x.jitter = 1e-5;
        }
        let s = select(&cands, 3, None);
        assert_eq!(s.marks[3], Mark::Candidate);
        let r = s.result.unwrap();
        assert_eq!(r.survivors.len(), 3);
        // Jitter below the peers' own: nothing pruned.
        for x in &mut cands {
            x.jitter = 0.01;
        }
        let r = select(&cands, 3, None).result.unwrap();
        assert_eq!(r.survivors.len(), 5);
    }

    #[test]
    fn keeps_previous_peer_while_it_survives() {
        let cands = [c(0.0, 0.01), c(0.0001, 0.011), c(-0.0001, 0.012)];
        assert_eq!(select(&cands, 1, None).result.unwrap().peer, 0);
        assert_eq!(select(&cands, 1, Some(2)).result.unwrap().peer, 2);
    }
}
