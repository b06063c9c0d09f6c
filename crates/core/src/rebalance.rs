//! The rebalance planner (DESIGN §6): which shards to move where so that every backend holds
//! its fair share of the load. A pure function of the map, the backends' weights and the
//! shards' sizes: [`plan`].
//!
//! # What is balanced
//!
//! The load is measured in the unit of a [`Strategy`]: shards ([`Strategy::Count`]), rows,
//! bytes or writes (a shard's `size`). A backend's *load* is the sum of the sizes of the
//! shards it owns, pinned ones included. Its *fair share* (`target`) is
//!
//! ```text
//! target_b = total_load * weight_b / (sum of the weights of the backends not draining)
//! ```
//!
//! and 0 for a draining backend. A backend's *excess* is `e_b = load_b - target_b`; the
//! plan's [`excess`](Plan::excess) is `Σ max(0, e_b)`, what would move to bring every backend
//! exactly to its share. A plan stops once every backend is within the tolerance below, so it
//! may move less than that.
//!
//! The [lower bound](Plan::lower_bound) is the least load that *any* plan ending with every
//! backend balanced must move: each backend above its share must give away at least
//! `load_b - target_b - tolerance_b` (a draining one: all its movable load), and each one
//! below must receive at least `target_b - tolerance_b - load_b`, each rounded up to whole
//! units (shards and sizes are integers). It is the larger of the two sums. It is given only
//! for a plan that balances every backend (otherwise it would bound plans that cannot be
//! made: shards too coarse, pinned, or past the budget), and then `moved >= lower_bound`.
//!
//! # Tolerance
//!
//! * [`Strategy::Count`]: a backend is balanced when `|load - target| <= 1` (within one shard).
//! * Rows, bytes, writes: balanced when `|load - target| <= 5 % of target`
//!   ([`RELATIVE_TOLERANCE`]).
//! * A draining backend is balanced only when it owns no movable shard.
//!
//! When every backend is balanced the plan moves nothing.
//!
//! # How
//!
//! A greedy on the excesses, in two phases; every shard moves at most once, so it ends after
//! at most one step per shard.
//!
//! 1. **Drains.** Every movable shard of a draining backend moves, always. Each goes to the
//!    most underloaded backend that is not draining, filling it without overshooting (an
//!    *exact fit*: `size <= -e_r`) while some shard fits, and staying with the same receiver
//!    while it does, so that the shards that go together form long runs. A shard that fits
//!    nowhere goes, largest first, to the most underloaded backend.
//! 2. **Balance.** Repeatedly, over the pairs (most overloaded source `d` first, most
//!    underloaded receiver `r` first) of which at least one is unbalanced, move an exact-fit
//!    shard (`size <= min(e_d, -e_r)`), and keep moving exact fits from `d` to `r` while there
//!    are. When no pair has an exact fit, move one *overshooting* shard, one that still
//!    strictly reduces `e_d² + e_r²` (`size < e_d - e_r`), the one that reduces it most.
//!    Every move of this phase must keep the total moved within [`BUDGET_FACTOR`] ×
//!    `excess` (the drains count, they come first). Shards of size 0 do not move in this
//!    phase (they change nothing), nor does a shard go back along a pair that already moved
//!    the other way.
//!
//! Among the shards that may go from `d` to `r` (for an overshoot: those of the size closest
//! to `(e_d - e_r) / 2`), the planner prefers, in order: one adjacent (shard number ± 1) to a
//! shard this plan already moves from `d` to `r`; one adjacent to a shard `r` holds (or will
//! hold); the largest; the highest-numbered. So with equal sizes the shards that go from one
//! backend to another form as few contiguous runs as possible, taken from the ends of the
//! source's runs, next to what the receiver holds: two equal backends owning `0-31` and
//! `32-63` with a third added give it `21-31` and `32-41`, one contiguous range.
//!
//! # Guarantees
//!
//! * A shard moves at most once, only when movable, always away from its owner.
//! * A draining backend never receives, and ends with no movable shard (when at least one
//!   backend is not draining, else [`PlanError::NoReceiver`]).
//! * A balanced map yields no move.
//! * `moved <= 1.2 * excess`.
//! * When the plan balances every backend, `moved >= lower_bound`.
//! * With every shard movable, every backend ends within `max(tolerance, largest shard)` of
//!   its target: with [`Strategy::Count`] within one shard; with sizes much smaller than the
//!   shares (fine-grained data) within the 5 % tolerance.
//!
//! Pinned shards (`movable: false`, e.g. in a move already) count for their owner and never
//! move; the planner balances around them as well as the movable shards allow.
//!
//! The cost is `O(shards × backends² × log shards)` in the worst case, and about
//! `O(shards × log shards)` in practice: 16384 shards on 200 backends plan in about 10 ms
//! (release build).

