//! Typed codes of the control plane: why an assignment changed and what kind of change an
//! audit line records. Each code has one spelling (`as_str`), used by the audit log, metrics
//! labels, logs and `sqdctl explain`, so the text cannot drift between them.

/// A closed set of codes with one stable spelling each.
pub(crate) trait Code: Copy + 'static {
    const ALL: &'static [Self];

    fn as_str(self) -> &'static str;

    /// The code spelled `text`, if this version knows it.
    fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == text)
    }
}

/// Why a client's assignment changed (or was asked to change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AssignmentReason {
    /// Added or removed by an operator.
    Admin,
    /// First placement of a new client.
    New,
    /// Placed again after it had no worker.
    Placed,
    /// Its worker died or left.
    Failover,
    /// Its worker is being drained.
    Drain,
    /// Its worker held more than its share.
    Rebalance,
    /// Its agent reported a growing backlog while a less loaded worker existed.
    Backlog,
    /// No alive worker could take it.
    Unassigned,
    /// Held back after a restore: a worker may still hold it under an epoch the state never saw.
    Restore,
}

impl Code for AssignmentReason {
    const ALL: &'static [Self] = &[
        Self::Admin,
        Self::New,
        Self::Placed,
        Self::Failover,
        Self::Drain,
        Self::Rebalance,
        Self::Backlog,
        Self::Unassigned,
        Self::Restore,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::New => "new",
            Self::Placed => "placed",
            Self::Failover => "failover",
            Self::Drain => "drain",
            Self::Rebalance => "rebalance",
            Self::Backlog => "backlog",
            Self::Unassigned => "unassigned",
            Self::Restore => "restore",
        }
    }
}

impl AssignmentReason {
    /// The reason in words, for an operator reading why a worker was asked to let go.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Admin => "an operator changed the client",
            Self::New => "the client is new",
            Self::Placed => "the client had no worker",
            Self::Failover => "the worker died or left",
            Self::Drain => "the worker is being drained",
            Self::Rebalance => "the worker holds more than its share of clients",
            Self::Backlog => {
                "the client's agent reports its backlog growing while a less loaded worker exists"
            }
            Self::Unassigned => "no alive worker could take the client",
            Self::Restore => {
                "the leader's state is older than the cluster (restored from a backup); the client waits until every lease of the previous leader ran out"
            }
        }
    }
}

/// What an audit line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuditKind {
    Added,
    Removed,
    Moved,
    ReleaseRequested,
}

impl Code for AuditKind {
    const ALL: &'static [Self] = &[
        Self::Added,
        Self::Removed,
        Self::Moved,
        Self::ReleaseRequested,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Removed => "removed",
            Self::Moved => "moved",
            Self::ReleaseRequested => "release_requested",
        }
    }
}

/// A code as read back from durable state: one this version knows, or text another version
/// wrote, kept as is so `explain` still shows it instead of failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recorded<T> {
    Known(T),
    Unknown(String),
}

impl<T: Code> Recorded<T> {
    pub(crate) fn read(text: String) -> Self {
        match T::parse(&text) {
            Some(code) => Recorded::Known(code),
            None => Recorded::Unknown(text),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            Recorded::Known(code) => code.as_str(),
            Recorded::Unknown(text) => text,
        }
    }
}

impl<T: Code> From<T> for Recorded<T> {
    fn from(code: T) -> Self {
        Recorded::Known(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_as_itself() {
        for &r in AssignmentReason::ALL {
            assert_eq!(Recorded::read(r.as_str().to_owned()), Recorded::Known(r));
        }
        for &k in AuditKind::ALL {
            assert_eq!(Recorded::read(k.as_str().to_owned()), Recorded::Known(k));
        }
    }

    #[test]
    fn unknown_text_is_kept_not_rejected() {
        let r: Recorded<AssignmentReason> = Recorded::read("from-the-future".to_owned());
        assert_eq!(r, Recorded::Unknown("from-the-future".to_owned()));
        assert_eq!(r.as_str(), "from-the-future");
    }
}
