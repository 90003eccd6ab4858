use super::*;
use crate::leader::reason::AssignmentReason;
use proptest::prelude::*;

const V: &str = env!("CARGO_PKG_VERSION");

fn timing() -> Timing {
    Timing::for_tests()
}

fn spec(name: &str) -> ClientSpec {
    ClientSpec::example(name)
}

fn hello<'a>(id: &'a str, held: &'a [(String, u64)]) -> WorkerHello<'a> {
    WorkerHello {
        id,
        addr: "127.0.0.1:1",
        version: V,
        capacity: 1000,
        held,
    }
}

/// Model of the worker side: applies messages per session.
#[derive(Default)]
struct Fleet {
    held: BTreeMap<SessionId, BTreeMap<String, u64>>,
}

impl Fleet {
    fn apply(&mut self, reg: &mut Registry, fx: Effects, now: Millis) {
        let mut pending = fx.messages;
        while !pending.is_empty() {
            let mut next = Vec::new();
            for (session, msg) in pending {
                match msg {
                    Outbound::Order(Order::Assign { spec, epoch }) => {
                        if let Some(h) = self.held.get_mut(&session) {
                            h.insert(spec.name, epoch);
                        }
                    }
                    Outbound::Order(Order::Revoke { client, epoch }) => {
                        let released = self.held.get_mut(&session).and_then(|h| h.remove(&client));
                        if let Some(e) = released {
                            assert!(e <= epoch);
                            next.extend(reg.released(session, &client, e, now).messages);
                        }
                    }
                    Outbound::Close => {
                        self.held.remove(&session);
                    }
                    Outbound::Forgotten(_) => {}
                }
            }
            pending = next;
        }
    }
}

#[test]
fn a_dead_workers_clients_move_in_the_tick_it_is_declared_dead() {
    let mut reg = Registry::new(timing(), V, 1);
    let mut fleet = Fleet::default();
    for (i, id) in ["a", "b"].iter().enumerate() {
        let r = reg.register_worker(hello(id, &[]), i as u64, 0).unwrap();
        fleet.held.insert(i as u64, BTreeMap::new());
        fleet.apply(&mut reg, r.effects, 0);
    }
    for i in 0..4 {
        let fx = reg.add_client(spec(&format!("c{i}")), 0).unwrap();
        fleet.apply(&mut reg, fx, 0);
    }
    let before: BTreeMap<_, _> = reg
        .owners()
        .map(|(c, o)| (c.to_owned(), o.map(|o| (o.worker.to_owned(), o.epoch))))
        .collect();
    // b's stream breaks; a keeps heartbeating.
    let fx = reg.session_closed(1);
    assert!(
        fx.events
            .contains(&Event::WorkerSuspect { worker: "b".into() })
    );
    for now in [100, 200, 300, 400] {
        assert!(reg.heartbeat(0, 0.0, now));
        let fx = reg.tick(now);
        // Still within lease + grace: b's clients must not move.
        assert!(
            fx.durable
                .iter()
                .all(|d| !matches!(d, Durable::Assignment { .. })),
            "moved early at {now}"
        );
    }
    assert!(reg.heartbeat(0, 0.0, 401));
    let fx = reg.tick(401);
    assert!(
        fx.events
            .contains(&Event::WorkerDead { worker: "b".into() })
    );
    for (client, owner) in reg.owners() {
        let owner = owner.unwrap();
        assert_eq!(owner.worker, "a");
        let (was, old_epoch) = before[client].clone().unwrap();
        if was == "b" {
            assert!(owner.epoch > old_epoch);
        } else {
            assert_eq!(owner.epoch, old_epoch);
        }
    }
}