mod strategy;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

pub use strategy::{ParseStrategyError, Strategy};

/// Relative tolerance of the rows, bytes and writes strategies: a backend within 5 % of its
/// fair share is balanced.
pub const RELATIVE_TOLERANCE: f64 = 0.05;

/// A plan moves at most this many times the [excess](Plan::excess).
pub const BUDGET_FACTOR: f64 = 1.2;

/// A backend as the planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanBackend {
    pub name: String,
    /// Relative capacity: finite and > 0.
    pub weight: f64,
    /// Receives nothing, and gives away every movable shard it owns.
    pub draining: bool,
}

/// A shard as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanShard {
    pub shard: u32,
    /// Index into the backends.
    pub owner: usize,
    /// Load in the strategy's unit; ignored (treated as 1) for [`Strategy::Count`].
    pub size: u64,
    /// `false`: the shard is pinned (e.g. in a move already); it counts for its owner but
    /// never moves.
    pub movable: bool,
}

/// Shards to move from one backend to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedMove {
    pub from: usize,
    pub to: usize,
    /// Sorted ascending.
    pub shards: Vec<u32>,
    /// Sum of the moved shards' sizes (for [`Strategy::Count`]: the number of shards).
    pub load: u64,
}

/// One backend's load before and after the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendBalance {
    pub backend: usize,
    /// Fair share (0 when draining).
    pub target: f64,
    pub before: u64,
    pub after: u64,
}

/// The moves that balance the backends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// One per (from, to) pair that moves anything, sorted by (from, to).
    pub moves: Vec<PlannedMove>,
    /// One per backend, in input order.
    pub balance: Vec<BackendBalance>,
    /// Sum of the moves' loads.
    pub moved: u64,
    /// `Σ max(0, load - target)`: what would move to bring every backend exactly to its share
    /// (the budget is [`BUDGET_FACTOR`] times this).
    pub excess: f64,
    /// Every backend ends balanced: within the tolerance of its share (a draining one with no
    /// movable shard).
    pub balanced: bool,
    /// When the plan balances every backend: the least load any plan that does must move
    /// (see the [module](self)); `moved >= lower_bound`.
    pub lower_bound: Option<f64>,
}

impl Plan {
    /// Nothing to move: the backends are balanced (or cannot be improved).
    pub fn is_empty(&self) -> bool {
        self.moves.is_empty()
    }

    /// Number of shards moved.
    pub fn shard_count(&self) -> usize {
        self.moves.iter().map(|m| m.shards.len()).sum()
    }
}

/// Why no plan can be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("no backend to plan for")]
    NoBackends,
    #[error("backend {backend:?}: weight {weight} must be a finite number > 0")]
    BadWeight { backend: String, weight: f64 },
    #[error("shard {shard}: owner {owner} is not a backend (there are {backends})")]
    OwnerOutOfRange {
        shard: u32,
        owner: usize,
        backends: usize,
    },
    #[error("shard {shard} is listed more than once")]
    DuplicateShard { shard: u32 },
    #[error("every backend is draining: none can receive the {shards} shards")]
    NoReceiver { shards: usize },
    #[error("the total load does not fit in 64 bits")]
    LoadOverflow,
}

/// Plans the moves that bring every backend to its fair share; see the [module](self) for the
/// rules and guarantees.
pub fn plan(
    backends: &[PlanBackend],
    shards: &[PlanShard],
    strategy: Strategy,
) -> Result<Plan, PlanError> {
    plan_with_budget(backends, shards, strategy, BUDGET_FACTOR)
}

