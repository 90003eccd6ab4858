//! Liveness rules of the leader, pure: how long silence makes a node suspect or dead (C4,
//! hazard 16), and the state a worker is shown in. Time comes in as leader-monotonic `now`
//! (hazard 15), so tests advance it instead of sleeping.

/// Leader-monotonic milliseconds.
pub(crate) type Millis = u64;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Timing {
    pub(crate) heartbeat_ms: u64,
    pub(crate) lease_ms: u64,
    pub(crate) grace_ms: u64,
    /// Most rebalancing moves started per tick (placing is never capped).
    pub(crate) max_moves_per_tick: usize,
}

impl Timing {
    /// Silence after which a node is dead and its clients move (C4).
    pub(crate) fn dead_after(&self) -> u64 {
        self.lease_ms + self.grace_ms
    }

    /// Heartbeats missed for this long make a connected node suspect.
    pub(crate) fn suspect_after(&self) -> u64 {
        (self.heartbeat_ms * 2).min(self.lease_ms)
    }

    /// The liveness of a worker in `current` state, last heard from at `last`, at `now`.
    /// Only heartbeats bring a worker back from suspect; nothing brings it back from dead
    /// except a new registration.
    pub(crate) fn judge(&self, current: Liveness, last: Millis, now: Millis) -> Liveness {
        let silent = now.saturating_sub(last);
        match current {
            Liveness::Dead => Liveness::Dead,
            _ if silent > self.dead_after() => Liveness::Dead,
            Liveness::Alive if silent > self.suspect_after() => Liveness::Suspect,
            other => other,
        }
    }

    /// Whether a worker connected on a live session and heard from at `last` is healthy at
    /// `now`: a second registration under its id is then refused (hazard 21).
    pub(crate) fn healthy(&self, liveness: Liveness, last: Option<Millis>, now: Millis) -> bool {
        liveness == Liveness::Alive
            && last.is_some_and(|t| now.saturating_sub(t) <= self.suspect_after())
    }

    /// Whether an agent last heard from at `last` is gone at `now`.
    pub(crate) fn agent_expired(&self, last: Millis, now: Millis) -> bool {
        now.saturating_sub(last) > self.dead_after()
    }
}

#[cfg(test)]
impl Timing {
    /// Heartbeat 100 ms, lease 300 ms, grace 100 ms: suspect after 200 ms of silence, dead
    /// after 400 ms.
    pub(crate) fn for_tests() -> Self {
        Timing {
            heartbeat_ms: 100,
            lease_ms: 300,
            grace_ms: 100,
            max_moves_per_tick: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    Alive,
    Suspect,
    Dead,
}

/// The state a worker is shown in (`sqdctl status`, the `sqd_leader_workers` gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum WorkerState {
    Alive,
    Suspect,
    Dead,
    Draining,
    /// Its last registration was refused (version, duplicate id).
    Refused,
}

impl WorkerState {
    pub(crate) const ALL: [WorkerState; 5] = [
        Self::Alive,
        Self::Suspect,
        Self::Dead,
        Self::Draining,
        Self::Refused,
    ];

    pub(crate) fn of(liveness: Liveness, draining: bool, refused: bool) -> Self {
        match (liveness, draining, refused) {
            (Liveness::Dead, _, true) => Self::Refused,
            (Liveness::Dead, _, false) => Self::Dead,
            (_, true, _) => Self::Draining,
            (Liveness::Suspect, false, _) => Self::Suspect,
            (Liveness::Alive, false, _) => Self::Alive,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
            Self::Draining => "draining",
            Self::Refused => "refused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_makes_suspect_then_dead() {
        let t = Timing::for_tests();
        assert_eq!(t.judge(Liveness::Alive, 0, 200), Liveness::Alive);
        assert_eq!(t.judge(Liveness::Alive, 0, 201), Liveness::Suspect);
        assert_eq!(t.judge(Liveness::Suspect, 0, 400), Liveness::Suspect);
        assert_eq!(t.judge(Liveness::Suspect, 0, 401), Liveness::Dead);
        assert_eq!(t.judge(Liveness::Alive, 0, 401), Liveness::Dead);
        assert_eq!(t.judge(Liveness::Dead, 400, 400), Liveness::Dead);
    }

    #[test]
    fn shown_state_puts_refused_and_draining_first() {
        assert_eq!(
            WorkerState::of(Liveness::Dead, true, true),
            WorkerState::Refused
        );
        assert_eq!(
            WorkerState::of(Liveness::Suspect, true, false),
            WorkerState::Draining
        );
        assert_eq!(
            WorkerState::of(Liveness::Dead, true, false),
            WorkerState::Dead
        );
        assert_eq!(
            WorkerState::of(Liveness::Alive, false, true),
            WorkerState::Alive
        );
    }
}