#[test]
fn only_a_dead_worker_is_forgotten_and_every_live_worker_is_told() {
    let mut reg = Registry::new(timing(), V, 1);
    let mut fleet = Fleet::default();
    for (i, id) in ["a", "b"].iter().enumerate() {
        let r = reg.register_worker(hello(id, &[]), i as u64, 0).unwrap();
        fleet.held.insert(i as u64, BTreeMap::new());
        fleet.apply(&mut reg, r.effects, 0);
    }
    let fx = reg.add_client(spec("c"), 0).unwrap();
    fleet.apply(&mut reg, fx, 0);
    let err = reg.forget_worker("b", 10).unwrap_err();
    assert!(err.to_string().contains("alive, not dead"), "{err}");
    assert!(matches!(
        reg.forget_worker("nope", 10),
        Err(RegistryError::UnknownWorker(_))
    ));
    // b's stream breaks: suspect (its lease may still run), then dead.
    reg.session_closed(1);
    assert!(reg.heartbeat(0, 0.0, 100));
    let err = reg.forget_worker("b", 100).unwrap_err();
    assert!(err.to_string().contains("suspect, not dead"), "{err}");
    assert!(reg.heartbeat(0, 0.0, 401));
    let fx = reg.tick(401);
    fleet.apply(&mut reg, fx, 401);
    let fx = reg.forget_worker("b", 402).unwrap();
    assert!(fx.durable.contains(&Durable::ForgetWorker("b".into())));
    assert_eq!(fx.messages, vec![(0, Outbound::Forgotten("b".into()))]);
    assert!(reg.workers().all(|w| w.id != "b"));
    assert!(
        reg.owners()
            .all(|(_, o)| o.is_some_and(|o| o.worker == "a"))
    );
    // Forgotten means gone: asking again names it unknown.
    assert!(matches!(
        reg.forget_worker("b", 403),
        Err(RegistryError::UnknownWorker(_))
    ));
}

#[test]
fn incompatible_version_is_refused_with_a_reason() {
    let mut reg = Registry::new(timing(), "1.4.0", 1);
    let mut h = hello("w", &[]);
    h.version = "1.5.0";
    let err = reg.register_worker(h, 1, 0).unwrap_err();
    assert!(!err.retryable);
    assert!(err.reason.contains("1.5.0"), "{}", err.reason);
    let w = reg.workers().next().unwrap();
    assert!(w.refused.is_some());
}

#[test]
fn a_second_live_session_under_one_id_is_refused() {
    let mut reg = Registry::new(timing(), V, 1);
    reg.register_worker(hello("w", &[]), 1, 0).unwrap();
    let err = reg.register_worker(hello("w", &[]), 2, 50).unwrap_err();
    assert!(err.retryable);
    // Once the first session is gone, the id can be taken over.
    reg.session_closed(1);
    assert!(reg.register_worker(hello("w", &[]), 2, 60).is_ok());
}

#[test]
fn drain_hands_off_and_reassigns_only_after_release() {
    let mut reg = Registry::new(timing(), V, 1);
    let mut fleet = Fleet::default();
    let r = reg.register_worker(hello("a", &[]), 1, 0).unwrap();
    fleet.held.insert(1, BTreeMap::new());
    fleet.apply(&mut reg, r.effects, 0);
    let fx = reg.add_client(spec("c"), 0).unwrap();
    fleet.apply(&mut reg, fx, 0);
    let r = reg.register_worker(hello("b", &[]), 2, 0).unwrap();
    fleet.held.insert(2, BTreeMap::new());
    fleet.apply(&mut reg, r.effects, 0);
    let first_epoch = reg.client("c").unwrap().epoch;

    let fx = reg.set_draining("a", true, 10).unwrap();
    // The revoke goes out, but b gets nothing until a released.
    assert!(
        fx.messages
            .iter()
            .all(|(s, m)| !(*s == 2 && matches!(m, Outbound::Order(Order::Assign { .. }))))
    );
    fleet.apply(&mut reg, fx, 10);
    let c = reg.client("c").unwrap();
    assert_eq!(c.worker.as_deref(), Some("b"));
    assert!(c.epoch > first_epoch);
    assert_eq!(fleet.held[&2].get("c"), Some(&c.epoch));
    assert!(fleet.held[&1].is_empty());
}

