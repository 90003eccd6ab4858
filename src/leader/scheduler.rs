//! Pure assignment planning: given the workers that may take clients and where every client is
//! now, decide which clients go where with as few moves as possible (invariant C8).
//!
//! No I/O, no clock, deterministic: the same input always gives the same plan, and planning
//! again on the result of a plan moves nothing.

use std::collections::{BTreeMap, BTreeSet};

/// A worker the scheduler may consider.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Candidate {
    pub(crate) id: String,
    /// `Eligible` workers take new clients; `Pinned` ones keep what they have but get nothing
    /// new and lose nothing (a suspect worker whose lease may still be valid, or a client in
    /// handoff).
    pub(crate) role: CandidateRole,
    /// Most clients this worker accepts.
    pub(crate) capacity: u32,
    /// Load index reported by the worker, used only to break ties.
    pub(crate) load: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CandidateRole {
    Eligible,
    Pinned,
}

/// Where one client is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) client: String,
    /// Current worker, if any. A worker that is not among the candidates (dead, draining,
    /// refused, unknown) means the client must be placed again.
    pub(crate) worker: Option<String>,
    /// A client in handoff stays where it is until its old owner released it.
    pub(crate) frozen: bool,
    /// A worker not to place this client on when another one has room (it fell behind there).
    pub(crate) avoid: Option<String>,
}

/// One decision of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) client: String,
    pub(crate) from: Option<String>,
    /// `None`: no worker can take the client; it becomes unassigned.
    pub(crate) to: Option<String>,
    pub(crate) reason: MoveReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MoveReason {
    /// The client had no usable worker (new, or its worker is gone, draining or refused).
    Place,
    /// The client moves from a healthy worker to relieve imbalance.
    Rebalance,
}

/// Plans placements and at most `max_rebalance_moves` rebalancing moves.
///
/// Placing is never capped: a client without a usable worker is placed in the same call (C4).
/// Rebalancing happens only while the most and least loaded eligible workers differ by more
/// than one client (hysteresis), one client at a time from the fullest to the emptiest, which
/// is the least number of moves that reaches balance.
pub(crate) fn plan(
    candidates: &[Candidate],
    placements: &[Placement],
    max_rebalance_moves: usize,
) -> Vec<Decision> {
    let mut ledger = Ledger::new(candidates);
    let homeless = ledger.count_current(placements);
    let mut decisions = ledger.place(homeless);
    ledger.rebalance(placements, max_rebalance_moves, &mut decisions);
    debug_assert!(
        decisions.iter().all(|d| d.to.as_deref().is_none_or(|to| {
            candidates
                .iter()
                .any(|c| c.id == to && c.role == CandidateRole::Eligible)
        })),
        "a client planned onto a worker that may not take clients"
    );
    debug_assert!(
        decisions
            .iter()
            .filter(|d| d.reason == MoveReason::Rebalance)
            .count()
            <= max_rebalance_moves,
        "more rebalancing moves than allowed"
    );
    decisions
}

/// Where one new client goes, exactly as [`plan`] would place it, from how many clients each
/// eligible worker holds now (`held`, by worker id) and how many are in handoff
/// (`in_transit`): adding one client to a large fleet costs a count, not a plan of every
/// client. The caller falls back to [`plan`] when other clients wait for a worker too.
pub(crate) fn place_new<'a>(
    candidates: &'a [Candidate],
    held: &BTreeMap<&str, usize>,
    in_transit: usize,
) -> Option<&'a str> {
    let mut ledger = Ledger::new(candidates);
    for (id, list) in &mut ledger.held {
        list.resize(held.get(id).copied().unwrap_or(0), "");
    }
    for _ in 0..in_transit {
        if let Some(w) = least_loaded_with_room(candidates, &ledger.held)
            && let Some(list) = ledger.held.get_mut(w)
        {
            list.push("");
        }
    }
    least_loaded_with_room(candidates, &ledger.held)
}

/// Clients per eligible worker as the plan is built, in name order so choices are
/// deterministic.
struct Ledger<'a> {
    candidates: &'a [Candidate],
    held: BTreeMap<&'a str, Vec<&'a str>>,
}

impl<'a> Ledger<'a> {
    fn new(candidates: &'a [Candidate]) -> Self {
        let held = candidates
            .iter()
            .filter(|c| c.role == CandidateRole::Eligible)
            .map(|c| (c.id.as_str(), Vec::new()))
            .collect();
        Ledger { candidates, held }
    }

