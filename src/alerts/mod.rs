//! Threshold alerts evaluated on the leader, pure (no I/O, time comes in as `now_ms`):
//! - [`rules`]: the rules file, parsed and validated with every error at once ([`error`])
//! - [`duration`], [`template`]: the small languages inside it (`1h30m`, `{{ $value }}`)
//! - [`state`]: the per-rule, per-series state machine and its durable [`state::Snapshot`]
//! - [`notify`]: the notifications it emits (JSON shape), and the followers' bounded backlog
//! - [`builtin`]: rules about sqd itself, fed from the leader's [`builtin::Facts`]
//! - [`alertmanager`]: Alertmanager `/api/v2/alerts` payloads and when to (re-)send them
//!
//! Decisions (the tests hold each one):
//! - `for` counts from the first round the trigger held; the alert fires at the first round
//!   with `now - since >= for` (`for = 0s`: at once, no pending notification).
//! - A pending series needs the trigger threshold at every complete round; when it fails the
//!   episode ends with a `resolved` (so every pending or firing is closed by one resolved).
//! - Once firing, `clear_threshold` (default: the threshold) decides whether the condition
//!   still holds; `resolved` comes at the first complete round where it has not held for
//!   `keep_firing_for`. A series absent from a complete answer does not hold.
//! - A partial answer (unless `allow_partial`) changes no series, neither confirms nor breaks a
//!   pending one (the next complete round decides), and emits one rule-wide `unknown` per
//!   stretch of partial rounds. With `allow_partial`, present values are evaluated and absent
//!   series keep their state (they may live on the missing shard).
//! - Timers are in wall-clock milliseconds (they must survive a restart, which a monotonic
//!   clock does not); a clock stepping back only delays transitions (saturating arithmetic).
//! - Notification ids come from one counter in the snapshot: store the snapshot and the
//!   round's notifications in one transaction, and a restart neither re-sends nor skips.

pub mod alertmanager;
pub mod builtin;
pub mod duration;
pub mod error;
pub mod notify;
pub mod rules;
pub mod state;
pub mod template;

pub use builtin::{Builtin, Facts};
pub use error::{Problem, RuleError, RulesErrors};
pub use notify::{AlertState, Notification};
pub use rules::{Op, Rule, RuleSet, parse};
pub use state::{Answer, Evaluator, Snapshot};
