//! Pure bookkeeping of the clients this worker holds and under which epoch, turning leader
//! messages into start/stop changes. Stale messages (older epochs) change nothing held and
//! are reported (C2).

use std::collections::BTreeMap;

use crate::spec::ClientSpec;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Start {
        spec: ClientSpec,
        epoch: u64,
    },
    /// Stop serving; the leader is told `Released` once the work really stopped.
    Stop {
        client: String,
        epoch: u64,
    },
    /// The leader offered an older epoch than the one held: kept the held one (C2).
    Refused {
        client: String,
        held: u64,
        offered: u64,
    },
}

#[derive(Debug, Default)]
pub(crate) struct Assignments {
    held: BTreeMap<String, (ClientSpec, u64)>,
}

impl Assignments {
    pub(crate) fn held(&self) -> impl Iterator<Item = (&ClientSpec, u64)> {
        self.held.values().map(|(s, e)| (s, *e))
    }

    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Takes a client under `epoch`, replacing an older epoch; an equal one changes nothing,
    /// an older one is refused (C2).
    pub(crate) fn assign(&mut self, spec: ClientSpec, epoch: u64) -> Vec<Change> {
        let mut changes = Vec::new();
        match self.held.get(&spec.name) {
            Some((_, held)) if *held == epoch => return changes,
            Some((_, held)) if *held > epoch => {
                changes.push(Change::Refused {
                    client: spec.name.clone(),
                    held: *held,
                    offered: epoch,
                });
                return changes;
            }
            Some((_, held)) => changes.push(Change::Stop {
                client: spec.name.clone(),
                epoch: *held,
            }),
            None => {}
        }
        self.held.insert(spec.name.clone(), (spec.clone(), epoch));
        changes.push(Change::Start { spec, epoch });
        changes
    }

    /// Drops a client held under `epoch` or older.
    pub(crate) fn revoke(&mut self, client: &str, epoch: u64) -> Vec<Change> {
        match self.held.get(client) {
            Some((_, held)) if *held <= epoch => {
                let held = *held;
                self.held.remove(client);
                vec![Change::Stop {
                    client: client.to_owned(),
                    epoch: held,
                }]
            }
            _ => Vec::new(),
        }
    }

    /// Makes the held set exactly `set` (sent by the leader after registration), except that
    /// a client held under a newer epoch than the set gives keeps it: a leader restored from an
    /// old state must not rewind an epoch (C2); it resolves that itself once it learns better.
    pub(crate) fn replace(&mut self, set: Vec<(ClientSpec, u64)>) -> Vec<Change> {
        let mut changes = Vec::new();
        let wanted: BTreeMap<String, (ClientSpec, u64)> = set
            .into_iter()
            .map(|(s, e)| match self.held.get(&s.name) {
                Some((held_spec, held)) if *held > e => {
                    changes.push(Change::Refused {
                        client: s.name.clone(),
                        held: *held,
                        offered: e,
                    });
                    (s.name.clone(), (held_spec.clone(), *held))
                }
                _ => (s.name.clone(), (s, e)),
            })
            .collect();
        for (name, (spec, epoch)) in &self.held {
            if wanted
                .get(name)
                .is_none_or(|(s, e)| e != epoch || s != spec)
            {
                changes.push(Change::Stop {
                    client: name.clone(),
                    epoch: *epoch,
                });
            }
        }
        for (name, (spec, epoch)) in &wanted {
            if self
                .held
                .get(name)
                .is_none_or(|(s, e)| e != epoch || s != spec)
            {
                changes.push(Change::Start {
                    spec: spec.clone(),
                    epoch: *epoch,
                });
            }
        }
        self.held = wanted;
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_epoch_is_refused_and_the_held_one_kept() {
        let mut a = Assignments::default();
        a.assign(spec("c"), 17);
        let refused = Change::Refused {
            client: "c".into(),
            held: 17,
            offered: 4,
        };
        assert_eq!(a.assign(spec("c"), 4), vec![refused.clone()]);
        assert_eq!(a.replace(vec![(spec("c"), 4)]), vec![refused]);
        assert_eq!(
            a.held()
                .map(|(s, e)| (s.name.clone(), e))
                .collect::<Vec<_>>(),
            vec![("c".to_string(), 17)]
        );
        assert!(
            a.assign(spec("c"), 17).is_empty(),
            "the same epoch again changes nothing"
        );
    }

    fn spec(n: &str) -> ClientSpec {
        ClientSpec::example(n)
    }

    #[test]
    fn newer_epoch_restarts_and_stale_epoch_is_ignored() {
        let mut a = Assignments::default();
        assert_eq!(
            a.assign(spec("c"), 5),
            vec![Change::Start {
                spec: spec("c"),
                epoch: 5
            }]
        );
        assert!(a.assign(spec("c"), 5).is_empty());
        // A stale epoch changes nothing held; it is only reported.
        assert!(matches!(
            a.assign(spec("c"), 4)[..],
            [Change::Refused {
                held: 5,
                offered: 4,
                ..
            }]
        ));
        assert_eq!(
            a.assign(spec("c"), 6),
            vec![
                Change::Stop {
                    client: "c".into(),
                    epoch: 5
                },
                Change::Start {
                    spec: spec("c"),
                    epoch: 6
                }
            ]
        );
    }

    #[test]
    fn revoke_only_drops_the_epoch_it_names_or_older() {
        let mut a = Assignments::default();
        a.assign(spec("c"), 7);
        assert!(a.revoke("c", 6).is_empty());
        assert_eq!(
            a.revoke("c", 7),
            vec![Change::Stop {
                client: "c".into(),
                epoch: 7
            }]
        );
        assert!(a.is_empty());
        assert!(a.revoke("c", 9).is_empty());
    }

    #[test]
    fn replace_keeps_what_matches_and_stops_the_rest() {
        let mut a = Assignments::default();
        a.assign(spec("keep"), 1);
        a.assign(spec("drop"), 2);
        a.assign(spec("bump"), 3);
        let changes = a.replace(vec![
            (spec("keep"), 1),
            (spec("bump"), 9),
            (spec("new"), 10),
        ]);
        assert_eq!(
            changes,
            vec![
                Change::Stop {
                    client: "bump".into(),
                    epoch: 3
                },
                Change::Stop {
                    client: "drop".into(),
                    epoch: 2
                },
                Change::Start {
                    spec: spec("bump"),
                    epoch: 9
                },
                Change::Start {
                    spec: spec("new"),
                    epoch: 10
                },
            ]
        );
        assert_eq!(a.len(), 3);
    }
}