    /// Counts every client where it is (or will be, once its handoff completes) and returns
    /// those without a usable worker.
    fn count_current(&mut self, placements: &'a [Placement]) -> Vec<&'a Placement> {
        let roles: BTreeMap<&str, &Candidate> =
            self.candidates.iter().map(|c| (c.id.as_str(), c)).collect();
        let mut homeless = Vec::new();
        let mut in_transit = Vec::new();
        for p in placements {
            if p.frozen {
                in_transit.push(p.client.as_str());
                continue;
            }
            match p.worker.as_deref().and_then(|w| roles.get(w)) {
                Some(c) if c.role == CandidateRole::Eligible => {
                    if let Some(list) = self.held.get_mut(c.id.as_str()) {
                        list.push(p.client.as_str());
                    }
                }
                Some(_) => {} // pinned: stays, counts for nobody we may move to
                None => homeless.push(p),
            }
        }
        // A client in handoff will be placed on the emptiest worker once released: count it
        // there already, so the next plan does not see the same imbalance and move a second
        // client.
        for client in in_transit {
            if let Some(w) = least_loaded_with_room(self.candidates, &self.held)
                && let Some(list) = self.held.get_mut(w)
            {
                list.push(client);
            }
        }
        homeless
    }

    /// Places every homeless client, uncapped (C4): on the least loaded worker with room,
    /// avoiding the one it fell behind on when another has room.
    fn place(&mut self, homeless: Vec<&'a Placement>) -> Vec<Decision> {
        let mut decisions = Vec::new();
        for p in homeless {
            let to = match p.avoid.as_deref() {
                Some(avoid) => least_loaded_except(self.candidates, &self.held, avoid)
                    .or_else(|| least_loaded_with_room(self.candidates, &self.held)),
                None => least_loaded_with_room(self.candidates, &self.held),
            };
            if let Some(w) = to
                && let Some(list) = self.held.get_mut(w)
            {
                list.push(p.client.as_str());
            }
            if to.is_some() || p.worker.is_some() {
                decisions.push(Decision {
                    client: p.client.clone(),
                    from: p.worker.clone(),
                    to: to.map(str::to_owned),
                    reason: MoveReason::Place,
                });
            }
        }
        decisions
    }

    /// Moves at most `max_moves` clients, one at a time from the fullest to the emptiest
    /// worker, while they differ by more than one (C8).
    fn rebalance(
        &mut self,
        placements: &[Placement],
        max_moves: usize,
        decisions: &mut Vec<Decision>,
    ) {
        let frozen: BTreeSet<&str> = placements
            .iter()
            .filter(|p| p.frozen)
            .map(|p| p.client.as_str())
            .collect();
        for _ in 0..max_moves {
            let Some((from, to)) = most_and_least(self.candidates, &self.held) else {
                break;
            };
            let Some(list) = self.held.get_mut(from) else {
                break;
            };
            // Move the last movable client (not frozen, not just placed by this plan).
            let just_placed = |c: &str| decisions.iter().any(|d| d.client == c);
            let Some(idx) = list
                .iter()
                .rposition(|c| !frozen.contains(c) && !just_placed(c))
            else {
                break;
            };
            let client = list.remove(idx);
            if let Some(dest) = self.held.get_mut(to) {
                dest.push(client);
            }
            decisions.push(Decision {
                client: client.to_owned(),
                from: Some(from.to_owned()),
                to: Some(to.to_owned()),
                reason: MoveReason::Rebalance,
            });
        }
    }
}

fn least_loaded_with_room<'a>(
    candidates: &'a [Candidate],
    held: &BTreeMap<&'a str, Vec<&str>>,
) -> Option<&'a str> {
    least_loaded_except(candidates, held, "")
}

/// The eligible worker with the fewest clients (then the lowest load) that has room,
/// other than `except`. One map lookup per candidate: placing a fleet of 10,000 clients on
/// 1,000 workers must not cost clients x workers^2 (it did, through a linear capacity search).
fn least_loaded_except<'a>(
    candidates: &'a [Candidate],
    held: &BTreeMap<&'a str, Vec<&str>>,
    except: &str,
) -> Option<&'a str> {
    candidates
        .iter()
        .filter(|c| c.id != except)
        .filter_map(|c| {
            let n = held.get(c.id.as_str())?.len();
            (n < c.capacity as usize).then_some((c.id.as_str(), n, c.load))
        })
        .min_by(|a, b| a.1.cmp(&b.1).then(a.2.total_cmp(&b.2)).then(a.0.cmp(b.0)))
        .map(|(id, _, _)| id)
}