/// [`plan`] with another budget factor.
fn plan_with_budget(
    backends: &[PlanBackend],
    shards: &[PlanShard],
    strategy: Strategy,
    budget_factor: f64,
) -> Result<Plan, PlanError> {
    if backends.is_empty() {
        return Err(PlanError::NoBackends);
    }
    for b in backends {
        if !(b.weight.is_finite() && b.weight > 0.0) {
            return Err(PlanError::BadWeight {
                backend: b.name.clone(),
                weight: b.weight,
            });
        }
    }
    let mut index = HashMap::with_capacity(shards.len());
    let mut load = vec![0u64; backends.len()];
    let mut total = 0u64;
    for (i, s) in shards.iter().enumerate() {
        if s.owner >= backends.len() {
            return Err(PlanError::OwnerOutOfRange {
                shard: s.shard,
                owner: s.owner,
                backends: backends.len(),
            });
        }
        if index.insert(s.shard, i).is_some() {
            return Err(PlanError::DuplicateShard { shard: s.shard });
        }
        let size = strategy.unit_size(s.size);
        total = total.checked_add(size).ok_or(PlanError::LoadOverflow)?;
        load[s.owner] += size; // <= total, cannot overflow
    }
    if !shards.is_empty() && backends.iter().all(|b| b.draining) {
        return Err(PlanError::NoReceiver {
            shards: shards.len(),
        });
    }

    // Weights relative to the largest, so that their sum cannot overflow.
    let wmax = backends.iter().map(|b| b.weight).fold(0.0, f64::max);
    let wsum: f64 = backends
        .iter()
        .filter(|b| !b.draining)
        .map(|b| b.weight / wmax)
        .sum();
    let target: Vec<f64> = backends
        .iter()
        .map(|b| {
            if b.draining || wsum <= 0.0 {
                0.0
            } else {
                total as f64 * (b.weight / wmax) / wsum
            }
        })
        .collect();
    let excess: f64 = load
        .iter()
        .zip(&target)
        .map(|(&l, &t)| (l as f64 - t).max(0.0))
        .sum();
    let lower_bound = least_to_move(backends, shards, strategy, &load, &target);

    let mut p = Planner::new(backends, shards, strategy, index, load.clone(), target);
    p.budget = budget_factor * excess;
    p.drain();
    p.balance();
    let balanced = (0..backends.len()).all(|b| p.balanced(b));

    let moves: Vec<PlannedMove> = p
        .pairs
        .into_iter()
        .map(|((from, to), mut list)| {
            list.sort_unstable();
            let load = list
                .iter()
                .filter_map(|x| p.index.get(x))
                .map(|&i| p.sizes[i])
                .sum();
            PlannedMove {
                from,
                to,
                shards: list,
                load,
            }
        })
        .collect();
    let balance = (0..backends.len())
        .map(|b| BackendBalance {
            backend: b,
            target: p.target[b],
            before: load[b],
            after: p.load[b],
        })
        .collect();
    Ok(Plan {
        moves,
        balance,
        moved: p.moved_total,
        excess,
        balanced,
        lower_bound: balanced.then_some(lower_bound),
    })
}

/// The least load any plan that ends with every backend balanced must move: the larger of
/// what the backends above their shares must give away (a draining backend: all its movable
/// load) and what those below must receive.
fn least_to_move(
    backends: &[PlanBackend],
    shards: &[PlanShard],
    strategy: Strategy,
    load: &[u64],
    target: &[f64],
) -> f64 {
    let mut movable = vec![0u64; backends.len()];
    for s in shards.iter().filter(|s| s.movable) {
        movable[s.owner] += strategy.unit_size(s.size); // <= the total, cannot overflow
    }
    let mut give = 0.0;
    let mut take = 0.0;
    for (b, backend) in backends.iter().enumerate() {
        if backend.draining {
            give += movable[b] as f64;
        } else {
            let (surplus, deficit) = strategy.least_change(load[b], target[b]);
            give += surplus;
            take += deficit;
        }
    }
    give.max(take)
}

