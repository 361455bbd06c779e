//! Ordering the deployments of a request by a strategy, from live measurements.

use std::sync::Arc;

use rand::Rng;
use rand::seq::SliceRandom;

use super::{Deployment, ModelEntry};
use crate::config::StrategyName;

/// How often the measured strategies try a random order, so a deployment measured slow once is
/// measured again later.
const EXPLORE: f64 = 0.05;

/// What the cost strategy needs to know about the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Estimate {
    pub prompt_tokens: u64,
    pub output_tokens: u64,
}

/// Orders `deps` in place, best first. `entry` holds the weighted round robin state when all of `deps`
/// belong to one model.
pub fn order(
    strategy: StrategyName,
    deps: &mut [Arc<Deployment>],
    entry: Option<&ModelEntry>,
    est: Estimate,
) {
    if deps.len() < 2 {
        return;
    }
    let mut rng = rand::rng();
    match strategy {
        StrategyName::Priority => {}
        StrategyName::Weighted => weighted(deps, entry, &mut rng),
        StrategyName::LeastBusy => {
            deps.shuffle(&mut rng);
            deps.sort_by_key(|d| d.health.in_flight());
        }
        StrategyName::Latency => {
            if rng.random_bool(EXPLORE) {
                deps.shuffle(&mut rng);
            } else {
                // Unmeasured first: they are measured by being tried.
                deps.sort_by(|a, b| {
                    let (a, b) = (
                        a.health.ttft_ms().unwrap_or(0.0),
                        b.health.ttft_ms().unwrap_or(0.0),
                    );
                    a.total_cmp(&b)
                });
            }
        }
        StrategyName::Throughput => {
            if rng.random_bool(EXPLORE) {
                deps.shuffle(&mut rng);
            } else {
                deps.sort_by(|a, b| {
                    let (a, b) = (
                        a.health.tps().unwrap_or(f64::INFINITY),
                        b.health.tps().unwrap_or(f64::INFINITY),
                    );
                    b.total_cmp(&a)
                });
            }
        }
        StrategyName::Cost => deps.sort_by(|a, b| expected_cost(a, est).total_cmp(&expected_cost(b, est))),
        StrategyName::Balanced => balanced(deps, est),
    }
}

/// A deployment of unknown price sorts after every priced one.
fn expected_cost(d: &Deployment, est: Estimate) -> f64 {
    d.price
        .map_or(f64::MAX, |p| p.expected(est.prompt_tokens, est.output_tokens))
}

/// Smooth weighted round robin (as nginx does it): the pick is deterministic and spreads picks evenly,
/// so a 3:1 split is exact over every 4 requests. The rest follow by weight.
fn weighted(deps: &mut [Arc<Deployment>], entry: Option<&ModelEntry>, rng: &mut impl Rng) {
    let picked = match entry {
        Some(e) => {
            let mut cur = e.wrr.lock();
            if cur.len() != e.deployments.len() {
                cur.resize(e.deployments.len(), 0);
            }
            // Only the deployments offered now take part.
            let mut total = 0i64;
            let mut best: Option<usize> = None;
            for (i, d) in e.deployments.iter().enumerate() {
                if !deps.iter().any(|x| Arc::ptr_eq(x, d)) {
                    continue;
                }
                let w = i64::from(d.weight);
                cur[i] += w;
                total += w;
                if best.is_none_or(|b| cur[i] > cur[b]) {
                    best = Some(i);
                }
            }
            best.map(|b| {
                cur[b] -= total;
                e.deployments[b].clone()
            })
        }
        None => {
            let total: u64 = deps.iter().map(|d| u64::from(d.weight)).sum();
            let mut x = rng.random_range(0..total.max(1));
            deps.iter()
                .find(|d| {
                    let w = u64::from(d.weight);
                    if x < w {
                        true
                    } else {
                        x -= w;
                        false
                    }
                })
                .cloned()
        }
    };
    deps.sort_by_key(|d| std::cmp::Reverse(d.weight));
    if let Some(p) = picked
        && let Some(pos) = deps.iter().position(|d| Arc::ptr_eq(d, &p))
    {
        deps[..=pos].rotate_right(1);
    }
}

/// The sum of each deployment's rank by latency, cost and load; ties keep config order.
fn balanced(deps: &mut [Arc<Deployment>], est: Estimate) {
    let n = deps.len();
    let rank = |key: &dyn Fn(&Deployment) -> f64| -> Vec<usize> {
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by(|&a, &b| key(&deps[a]).total_cmp(&key(&deps[b])));
        let mut r = vec![0; n];
        for (pos, i) in idx.into_iter().enumerate() {
            r[i] = pos;
        }
        r
    };
    let lat = rank(&|d| d.health.ttft_ms().unwrap_or(0.0));
    let cost = rank(&|d| expected_cost(d, est));
    let load = rank(&|d| f64::from(d.health.in_flight()));
    let mut scored: Vec<(usize, Arc<Deployment>)> = deps
        .iter()
        .enumerate()
        .map(|(i, d)| (lat[i] + cost[i] + load[i], d.clone()))
        .collect();
    scored.sort_by_key(|(s, _)| *s);
    for (slot, (_, d)) in deps.iter_mut().zip(scored) {
        *slot = d;
    }
}