/// The fullest eligible worker and the emptiest one with room, when they differ by more than
/// one client.
fn most_and_least<'a>(
    candidates: &'a [Candidate],
    held: &BTreeMap<&'a str, Vec<&str>>,
) -> Option<(&'a str, &'a str)> {
    let (from, from_len) = held
        .iter()
        .map(|(id, list)| (*id, list.len()))
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))?;
    let to = least_loaded_with_room(candidates, held)?;
    let to_len = held.get(to).map_or(0, Vec::len);
    (from_len > to_len + 1).then_some((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eligible(id: &str) -> Candidate {
        Candidate {
            id: id.into(),
            role: CandidateRole::Eligible,
            capacity: 1000,
            load: 0.0,
        }
    }

    fn at(client: &str, worker: Option<&str>) -> Placement {
        Placement {
            client: client.into(),
            worker: worker.map(Into::into),
            frozen: false,
            avoid: None,
        }
    }

    fn apply(placements: &mut [Placement], plan: &[Decision]) {
        for d in plan {
            if let Some(p) = placements.iter_mut().find(|p| p.client == d.client) {
                p.worker = d.to.clone();
            }
        }
    }

    fn counts(cands: &[Candidate], placements: &[Placement]) -> Vec<usize> {
        cands
            .iter()
            .filter(|c| c.role == CandidateRole::Eligible)
            .map(|c| {
                placements
                    .iter()
                    .filter(|p| p.worker.as_deref() == Some(&c.id))
                    .count()
            })
            .collect()
    }

    #[test]
    fn new_clients_spread_evenly() {
        let cands = vec![eligible("a"), eligible("b"), eligible("c")];
        let mut ps: Vec<_> = (0..9).map(|i| at(&format!("c{i}"), None)).collect();
        let plan = plan(&cands, &ps, 10);
        assert!(plan.iter().all(|d| d.reason == MoveReason::Place));
        apply(&mut ps, &plan);
        assert_eq!(counts(&cands, &ps), vec![3, 3, 3]);
    }

    #[test]
    fn clients_of_a_missing_worker_are_placed_in_one_plan_even_with_zero_move_budget() {
        let cands = vec![eligible("a"), eligible("b")];
        let ps = vec![
            at("x", Some("dead")),
            at("y", Some("dead")),
            at("z", Some("a")),
        ];
        let plan = plan(&cands, &ps, 0);
        assert_eq!(plan.len(), 2);
        assert!(
            plan.iter()
                .all(|d| d.to.is_some() && d.from.as_deref() == Some("dead"))
        );
    }

    #[test]
    fn no_worker_means_unassigned_not_stuck_on_the_dead_one() {
        let ps = vec![at("x", Some("dead")), at("y", None)];
        let plan = plan(&[], &ps, 5);
        assert_eq!(
            plan,
            vec![Decision {
                client: "x".into(),
                from: Some("dead".into()),
                to: None,
                reason: MoveReason::Place
            }]
        );
    }

    #[test]
    fn pinned_worker_keeps_its_clients_and_gets_no_new_ones() {
        let mut cands = vec![eligible("a"), eligible("b")];
        cands[1].role = CandidateRole::Pinned;
        let ps = vec![
            at("x", Some("b")),
            at("y", Some("b")),
            at("z", Some("b")),
            at("n", None),
        ];
        let plan = plan(&cands, &ps, 10);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].to.as_deref(), Some("a"));
    }

    #[test]
    fn frozen_clients_are_neither_placed_nor_moved() {
        let cands = vec![eligible("a"), eligible("b")];
        let mut ps = vec![
            at("x", None),
            at("y", Some("a")),
            at("z", Some("a")),
            at("w", Some("a")),
        ];
        ps[0].frozen = true;
        ps[1].frozen = true;
        ps[2].frozen = true;
        ps[3].frozen = true;
        assert!(plan(&cands, &ps, 10).is_empty());
    }

    #[test]
    fn capacity_is_respected() {
        let mut cands = vec![eligible("a"), eligible("b")];
        cands[0].capacity = 1;
        cands[1].capacity = 2;
        let mut ps: Vec<_> = (0..5).map(|i| at(&format!("c{i}"), None)).collect();
        let plan = plan(&cands, &ps, 10);
        apply(&mut ps, &plan);
        assert_eq!(counts(&cands, &ps), vec![1, 2]);
        assert_eq!(ps.iter().filter(|p| p.worker.is_none()).count(), 2);
    }

    #[test]
    fn ties_go_to_the_less_loaded_worker() {
        let mut cands = vec![eligible("a"), eligible("b")];
        cands[0].load = 0.9;
        cands[1].load = 0.1;
        let plan = plan(&cands, &[at("x", None)], 10);
        assert_eq!(plan[0].to.as_deref(), Some("b"));
    }

    #[test]
    fn balanced_input_is_left_alone() {
        let cands = vec![eligible("a"), eligible("b")];
        let ps = vec![at("x", Some("a")), at("y", Some("a")), at("z", Some("b"))];
        assert!(plan(&cands, &ps, 10).is_empty());
    }

    #[derive(Debug, Clone)]
    enum Event {
        Join,
        Die(usize),
        AddClients(usize),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Join),
            (0usize..8).prop_map(Event::Die),
            (1usize..12).prop_map(Event::AddClients),
        ]
    }

    /// Imbalance that any plan must at least fix: clients above the ceiling of the mean plus
    /// clients missing below its floor.
    fn required_moves(counts: &[usize]) -> usize {
        if counts.is_empty() {
            return 0;
        }
        let total: usize = counts.iter().sum();
        let floor = total / counts.len();
        let ceil = total.div_ceil(counts.len());
        let excess: usize = counts.iter().map(|c| c.saturating_sub(ceil)).sum();
        let deficit: usize = counts.iter().map(|c| floor.saturating_sub(*c)).sum();
        excess + deficit
    }

    proptest! {
        #[test]
        fn any_history_ends_balanced_owned_and_minimal(
            events in proptest::collection::vec(event(), 1..40),
            budget in 1usize..6,
        ) {
            let mut cands: Vec<Candidate> = vec![eligible("w0")];
            let mut next_worker = 1;
            let mut ps: Vec<Placement> = Vec::new();
            for ev in events {
                let before = counts(&cands, &ps);
                let joined = matches!(ev, Event::Join);
                match ev {
                    Event::Join => {
                        cands.push(eligible(&format!("w{next_worker}")));
                        next_worker += 1;
                    }
                    Event::Die(i) => {
                        if !cands.is_empty() {
                            let i = i % cands.len();
                            cands.remove(i);
                        }
                    }
                    Event::AddClients(n) => {
                        for _ in 0..n {
                            let name = format!("c{}", ps.len());
                            ps.push(at(&name, None));
                        }
                    }
                }
                // Run plans until quiescent, as the leader's ticks would.
                let mut rebalance_moves = 0;
                for _ in 0..1000 {
                    let plan = plan(&cands, &ps, budget);
                    if plan.is_empty() { break; }
                    for d in &plan {
                        // Never to a worker that is not an eligible candidate.
                        if let Some(to) = &d.to {
                            prop_assert!(cands.iter().any(|c| &c.id == to));
                        }
                        if d.reason == MoveReason::Rebalance { rebalance_moves += 1; }
                    }
                    prop_assert!(plan.iter().filter(|d| d.reason == MoveReason::Rebalance).count() <= budget);
                    apply(&mut ps, &plan);
                }
                // Every client is owned by exactly one live worker (a placement holds one
                // worker by construction; check it is alive) whenever a worker exists.
                for p in &ps {
                    match &p.worker {
                        Some(w) => prop_assert!(cands.iter().any(|c| &c.id == w)),
                        None => prop_assert!(cands.is_empty()),
                    }
                }
                let after = counts(&cands, &ps);
                if let (Some(max), Some(min)) = (after.iter().max(), after.iter().min()) {
                    prop_assert!(max - min <= 1, "unbalanced: {after:?}");
                }
                // A join moves no more than the imbalance it creates requires.
                if joined {
                    let mut with_new = before.clone();
                    with_new.push(0);
                    prop_assert!(rebalance_moves <= required_moves(&with_new),
                        "join moved {rebalance_moves}, imbalance needs {}", required_moves(&with_new));
                }
                // Planning again moves nothing.
                prop_assert!(plan(&cands, &ps, budget).is_empty());
            }
        }
    }

    proptest! {
        /// Placing one new client from counts alone chooses what a whole plan would.
        #[test]
        fn place_new_agrees_with_a_whole_plan(
            workers in proptest::collection::vec((any::<bool>(), 1u32..6, 0u8..4), 1..6),
            clients in proptest::collection::vec((0usize..8, any::<bool>()), 0..20),
        ) {
            let cands: Vec<Candidate> = workers
                .iter()
                .enumerate()
                .map(|(i, (pinned, capacity, load))| Candidate {
                    id: format!("w{i}"),
                    role: if *pinned { CandidateRole::Pinned } else { CandidateRole::Eligible },
                    capacity: *capacity,
                    load: f64::from(*load) / 4.0,
                })
                .collect();
            let mut ps: Vec<Placement> = clients
                .iter()
                .enumerate()
                .map(|(i, (w, frozen))| Placement {
                    client: format!("c{i}"),
                    worker: Some(cands[w % cands.len()].id.clone()),
                    frozen: *frozen,
                    avoid: None,
                })
                .collect();
            let mut held = BTreeMap::new();
            for p in ps.iter().filter(|p| !p.frozen) {
                let w = p.worker.as_deref().unwrap_or_default();
                if cands.iter().any(|c| c.id == w && c.role == CandidateRole::Eligible) {
                    *held.entry(w).or_insert(0) += 1;
                }
            }
            let in_transit = ps.iter().filter(|p| p.frozen).count();
            let chosen = place_new(&cands, &held, in_transit).map(str::to_owned);
            ps.push(at("new", None));
            let whole = plan(&cands, &ps, 0);
            let planned = whole.iter().find(|d| d.client == "new").and_then(|d| d.to.clone());
            prop_assert_eq!(chosen, planned);
        }
    }
}