#[test]
fn restart_keeps_owners_and_epochs_for_workers_that_reattach() {
    let mut reg = Registry::new(timing(), V, 42);
    reg.restore_worker("a", "x", V, false, 0);
    reg.restore_client(spec("c"), Some("a".into()), 41);
    let held = vec![("c".to_string(), 41)];
    let r = reg.register_worker(hello("a", &held), 7, 50).unwrap();
    assert_eq!(r.assignments, vec![(spec("c"), 41)]);
    assert!(
        r.effects
            .durable
            .iter()
            .all(|d| !matches!(d, Durable::Assignment { .. }))
    );
    assert_eq!(reg.next_epoch(), 42);
}

#[test]
fn restored_worker_that_never_returns_loses_its_clients_after_the_lease() {
    let mut reg = Registry::new(timing(), V, 1);
    reg.restore_worker("gone", "x", V, false, 0);
    reg.restore_client(spec("c"), Some("gone".into()), 5);
    reg.register_worker(hello("b", &[]), 1, 0).unwrap();
    assert_eq!(reg.client("c").unwrap().worker.as_deref(), Some("gone"));
    reg.heartbeat(1, 0.0, 399);
    reg.tick(399);
    assert_eq!(reg.client("c").unwrap().worker.as_deref(), Some("gone"));
    reg.heartbeat(1, 0.0, 401);
    reg.tick(401);
    let c = reg.client("c").unwrap();
    assert_eq!(c.worker.as_deref(), Some("b"));
    assert!(c.epoch > 5);
}

#[test]
fn only_a_nodes_current_session_counts() {
    let mut reg = Registry::new(timing(), V, 1);
    reg.add_client(spec("c"), 0).unwrap();
    reg.register_worker(hello("w", &[]), 1, 0).unwrap();
    // The worker dies; a new process under the same id registers on session 2.
    let dead = timing().dead_after() + 1;
    reg.tick(dead);
    reg.register_worker(hello("w", &[]), 2, dead).unwrap();
    assert!(
        !reg.heartbeat(1, 0.5, dead),
        "the old session no longer renews anything"
    );
    assert!(reg.heartbeat(2, 0.5, dead));
    reg.session_closed(1);
    let w = reg.workers().find(|w| w.id == "w").unwrap();
    assert_eq!(w.liveness, Liveness::Alive);
    // An agent replaced by a newer session: the old one closing leaves it up.
    reg.register_agent("c", V, 7, dead).unwrap();
    reg.register_agent("c", V, 8, dead).unwrap();
    assert!(!reg.heartbeat(7, 0.0, dead));
    reg.session_closed(7);
    assert_eq!(reg.client("c").unwrap().agent.as_str(), "up");
    assert!(reg.heartbeat(8, 0.0, dead));
}

#[test]
fn an_agents_hint_goes_to_the_session_of_its_clients_worker() {
    let mut reg = Registry::new(timing(), V, 1);
    let mut fleet = Fleet::default();
    let r = reg.register_worker(hello("w", &[]), 1, 0).unwrap();
    fleet.held.insert(1, BTreeMap::new());
    fleet.apply(&mut reg, r.effects, 0);
    let fx = reg.add_client(spec("c"), 0).unwrap();
    fleet.apply(&mut reg, fx, 0);
    let epoch = reg.client("c").unwrap().epoch;
    assert_eq!(reg.wake_target(9), None, "not an agent (yet)");
    reg.register_agent("c", V, 9, 0).unwrap();
    assert_eq!(reg.wake_target(9), Some((1, "c".to_owned(), epoch)));
    assert_eq!(reg.wake_target(1), None, "a worker's session is no agent");
    reg.session_closed(9);
    assert_eq!(reg.wake_target(9), None, "an old session of the agent");
}

#[test]
fn agent_presence_follows_its_session() {
    let mut reg = Registry::new(timing(), V, 1);
    reg.add_client(spec("c"), 0).unwrap();
    assert!(reg.register_agent("nope", V, 9, 0).is_err());
    reg.register_agent("c", V, 9, 0).unwrap();
    assert_eq!(reg.client("c").unwrap().agent.as_str(), "up");
    reg.session_closed(9);
    assert_eq!(reg.client("c").unwrap().agent.as_str(), "down");
}

