//! Rule evaluation: which rule, if any, fires for a request.
//!
//! Rules are tried in order; the first that fires wins. For each rule, a
//! request first has to pass the filters (`seq_id`, `sampling_session_id`,
//! `poll`); only then does the rule count it (its `seen` counter, 1-based)
//! and apply the selectors (`first`, `after`, `nth`, `rate`). A rule whose
//! selectors reject a request still counted it. Counting is lock-free
//! (atomics); `rate` draws are a hash of (seed, rule index, count), so a run
//! with the same order of requests makes the same choices.

use crate::endpoint::Endpoint;
use crate::results::mix;
use crate::rule::{CallAction, Fate, Rule, RuleAction, Target};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};

/// What is known about a request when rules are matched.
#[derive(Clone, Copy, Debug, Default)]
pub struct MatchCtx<'a> {
    /// The seq_id the request concerns, if any.
    pub seq_id: Option<i64>,
    /// The sampling session it concerns, if any.
    pub sampling_session_id: Option<&'a str>,
    /// retrieve_future: the 1-based poll number of the future.
    pub poll: Option<u64>,
}

/// Rules plus their counters.
#[derive(Debug)]
pub struct RuleSet {
    /// The rules, in order.
    pub rules: Vec<Rule>,
    seen: Vec<AtomicU64>,
    fired: Vec<AtomicU64>,
    seed: u64,
}

/// A call rule that fired.
#[derive(Clone, Copy, Debug)]
pub struct Fired<'a> {
    /// Index of the rule in the scenario's `rules`.
    pub index: usize,
    /// Its label.
    pub name: Option<&'a str>,
    /// What to do.
    pub action: &'a CallAction,
    /// Delay first.
    pub delay_ms: u64,
}

impl RuleSet {
    /// Wraps `rules`; `seed` drives `rate`.
    pub fn new(rules: Vec<Rule>, seed: u64) -> Self {
        let n = rules.len();
        Self {
            rules,
            seen: (0..n).map(|_| AtomicU64::new(0)).collect(),
            fired: (0..n).map(|_| AtomicU64::new(0)).collect(),
            seed,
        }
    }

    fn filters_pass(rule: &Rule, ctx: &MatchCtx<'_>) -> bool {
        let m = &rule.matcher;
        if let Some(sel) = &m.seq_id {
            if !ctx.seq_id.is_some_and(|s| sel.contains(s)) {
                return false;
            }
        }
        if let Some(want) = &m.sampling_session_id {
            if ctx.sampling_session_id != Some(want.as_str()) {
                return false;
            }
        }
        if let Some(sel) = &m.poll {
            if !ctx.poll.is_some_and(|p| sel.contains(p as i64)) {
                return false;
            }
        }
        true
    }

    fn selectors_pass(&self, index: usize, n: u64) -> bool {
        let m = &self.rules[index].matcher;
        if m.first.is_some_and(|first| n > first) {
            return false;
        }
        if m.after.is_some_and(|after| n <= after) {
            return false;
        }
        if let Some(sel) = &m.nth {
            if !sel.contains(n as i64) {
                return false;
            }
        }
        if let Some(rate) = m.rate {
            let draw = mix(self.seed ^ ((index as u64) << 40), n);
            if (draw as f64) / 18_446_744_073_709_551_616.0 >= rate {
                return false;
            }
        }
        true
    }

    fn evaluate(&self, applies: impl Fn(&Rule) -> bool, ctx: &MatchCtx<'_>) -> Option<usize> {
        for (index, rule) in self.rules.iter().enumerate() {
            if !applies(rule) || !Self::filters_pass(rule, ctx) {
                continue;
            }
            let n = self.seen[index].fetch_add(1, Ordering::Relaxed) + 1;
            if self.selectors_pass(index, n) {
                self.fired[index].fetch_add(1, Ordering::Relaxed);
                return Some(index);
            }
        }
        None
    }