/// The planner's working state.
struct Planner<'a> {
    strategy: Strategy,
    shards: &'a [PlanShard],
    draining: Vec<bool>,
    /// Each shard's load in the strategy's unit, by position in `shards`.
    sizes: Vec<u64>,
    /// Shard number → position in `shards`.
    index: HashMap<u32, usize>,
    /// Who holds each shard now (its owner, or where the plan sends it).
    holder: Vec<usize>,
    moved: Vec<bool>,
    load: Vec<u64>,
    target: Vec<f64>,
    /// Each backend's shards that may still move, as (size, shard).
    candidates: Vec<BTreeSet<(u64, u32)>>,
    /// (d, r) → shards of d next to a shard moved from d to r (may hold stale entries).
    frontier: HashMap<(usize, usize), BTreeSet<(u64, u32)>>,
    /// (d, r) → shards of d next to a shard r holds (may hold stale entries).
    facing: HashMap<(usize, usize), BTreeSet<(u64, u32)>>,
    /// The plan so far: (from, to) → shards.
    pairs: BTreeMap<(usize, usize), Vec<u32>>,
    moved_total: u64,
    budget: f64,
}

/// Which list of preferred shards.
#[derive(Clone, Copy)]
enum Near {
    /// Next to a shard moved along the same pair.
    Moved,
    /// Next to a shard the receiver holds.
    Receiver,
}

