//! Choosing one upstream among candidates: pure, so each strategy is unit-tested on numbers.

use std::time::Duration;

use super::config::Routing;

/// What routing knows of one candidate upstream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Calls running on it now.
    pub in_flight: usize,
    /// How many it is meant to carry at once (its concurrency limit, else its connections).
    pub capacity: usize,
    /// Recent time to response headers; `None` before its first answer.
    pub latency: Option<Duration>,
    pub weight: u32,
}

/// The index of the candidate to use. `random` is uniform in [0, 1); `turn` rotates among equals
/// so that ties do not always go to the first upstream listed. `candidates` is not empty.
pub fn pick(routing: Routing, candidates: &[Candidate], random: f64, turn: usize) -> usize {
    debug_assert!(!candidates.is_empty());
    let n = candidates.len();
    // Scans from a rotating start: the first best found wins, so equals take turns.
    let rotated = (0..n).map(|k| (turn + k) % n);
    match routing {
        Routing::LeastBusy => rotated
            .min_by(|&a, &b| {
                let load = |c: &Candidate| c.in_flight as f64 / c.capacity.max(1) as f64;
                load(&candidates[a]).total_cmp(&load(&candidates[b]))
            })
            .unwrap_or(0),
        Routing::Latency => {
            // One call in ten explores the others, so that an upstream that was slow once is
            // measured again; one never measured is tried first.
            if let Some(unmeasured) = rotated.clone().find(|&i| candidates[i].latency.is_none()) {
                return unmeasured;
            }
            if n > 1 && random < 0.1 {
                return weighted(candidates, random * 10.0);
            }
            rotated
                .min_by_key(|&i| candidates[i].latency.unwrap_or_default())
                .unwrap_or(0)
        }
        Routing::Weighted => weighted(candidates, random),
    }
}

/// At random in proportion to weight.
fn weighted(candidates: &[Candidate], random: f64) -> usize {
    let total: u64 = candidates.iter().map(|c| c.weight.max(1) as u64).sum();
    let mut point = (random.clamp(0.0, 1.0) * total as f64) as u64;
    for (i, c) in candidates.iter().enumerate() {
        let w = c.weight.max(1) as u64;
        if point < w {
            return i;
        }
        point -= w;
    }
    candidates.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(in_flight: usize, capacity: usize, latency_ms: Option<u64>, weight: u32) -> Candidate {
        Candidate {
            in_flight,
            capacity,
            latency: latency_ms.map(Duration::from_millis),
            weight,
        }
    }

    #[test]
    fn least_busy_compares_load_relative_to_capacity() {
        // 3 of 4 is busier than 5 of 10.
        let list = [c(3, 4, None, 1), c(5, 10, None, 1)];
        assert_eq!(pick(Routing::LeastBusy, &list, 0.5, 0), 1);
        // Equals take turns.
        let equal = [c(0, 4, None, 1), c(0, 4, None, 1), c(0, 4, None, 1)];
        let picks: Vec<usize> = (0..3)
            .map(|t| pick(Routing::LeastBusy, &equal, 0.5, t))
            .collect();
        assert_eq!(picks, vec![0, 1, 2]);
    }

    #[test]
    fn latency_tries_the_unmeasured_first_then_the_fastest() {
        let list = [c(0, 1, Some(50), 1), c(0, 1, None, 1)];
        assert_eq!(pick(Routing::Latency, &list, 0.9, 0), 1);
        let list = [
            c(0, 1, Some(50), 1),
            c(0, 1, Some(10), 1),
            c(0, 1, Some(30), 1),
        ];
        assert_eq!(pick(Routing::Latency, &list, 0.9, 0), 1);
        // The exploring tenth picks by weight.
        let explored: std::collections::BTreeSet<usize> = (0..10)
            .map(|k| pick(Routing::Latency, &list, k as f64 / 100.0, 0))
            .collect();
        assert!(explored.len() > 1);
    }

    #[test]
    fn weighted_follows_the_weights() {
        let list = [c(0, 1, None, 1), c(0, 1, None, 3)];
        let mut counts = [0; 2];
        for k in 0..1000 {
            counts[pick(Routing::Weighted, &list, k as f64 / 1000.0, 0)] += 1;
        }
        assert_eq!(counts, [250, 750]);
        // The top of the range stays in bounds.
        assert_eq!(pick(Routing::Weighted, &list, 0.999_999, 0), 1);
        assert_eq!(pick(Routing::Weighted, &list, 1.0, 0), 1);
    }
}