    /// The call rule that fires for a request to `endpoint`, if any.
    pub fn match_call(&self, endpoint: Endpoint, ctx: &MatchCtx<'_>) -> Option<Fired<'_>> {
        if self.rules.is_empty() {
            return None;
        }
        let applies = |r: &Rule| match r.target {
            Target::Endpoint(e) => e == endpoint,
            Target::Any => true,
            Target::Future => false,
        };
        let index = self.evaluate(applies, ctx)?;
        let rule = &self.rules[index];
        match &rule.action {
            RuleAction::Call { action, delay_ms } => Some(Fired {
                index,
                name: rule.name.as_deref(),
                action,
                delay_ms: *delay_ms,
            }),
            RuleAction::Future(_) => None,
        }
    }

    /// The fate of a new future, and the index of the rule that set it.
    pub fn match_future(&self, ctx: &MatchCtx<'_>) -> (Fate, Option<usize>) {
        if self.rules.is_empty() {
            return (Fate::default(), None);
        }
        let index = self.evaluate(|r| r.target == Target::Future, ctx);
        match index.map(|i| (i, &self.rules[i].action)) {
            Some((i, RuleAction::Future(fate))) => (fate.clone(), Some(i)),
            _ => (Fate::default(), None),
        }
    }

    /// Per-rule counters for `/_sim/stats`.
    pub fn stats(&self) -> Value {
        Value::Array(
            self.rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    json!({
                        "index": i,
                        "name": r.name,
                        "seen": self.seen[i].load(Ordering::Relaxed),
                        "fired": self.fired[i].load(Ordering::Relaxed),
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(rules: Value, seed: u64) -> RuleSet {
        let rules = rules
            .as_array()
            .unwrap()
            .iter()
            .map(|r| Rule::from_value(r).unwrap())
            .collect();
        RuleSet::new(rules, seed)
    }

    fn asample(seq: i64) -> MatchCtx<'static> {
        MatchCtx {
            seq_id: Some(seq),
            ..Default::default()
        }
    }

    #[test]
    fn first_n_then_fall_through() {
        let s = set(
            json!([{"endpoint": "asample", "match": {"first": 2}, "action": {"status": 429}}]),
            0,
        );
        let fired: Vec<bool> = (0..4)
            .map(|i| s.match_call(Endpoint::Asample, &asample(i)).is_some())
            .collect();
        assert_eq!(fired, [true, true, false, false]);
        assert!(s
            .match_call(Endpoint::RetrieveFuture, &asample(0))
            .is_none());
    }

    #[test]
    fn nth_and_after_count_only_filtered_calls() {
        let s = set(
            json!([{"endpoint": "asample", "match": {"seq_id": 7, "nth": 2}, "action": {"status": 503}},
                   {"endpoint": "asample", "match": {"after": 3}, "action": {"drop": true}}]),
            0,
        );
        let kinds: Vec<Option<usize>> = [1, 7, 2, 7, 7, 3, 4]
            .iter()
            .map(|&q| {
                s.match_call(Endpoint::Asample, &asample(q))
                    .map(|f| f.index)
            })
            .collect();
        // seq 7 is rule 0's #1, #2 (fires), #3; everything else reaches rule 1,
        // which fires from its 4th request on.
        assert_eq!(
            kinds,
            [None, None, None, Some(0), Some(1), Some(1), Some(1)]
        );
    }

    #[test]
    fn poll_filter_and_wildcard() {
        let s = set(
            json!([{"endpoint": "retrieve_future", "match": {"poll": 2}, "action": {"status": 410}},
                   {"endpoint": "*", "match": {"rate": 0.0}, "action": {"status": 500}}]),
            0,
        );
        let poll = |p| MatchCtx {
            poll: Some(p),
            seq_id: Some(0),
            ..Default::default()
        };
        assert!(s.match_call(Endpoint::RetrieveFuture, &poll(1)).is_none());
        assert_eq!(
            s.match_call(Endpoint::RetrieveFuture, &poll(2))
                .unwrap()
                .index,
            0
        );
        assert!(s
            .match_call(Endpoint::CreateSession, &MatchCtx::default())
            .is_none());
    }

    #[test]
    fn rate_is_deterministic_and_close() {
        let rules = json!([{"endpoint": "retrieve_future", "match": {"rate": 0.2}, "action": {"status": 503}}]);
        let run = |seed| {
            let s = set(rules.clone(), seed);
            (0..10_000)
                .map(|_| {
                    s.match_call(Endpoint::RetrieveFuture, &MatchCtx::default())
                        .is_some()
                })
                .collect::<Vec<_>>()
        };
        let a = run(42);
        assert_eq!(a, run(42));
        assert_ne!(a, run(43));
        let hits = a.iter().filter(|x| **x).count();
        assert!((1_800..2_200).contains(&hits), "{hits}");
    }

    #[test]
    fn future_rules_are_separate() {
        let s = set(
            json!([{"endpoint": "future", "match": {"seq_id": [3, 4]}, "action": {"fail": {"category": "user"}}},
                   {"endpoint": "future", "action": {"stuck": true}}]),
            0,
        );
        let (fate, idx) = s.match_future(&asample(3));
        assert_eq!(
            (fate.fail.unwrap().category.as_str(), idx),
            ("user", Some(0))
        );
        assert!(s.match_future(&asample(5)).0.stuck);
        assert!(s.match_call(Endpoint::Asample, &asample(3)).is_none());
        assert_eq!(s.stats()[0]["fired"], 1);
    }
}