#[test]
fn a_complaining_client_moves_to_a_clearly_less_loaded_worker_once() {
    let mut reg = Registry::new(timing(), V, 1);
    let mut fleet = Fleet::default();
    for (s, id) in [(1, "busy"), (2, "idle")] {
        let r = reg.register_worker(hello(id, &[]), s, 0).unwrap();
        fleet.held.insert(s, BTreeMap::new());
        fleet.apply(&mut reg, r.effects, 0);
    }
    let fx = reg.add_client(spec("c"), 0).unwrap();
    fleet.apply(&mut reg, fx, 0);
    let owner = reg.client("c").unwrap().worker.clone().unwrap();
    let (owner_s, other_s) = if owner == "busy" { (1, 2) } else { (2, 1) };
    reg.register_agent("c", V, 9, 0).unwrap();
    let behind = Progress {
        backlog_files: 10,
        oldest_backlog_s: 120,
        behind: true,
        ..Progress::default()
    };
    // Loads too close: no move.
    reg.heartbeat(owner_s, 0.5, 10);
    reg.heartbeat(other_s, 0.4, 10);
    assert!(reg.heartbeat_with_progress(9, 0.0, vec![("c".into(), behind.clone())], 10));
    let fx = reg.tick(10);
    fleet.apply(&mut reg, fx, 10);
    assert_eq!(
        reg.client("c").unwrap().worker.as_deref(),
        Some(owner.as_str())
    );
    // The owner is clearly busier: the client moves by handoff, with a larger epoch.
    let epoch = reg.client("c").unwrap().epoch;
    reg.heartbeat(owner_s, 0.9, 20);
    reg.heartbeat(other_s, 0.1, 20);
    let fx = reg.tick(20);
    fleet.apply(&mut reg, fx, 20);
    let c = reg.client("c").unwrap();
    assert_ne!(c.worker.as_deref(), Some(owner.as_str()));
    assert!(c.epoch > epoch);
    // Still complaining right after: hysteresis keeps it where it is now.
    let moved_to = c.worker.clone();
    reg.heartbeat(owner_s, 0.0, 30);
    reg.heartbeat(other_s, 0.9, 30);
    reg.heartbeat_with_progress(9, 0.0, vec![("c".into(), behind)], 30);
    let fx = reg.tick(30);
    fleet.apply(&mut reg, fx, 30);
    assert_eq!(reg.client("c").unwrap().worker, moved_to);
}

#[derive(Debug, Clone)]
enum Op {
    AddWorker,
    AddClient,
    Heartbeats(u64),
    Crash(usize),
    Leave(usize),
    Drain(usize),
    Undrain(usize),
    Reconnect(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::AddWorker),
        3 => Just(Op::AddClient),
        4 => (10u64..250).prop_map(Op::Heartbeats),
        1 => (0usize..6).prop_map(Op::Crash),
        1 => (0usize..6).prop_map(Op::Leave),
        1 => (0usize..6).prop_map(Op::Drain),
        1 => (0usize..6).prop_map(Op::Undrain),
        1 => (0usize..6).prop_map(Op::Reconnect),
    ]
}

/// A registry driven by generated operations, with the worker side modelled by [`Fleet`].
struct Sim {
    reg: Registry,
    fleet: Fleet,
    now: Millis,
    next_session: SessionId,
    workers: Vec<(String, Option<SessionId>)>,
    last_epoch: BTreeMap<String, u64>,
    clients: usize,
}

