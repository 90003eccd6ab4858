//! Alertmanager payloads (`POST /api/v2/alerts`) and when to send them, pure.
//!
//! The re-send rule (Prometheus's, which Alertmanager is built around):
//! - an [`Outbox`] follows the notifications; pending and unknown never reach Alertmanager
//!   (it has no such states), and a pending episode that resolves without having fired is not
//!   sent either (Alertmanager never saw it fire);
//! - a payload is due at once after any firing/resolved change, and otherwise every
//!   `resend_every_ms` (default 1 min) while anything is firing or recently resolved;
//! - each payload carries **every** firing alert with `endsAt = now + ends_after_ms` (default
//!   4 × resend, Prometheus's factor): if the leader dies, Alertmanager resolves the alerts by
//!   itself a few minutes later instead of keeping them forever;
//! - resolved alerts are re-sent with each payload for `resolved_retention_ms` (15 min) with
//!   their real `endsAt`, so a lost request or an Alertmanager restart still learns they ended;
//! - the outbox is serialisable: store it with the evaluator's snapshot, so a restarted leader
//!   re-sends the firing set (Alertmanager deduplicates by labels: a re-send is not a new alert).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::notify::{AlertState, Notification};

/// When and how long, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub resend_every_ms: i64,
    pub ends_after_ms: i64,
    pub resolved_retention_ms: i64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            resend_every_ms: 60_000,
            ends_after_ms: 4 * 60_000,
            resolved_retention_ms: 15 * 60_000,
        }
    }
}

/// One alert as Alertmanager's API takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AmAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

/// An alert the outbox keeps sending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tracked {
    pub rule: String,
    pub labels: BTreeMap<String, String>,
    pub severity: String,
    pub annotation: String,
    pub value: Option<f64>,
    pub starts_ms: i64,
    /// Set once resolved.
    pub ends_ms: Option<i64>,
}

impl Tracked {
    fn same_series(&self, n: &Notification) -> bool {
        self.rule == n.rule && self.labels == n.labels
    }

    /// Alertmanager's form; `generator_url` is the leader's link for this rule, if any.
    pub fn to_am(&self, now_ms: i64, timing: &Timing, generator_url: Option<&str>) -> AmAlert {
        let mut labels = self.labels.clone();
        labels.insert("alertname".to_owned(), self.rule.clone());
        labels.insert("severity".to_owned(), self.severity.clone());
        let mut annotations = BTreeMap::new();
        if !self.annotation.is_empty() {
            annotations.insert("summary".to_owned(), self.annotation.clone());
        }
        if let Some(v) = self.value {
            annotations.insert("value".to_owned(), v.to_string());
        }
        let ends = self
            .ends_ms
            .unwrap_or(now_ms.saturating_add(timing.ends_after_ms));
        AmAlert {
            labels,
            annotations,
            starts_at: rfc3339(self.starts_ms),
            ends_at: rfc3339(ends),
            generator_url: generator_url.map(str::to_owned),
        }
    }
}

/// Firing and recently resolved alerts, and when they were last sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    pub firing: Vec<Tracked>,
    pub resolved: Vec<Tracked>,
    pub last_sent_ms: Option<i64>,
    /// A firing/resolved change not yet sent.
    pub changed: bool,
}

impl Outbox {
    /// Follows one notification (in id order).
    pub fn observe(&mut self, n: &Notification) {
        match n.state {
            AlertState::Firing => {
                self.firing.retain(|t| !t.same_series(n));
                self.firing.push(Tracked {
                    rule: n.rule.clone(),
                    labels: n.labels.clone(),
                    severity: n.severity.clone(),
                    annotation: n.annotation.clone(),
                    value: n.value,
                    starts_ms: n.since_unix_ms,
                    ends_ms: None,
                });
                self.changed = true;
            }
            AlertState::Resolved => {
                // Only what Alertmanager saw firing gets a resolved.
                if let Some(at) = self.firing.iter().position(|t| t.same_series(n)) {
                    let mut t = self.firing.remove(at);
                    t.ends_ms = Some(n.ts_unix_ms);
                    t.value = n.value;
                    self.resolved.push(t);
                    self.changed = true;
                }
            }
            AlertState::Pending | AlertState::Unknown => {}
        }
    }