impl<'a> Planner<'a> {
    fn new(
        backends: &[PlanBackend],
        shards: &'a [PlanShard],
        strategy: Strategy,
        index: HashMap<u32, usize>,
        load: Vec<u64>,
        target: Vec<f64>,
    ) -> Planner<'a> {
        let sizes: Vec<u64> = shards.iter().map(|s| strategy.unit_size(s.size)).collect();
        let mut candidates = vec![BTreeSet::new(); backends.len()];
        let mut facing: HashMap<(usize, usize), BTreeSet<(u64, u32)>> = HashMap::new();
        for (i, s) in shards.iter().enumerate() {
            if !s.movable {
                continue;
            }
            candidates[s.owner].insert((sizes[i], s.shard));
            for y in neighbours(s.shard) {
                if let Some(&j) = index.get(&y) {
                    let h = shards[j].owner;
                    if h != s.owner {
                        facing
                            .entry((s.owner, h))
                            .or_default()
                            .insert((sizes[i], s.shard));
                    }
                }
            }
        }
        Planner {
            strategy,
            shards,
            draining: backends.iter().map(|b| b.draining).collect(),
            sizes,
            index,
            holder: shards.iter().map(|s| s.owner).collect(),
            moved: vec![false; shards.len()],
            load,
            target,
            candidates,
            frontier: HashMap::new(),
            facing,
            pairs: BTreeMap::new(),
            moved_total: 0,
            budget: 0.0,
        }
    }

    fn excess(&self, b: usize) -> f64 {
        self.load[b] as f64 - self.target[b]
    }

    fn balanced(&self, b: usize) -> bool {
        if self.draining[b] {
            self.candidates[b].is_empty()
        } else {
            self.strategy.is_balanced(self.load[b], self.target[b])
        }
    }

    /// Backends that may receive, most underloaded first.
    fn receivers(&self) -> Vec<usize> {
        let mut r: Vec<usize> = (0..self.load.len())
            .filter(|&b| !self.draining[b])
            .collect();
        r.sort_by(|&a, &b| self.excess(a).total_cmp(&self.excess(b)).then(a.cmp(&b)));
        r
    }

    /// Moves shard `i` from its owner to `r`.
    fn apply(&mut self, i: usize, r: usize) {
        let d = self.shards[i].owner;
        let x = self.shards[i].shard;
        let s = self.sizes[i];
        self.moved[i] = true;
        self.holder[i] = r;
        self.candidates[d].remove(&(s, x));
        self.load[d] -= s;
        self.load[r] += s;
        self.moved_total += s;
        self.pairs.entry((d, r)).or_default().push(x);
        for y in neighbours(x) {
            let Some(&j) = self.index.get(&y) else {
                continue;
            };
            if self.moved[j] || !self.shards[j].movable {
                continue;
            }
            let o = self.shards[j].owner;
            let e = (self.sizes[j], y);
            if o == d {
                self.frontier.entry((d, r)).or_default().insert(e);
            } else if o != r {
                self.facing.entry((o, r)).or_default().insert(e);
            }
        }
    }

    /// Whether shard `x` may still move from `d` (and, for [`Near::Receiver`], still touches
    /// a shard `r` holds).
    fn still_valid(&self, x: u32, d: usize, r: usize, near: Near) -> bool {
        let Some(&i) = self.index.get(&x) else {
            return false;
        };
        if self.moved[i] || !self.shards[i].movable || self.shards[i].owner != d {
            return false;
        }
        match near {
            Near::Moved => true,
            Near::Receiver => neighbours(x)
                .filter_map(|y| self.index.get(&y))
                .any(|&j| self.holder[j] == r),
        }
    }

    /// Best shard of a preference set with a size in `lo..=hi`: closest to `want`, then
    /// highest-numbered. Drops the stale entries it meets.
    fn preferred(
        &mut self,
        near: Near,
        d: usize,
        r: usize,
        lo: u64,
        hi: u64,
        want: u64,
    ) -> Option<usize> {
        loop {
            let map = match near {
                Near::Moved => &self.frontier,
                Near::Receiver => &self.facing,
            };
            let (s, x) = closest(map.get(&(d, r))?, lo, hi, want)?;
            if self.still_valid(x, d, r, near) {
                return self.index.get(&x).copied();
            }
            let map = match near {
                Near::Moved => &mut self.frontier,
                Near::Receiver => &mut self.facing,
            };
            if let Some(set) = map.get_mut(&(d, r)) {
                set.remove(&(s, x));
            }
        }
    }

    /// The shard of `d` to send to `r` among those with a size in `lo..=hi`, by the module's
    /// order of preference (`want`: the size preferred).
    fn pick(&mut self, d: usize, r: usize, lo: u64, hi: u64, want: u64) -> Option<usize> {
        // Any candidate at all in the size range? (Cheap, and the fallback.)
        let (_, x) = closest(&self.candidates[d], lo, hi, want)?;
        if let Some(i) = self.preferred(Near::Moved, d, r, lo, hi, want) {
            return Some(i);
        }
        if let Some(i) = self.preferred(Near::Receiver, d, r, lo, hi, want) {
            return Some(i);
        }
        self.index.get(&x).copied()
    }

    /// Phase 1: every movable shard of a draining backend moves.
    fn drain(&mut self) {
        for d in 0..self.load.len() {
            if !self.draining[d] {
                continue;
            }
            let mut current: Option<usize> = None;
            while !self.candidates[d].is_empty() {
                // Stay with the current receiver while a shard fits in its deficit.
                let fits = |p: &mut Planner, r: usize| {
                    let e = p.excess(r);
                    if e > 0.0 {
                        return None;
                    }
                    let hi = (-e).floor() as u64;
                    p.pick(d, r, 0, hi, hi)
                };
                if let Some(r) = current {
                    if let Some(i) = fits(self, r) {
                        self.apply(i, r);
                        continue;
                    }
                }
                let Some(&r) = self.receivers().first() else {
                    return; // cannot happen: plan() refuses a map where all drain
                };
                current = Some(r);
                if let Some(i) = fits(self, r) {
                    self.apply(i, r);
                    continue;
                }
                // Nothing fits anywhere (r has the largest deficit): largest shard first.
                let Some(&(s, _)) = self.candidates[d].last() else {
                    break;
                };
                match self.pick(d, r, s, s, s) {
                    Some(i) => self.apply(i, r),
                    None => break,
                }
            }
        }
    }

    /// Largest size the budget still allows to move.
    fn room(&self) -> u64 {
        let room = self.budget - self.moved_total as f64;
        if room < 0.0 {
            0
        } else {
            room.floor() as u64
        }
    }

    /// Whether `d → r` may move anything in phase 2 (`started`: the pair already moves
    /// something in this round, so it may go on while both are within tolerance).
    fn pair_ok(&self, d: usize, r: usize, started: bool) -> bool {
        d != r
            && !self.pairs.contains_key(&(r, d))
            && self.excess(d) > 0.0
            && self.excess(r) < 0.0
            && (started || !(self.balanced(d) && self.balanced(r)))
    }

    /// An exact-fit shard from `d` to `r`.
    fn exact_fit(&mut self, d: usize, r: usize, started: bool) -> Option<usize> {
        if !self.pair_ok(d, r, started) {
            return None;
        }
        let fit = self.excess(d).min(-self.excess(r)).floor() as u64;
        let hi = fit.min(self.room());
        if hi < 1 {
            return None;
        }
        self.pick(d, r, 1, hi, hi)
    }

    /// An overshooting shard from `d` to `r` that strictly reduces `e_d² + e_r²`.
    fn overshoot(&mut self, d: usize, r: usize) -> Option<usize> {
        if !self.pair_ok(d, r, false) {
            return None;
        }
        let gap = self.excess(d) - self.excess(r);
        // Largest integer strictly below the gap.
        let below = (gap.ceil() - 1.0).max(0.0) as u64;
        let hi = below.min(self.room());
        if hi < 1 {
            return None;
        }
        let want = ((gap / 2.0).round() as u64).clamp(1, hi);
        let (s, _) = closest(&self.candidates[d], 1, hi, want)?;
        self.pick(d, r, s, s, s)
    }

    /// Phase 2: greedy exact fits, then overshoots, within the budget.
    fn balance(&mut self) {
        let n = self.load.len();
        loop {
            let mut sources: Vec<usize> = (0..n)
                .filter(|&b| !self.draining[b] && self.excess(b) > 0.0)
                .filter(|&b| {
                    self.candidates[b]
                        .iter()
                        .next_back()
                        .is_some_and(|c| c.0 > 0)
                })
                .collect();
            sources.sort_by(|&a, &b| self.excess(b).total_cmp(&self.excess(a)).then(a.cmp(&b)));
            let receivers: Vec<usize> = self
                .receivers()
                .into_iter()
                .filter(|&b| self.excess(b) < 0.0)
                .collect();
            if sources.is_empty() || receivers.is_empty() {
                return;
            }
            if sources.iter().chain(&receivers).all(|&b| self.balanced(b)) {
                return;
            }
            let mut progressed = false;
            'exact: for &d in &sources {
                for &r in &receivers {
                    if let Some(i) = self.exact_fit(d, r, false) {
                        self.apply(i, r);
                        // Exact fits waste nothing: go on past the tolerance.
                        while let Some(i) = self.exact_fit(d, r, true) {
                            self.apply(i, r);
                        }
                        progressed = true;
                        break 'exact;
                    }
                }
            }
            if progressed {
                continue;
            }
            'over: for &d in &sources {
                for &r in &receivers {
                    if let Some(i) = self.overshoot(d, r) {
                        self.apply(i, r);
                        progressed = true;
                        break 'over;
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }
}

/// The element of `set` (of (size, shard)) with a size in `lo..=hi` closest to `want`
/// (ties: the larger size), and the highest-numbered of that size.
fn closest(set: &BTreeSet<(u64, u32)>, lo: u64, hi: u64, want: u64) -> Option<(u64, u32)> {
    if lo > hi {
        return None;
    }
    let below = if want >= lo {
        set.range((lo, 0)..=(want.min(hi), u32::MAX)).next_back()
    } else {
        None
    };
    let above = if want < hi {
        // want < hi, so want + 1 <= hi.
        set.range(((want + 1).max(lo), 0)..=(hi, u32::MAX)).next()
    } else {
        None
    };
    let size = match (below, above) {
        (Some(&(b, _)), Some(&(a, _))) => {
            if a.abs_diff(want) <= b.abs_diff(want) {
                a
            } else {
                b
            }
        }
        (Some(&(b, _)), None) => b,
        (None, Some(&(a, _))) => a,
        (None, None) => return None,
    };
    set.range((size, 0)..=(size, u32::MAX)).next_back().copied()
}

/// The shard numbers next to `x`.
fn neighbours(x: u32) -> impl Iterator<Item = u32> {
    [x.checked_sub(1), x.checked_add(1)].into_iter().flatten()
}

#[cfg(test)]
mod tests;