impl Sim {
    fn new() -> Self {
        Sim {
            reg: Registry::new(timing(), V, 1),
            fleet: Fleet::default(),
            now: 0,
            next_session: 1,
            workers: Vec::new(),
            last_epoch: BTreeMap::new(),
            clients: 0,
        }
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        let now = self.now;
        match op {
            Op::AddWorker => {
                let id = format!("w{}", self.workers.len());
                let s = self.connect(&id)?;
                self.workers.push((id, Some(s)));
            }
            Op::AddClient => {
                let fx = self
                    .reg
                    .add_client(spec(&format!("c{}", self.clients)), now)
                    .unwrap();
                self.clients += 1;
                self.fleet.apply(&mut self.reg, fx, now);
            }
            Op::Heartbeats(dt) => self.heartbeats(dt),
            Op::Crash(i) | Op::Leave(i) | Op::Drain(i) | Op::Undrain(i) | Op::Reconnect(i)
                if self.workers.is_empty() =>
            {
                let _ = i;
            }
            Op::Crash(i) => {
                let i = i % self.workers.len();
                if let Some(s) = self.workers[i].1.take() {
                    // The process died: it holds nothing from now on, but the
                    // leader must still wait out its lease.
                    self.fleet.held.remove(&s);
                    let fx = self.reg.session_closed(s);
                    self.fleet.apply(&mut self.reg, fx, now);
                }
            }
            Op::Leave(i) => {
                let i = i % self.workers.len();
                if let Some(s) = self.workers[i].1.take() {
                    self.fleet.held.remove(&s);
                    let fx = self.reg.worker_leaving(s, now);
                    self.fleet.apply(&mut self.reg, fx, now);
                }
            }
            Op::Drain(i) | Op::Undrain(i) => {
                let drain = matches!(op, Op::Drain(_));
                let i = i % self.workers.len();
                let fx = self
                    .reg
                    .set_draining(&self.workers[i].0, drain, now)
                    .unwrap();
                self.fleet.apply(&mut self.reg, fx, now);
            }
            Op::Reconnect(i) => {
                let i = i % self.workers.len();
                if self.workers[i].1.is_none() {
                    let id = self.workers[i].0.clone();
                    self.workers[i].1 = Some(self.connect(&id)?);
                }
            }
        }
        Ok(())
    }

    /// Registers worker `id` on a new session, as a fresh process holding nothing.
    fn connect(&mut self, id: &str) -> Result<SessionId, TestCaseError> {
        let s = self.next_session;
        self.next_session += 1;
        match self.reg.register_worker(hello(id, &[]), s, self.now) {
            Ok(r) => {
                self.fleet.held.insert(
                    s,
                    r.assignments
                        .iter()
                        .map(|(c, e)| (c.name.clone(), *e))
                        .collect(),
                );
                self.fleet.apply(&mut self.reg, r.effects, self.now);
                Ok(s)
            }
            Err(e) => Err(TestCaseError::fail(format!("refused: {}", e.reason))),
        }
    }

    /// Time passes by `dt`; every connected worker heartbeats, then the leader ticks.
    fn heartbeats(&mut self, dt: u64) {
        self.now += dt;
        for (_, s) in &self.workers {
            if let Some(s) = s {
                self.reg.heartbeat(*s, 0.1, self.now);
            }
        }
        let fx = self.reg.tick(self.now);
        self.fleet.apply(&mut self.reg, fx, self.now);
    }

    /// What must hold after every operation.
    fn check_ownership(&mut self) -> Result<(), TestCaseError> {
        // C1: at most one session holds any client.
        let mut holders: BTreeMap<&str, usize> = BTreeMap::new();
        for held in self.fleet.held.values() {
            for c in held.keys() {
                *holders.entry(c.as_str()).or_default() += 1;
            }
        }
        for (c, n) in &holders {
            prop_assert!(*n <= 1, "{c} held by {n} sessions");
        }
        // Owners are known, non-dead workers; epochs never go down.
        for (client, owner) in self.reg.owners() {
            if let Some(o) = owner {
                let w = self.reg.workers().find(|w| w.id == o.worker);
                prop_assert!(
                    w.is_some_and(|w| w.liveness != Liveness::Dead),
                    "{client} on dead {}",
                    o.worker
                );
                let prev = self
                    .last_epoch
                    .insert(client.to_owned(), o.epoch)
                    .unwrap_or(0);
                prop_assert!(o.epoch >= prev);
            }
        }
        Ok(())
    }