    /// Whether a payload should go out now (see the module doc for the rule).
    pub fn due(&mut self, now_ms: i64, timing: &Timing) -> bool {
        let keep_from = now_ms.saturating_sub(timing.resolved_retention_ms);
        self.resolved
            .retain(|t| t.ends_ms.is_some_and(|e| e >= keep_from));
        if self.firing.is_empty() && self.resolved.is_empty() {
            return false;
        }
        self.changed
            || self
                .last_sent_ms
                .is_none_or(|last| now_ms.saturating_sub(last) >= timing.resend_every_ms)
    }

    /// The payload to POST now: every firing alert, then every retained resolved one.
    pub fn payload(
        &self,
        now_ms: i64,
        timing: &Timing,
        generator_url: Option<&str>,
    ) -> Vec<AmAlert> {
        self.firing
            .iter()
            .chain(&self.resolved)
            .map(|t| t.to_am(now_ms, timing, generator_url))
            .collect()
    }

    /// Records a successful POST; after a failure, do not call it: the payload stays due.
    pub fn sent(&mut self, now_ms: i64) {
        self.last_sent_ms = Some(now_ms);
        self.changed = false;
    }
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds, e.g. `2026-12-02T01:09:23.000Z`.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(id: u64, state: AlertState, ts: i64, since: i64) -> Notification {
        Notification {
            id,
            rule: "cpu-high".to_owned(),
            state,
            labels: BTreeMap::from([("host".to_owned(), "a".to_owned())]),
            value: Some(95.0),
            threshold: 90.0,
            severity: "critical".to_owned(),
            ts_unix_ms: ts,
            since_unix_ms: since,
            annotation: "a cpu at 95".to_owned(),
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn firing_is_sent_at_once_then_every_interval_then_resolved() {
        let t = Timing::default();
        let mut ob = Outbox::default();
        assert!(!ob.due(0, &t), "nothing to send");
        ob.observe(&note(1, AlertState::Pending, 0, 0));
        assert!(!ob.due(0, &t), "pending never reaches alertmanager");
        ob.observe(&note(2, AlertState::Firing, 60_000, 60_000));
        assert!(ob.due(60_000, &t));
        let json = serde_json::to_value(ob.payload(60_000, &t, Some("http://leader/alerts")))
            .unwrap_or_default();
        let want = serde_json::json!([{
            "labels": {"alertname": "cpu-high", "severity": "critical", "host": "a"},
            "annotations": {"summary": "a cpu at 95", "value": "95"},
            "startsAt": "1970-01-01T00:01:00.000Z",
            "endsAt": "1970-01-01T00:05:00.000Z",
            "generatorURL": "http://leader/alerts"
        }]);
        assert_eq!(json, want);
        ob.sent(60_000);
        assert!(!ob.due(119_999, &t));
        assert!(ob.due(120_000, &t), "re-sent every minute while firing");
        ob.sent(120_000);
        ob.observe(&note(3, AlertState::Resolved, 150_000, 60_000));
        assert!(ob.due(150_000, &t), "a resolution goes out at once");
        let p = ob.payload(150_000, &t, None);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].ends_at, "1970-01-01T00:02:30.000Z");
        assert_eq!(p[0].generator_url, None);
        ob.sent(150_000);
        assert!(ob.due(210_000, &t), "resolved re-sent while retained");
        ob.sent(210_000);
        assert!(!ob.due(150_000 + 15 * 60_000 + 1, &t), "then dropped");
        assert!(ob.resolved.is_empty());
    }

    #[test]
    fn a_pending_episode_that_never_fired_is_not_sent_resolved() {
        let t = Timing::default();
        let mut ob = Outbox::default();
        ob.observe(&note(1, AlertState::Pending, 0, 0));
        ob.observe(&note(2, AlertState::Resolved, 10_000, 0));
        assert!(!ob.due(10_000, &t));
    }

    #[test]
    fn the_outbox_survives_a_restart() {
        let t = Timing::default();
        let mut ob = Outbox::default();
        ob.observe(&note(1, AlertState::Firing, 0, 0));
        ob.sent(0);
        let stored = serde_json::to_string(&ob).unwrap_or_default();
        let back: Outbox = serde_json::from_str(&stored).unwrap_or_default();
        assert_eq!(back, ob);
        let mut back = back;
        assert!(!back.due(30_000, &t) && back.due(60_000, &t));
    }
}