    /// Once quiet: every client is on an alive worker that agrees, balanced within one.
    fn check_settled(&self) -> Result<(), TestCaseError> {
        let reg = &self.reg;
        let eligible: Vec<&Worker> = reg
            .workers()
            .filter(|w| w.liveness == Liveness::Alive && !w.draining)
            .collect();
        let mut counts: Vec<usize> = eligible
            .iter()
            .map(|w| {
                reg.owners()
                    .filter(|(_, o)| o.is_some_and(|o| o.worker == w.id))
                    .count()
            })
            .collect();
        if eligible.is_empty() {
            return Ok(());
        }
        for (client, owner) in reg.owners() {
            let o = owner.ok_or_else(|| TestCaseError::fail(format!("{client} unassigned")))?;
            prop_assert!(
                eligible.iter().any(|w| w.id == o.worker),
                "{client} on {}",
                o.worker
            );
            // The worker side agrees.
            let session = reg
                .workers()
                .find(|w| w.id == o.worker)
                .and_then(|w| w.session)
                .unwrap();
            prop_assert_eq!(
                self.fleet.held.get(&session).and_then(|h| h.get(client)),
                Some(&o.epoch)
            );
        }
        counts.sort_unstable();
        prop_assert!(
            counts[counts.len() - 1] - counts[0] <= 1,
            "unbalanced {counts:?}"
        );
        Ok(())
    }
}

proptest! {
    /// Never two owners, never an assignment to a non-alive worker, epochs only grow,
    /// and (once quiet) every client is on an alive worker, balanced within one.
    #[test]
    fn ownership_invariants_hold_under_any_history(ops in proptest::collection::vec(op(), 1..60)) {
        let mut sim = Sim::new();
        for op in ops {
            sim.apply(op)?;
            sim.check_ownership()?;
        }
        // Let everything settle: live workers heartbeat for a long while.
        for _ in 0..40 {
            sim.heartbeats(100);
        }
        sim.check_settled()?;
    }
}

fn moves(events: &[Event]) -> Vec<(Option<&str>, Option<&str>, AssignmentReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Moved(m) => Some((m.from.as_deref(), m.to.as_deref(), m.reason)),
            _ => None,
        })
        .collect()
}

/// Every change says why, in the codes the audit log, metrics and `explain` use.
#[test]
fn each_move_carries_its_reason() {
    use AssignmentReason::{Drain, Failover, New};
    let mut reg = Registry::new(timing(), V, 1);
    reg.register_worker(hello("a", &[]), 1, 0).unwrap();
    let fx = reg.add_client(spec("c"), 0).unwrap();
    assert_eq!(moves(&fx.events), vec![(None, Some("a"), New)]);
    reg.register_worker(hello("b", &[]), 2, 0).unwrap();

    let fx = reg.set_draining("a", true, 10).unwrap();
    assert_eq!(
        fx.events,
        vec![Event::ReleaseRequested {
            client: "c".into(),
            worker: "a".into(),
            reason: Drain,
        }]
    );
    let epoch = reg.client("c").unwrap().epoch;
    let fx = reg.released(1, "c", epoch, 20);
    assert_eq!(moves(&fx.events), vec![(Some("a"), Some("b"), Drain)]);

    reg.set_draining("a", false, 30).unwrap();
    reg.session_closed(2);
    let dead = timing().dead_after() + 1;
    assert!(reg.heartbeat(1, 0.0, dead));
    let fx = reg.tick(dead);
    assert_eq!(moves(&fx.events), vec![(Some("b"), Some("a"), Failover)]);
}

/// A registry as a restarted leader builds it: workers suspect, clients on their old owners.
fn restarted(clients: &[(&str, &str, u64)], next_epoch: u64) -> Registry {
    let mut reg = Registry::new(timing(), V, next_epoch);
    let mut workers: Vec<&str> = clients.iter().map(|c| c.1).collect();
    workers.dedup();
    for w in workers {
        reg.restore_worker(w, "127.0.0.1:1", V, false, 0);
    }
    for (c, w, e) in clients {
        reg.restore_client(spec(c), Some((*w).to_owned()), *e);
    }
    reg
}

#[test]
fn a_worker_reattaching_after_a_restart_keeps_its_clients_and_epochs() {
    let mut reg = restarted(&[("c1", "a", 4), ("c2", "a", 6)], 7);
    let fx = reg.begin_reconcile(0, false);
    assert!(fx.durable.is_empty() && fx.events.is_empty());
    let held = [("c1".to_string(), 4)];
    let r = reg.register_worker(hello("a", &held), 1, 10).unwrap();
    let mut set = r
        .assignments
        .iter()
        .map(|(s, e)| (s.name.clone(), *e))
        .collect::<Vec<_>>();
    set.sort();
    assert_eq!(set, vec![("c1".to_string(), 4), ("c2".to_string(), 6)]);
    assert_eq!(reg.next_epoch(), 7, "a restart changes no epoch");
}

#[test]
fn after_a_restore_nothing_is_confirmed_until_the_old_leases_ran_out() {
    let mut reg = restarted(&[("c1", "a", 4), ("c2", "b", 6)], 7);
    let fx = reg.begin_reconcile(0, true);
    assert!(
        fx.events
            .iter()
            .all(|e| matches!(e, Event::Moved(m) if m.reason == AssignmentReason::Restore))
    );
    // a re-attaches holding c1 at the backup's epoch, b holds c1 under a newer one.
    let held_a = [("c1".to_string(), 4)];
    let r = reg.register_worker(hello("a", &held_a), 1, 10).unwrap();
    assert!(r.assignments.is_empty(), "{:?}", r.assignments);
    let held_b = [("c1".to_string(), 17), ("c2".to_string(), 6)];
    let r = reg.register_worker(hello("b", &held_b), 2, 20).unwrap();
    assert!(r.assignments.is_empty());
    assert!(
        reg.owners().all(|(_, o)| o.is_none()),
        "frozen during the window"
    );
    // Heartbeats keep both alive; once lease + grace since the start passed, both are placed.
    let until = timing().dead_after();
    for now in (100..=until + 100).step_by(100) {
        reg.heartbeat(1, 0.0, now);
        reg.heartbeat(2, 0.0, now);
        let _ = reg.tick(now);
    }
    let owners: Vec<_> = reg
        .owners()
        .map(|(c, o)| (c.to_owned(), o.map(|o| o.epoch)))
        .collect();
    assert_eq!(owners.len(), 2);
    for (c, epoch) in owners {
        let e = epoch.unwrap_or_else(|| panic!("{c} not placed after the window"));
        assert!(
            e > 17 + 1,
            "{c} placed under epoch {e}, not above what workers held"
        );
    }
}

#[test]
fn a_newer_held_epoch_revokes_what_a_stale_state_confirmed() {
    let mut reg = restarted(&[("c1", "a", 4)], 5);
    let _ = reg.begin_reconcile(0, false);
    let r = reg.register_worker(hello("a", &[]), 1, 10).unwrap();
    assert_eq!(r.assignments.len(), 1, "a trusted state gives a its client");
    let held_b = [("c1".to_string(), 17)];
    let r = reg.register_worker(hello("b", &held_b), 2, 20).unwrap();
    assert!(r.assignments.is_empty());
    let revoked = r.effects.messages.iter().any(|(s, m)| {
        *s == 1
            && matches!(m, Outbound::Order(Order::Revoke { client, epoch: 4 }) if client == "c1")
    });
    assert!(revoked, "{:?}", r.effects.messages);
    assert!(
        r.effects
            .events
            .iter()
            .any(|e| matches!(e, Event::StaleState { .. }))
    );
    assert!(reg.next_epoch() > 17);
}
