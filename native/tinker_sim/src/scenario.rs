//! Scenarios: the JSON document that scripts the simulator's behaviour.
//!
//! The format is specified, with examples, in `native/tinker_sim/README.md`.
//! A scenario is a JSON object whose top-level keys are all optional:
//! `seed`, `stuck`, `log`, `latency_ms`, `hold_ms`, `client_config`,
//! `dynamic_config`, `rules` (see [`crate::rule`]). Posting one to
//! `/_sim/scenario` replaces the keys it contains and keeps the others.

use crate::matcher::RuleSet;
use crate::rule::Rule;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Time from asample to a ready result: fixed, or uniform in a range
/// (inclusive), drawn per future from the scenario seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    /// Always this many milliseconds.
    Fixed(u64),
    /// Uniform in `lo..=hi` milliseconds.
    Range(u64, u64),
}

impl Latency {
    /// Parses `N`, `"N"`, `"A..B"` or `[A, B]`.
    pub fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Number(n) => n
                .as_u64()
                .map(Latency::Fixed)
                .ok_or_else(|| format!("expected a non-negative integer, got {n}")),
            Value::String(s) => Self::parse(s),
            Value::Array(items) if items.len() == 2 => match (items[0].as_u64(), items[1].as_u64())
            {
                (Some(a), Some(b)) => Self::range(a, b),
                _ => Err(format!(
                    "expected [min, max] of non-negative integers, got {v}"
                )),
            },
            _ => Err(format!("expected N, \"A..B\" or [A, B], got {v}")),
        }
    }

    /// Parses `N` or `A..B` (milliseconds).
    pub fn parse(s: &str) -> Result<Self, String> {
        let num = |x: &str| {
            x.trim()
                .parse::<u64>()
                .map_err(|_| format!("expected milliseconds as N or A..B, got {s:?}"))
        };
        match s.split_once("..") {
            Some((a, b)) => Self::range(num(a)?, num(b.trim_start_matches('='))?),
            None => Ok(Latency::Fixed(num(s)?)),
        }
    }

    fn range(a: u64, b: u64) -> Result<Self, String> {
        if a > b {
            return Err(format!("latency range {a}..{b} is empty"));
        }
        Ok(if a == b {
            Latency::Fixed(a)
        } else {
            Latency::Range(a, b)
        })
    }

    /// The latency for a future, given a uniform 64-bit draw.
    pub fn pick(&self, draw: u64) -> Duration {
        Duration::from_millis(match *self {
            Latency::Fixed(ms) => ms,
            Latency::Range(lo, hi) => lo + draw % (hi - lo + 1),
        })
    }

    /// The JSON form (`N` or `[A, B]`).
    pub fn to_value(&self) -> Value {
        match *self {
            Latency::Fixed(ms) => Value::from(ms),
            Latency::Range(a, b) => Value::from(vec![a, b]),
        }
    }
}

/// The resolved settings in force.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Seed of every random choice (`rate`, latency ranges).
    pub seed: u64,
    /// Global stuck switch: no future completes while it is on.
    pub stuck: bool,
    /// Whether requests are logged.
    pub log: bool,
    /// Latency of a future.
    pub latency: Latency,
    /// How long retrieve_future / retrieve_futures hold a pending poll.
    pub hold: Duration,
    /// Body of `client/config`.
    pub client_config: Value,
    /// Body of `client/dynamic_config`.
    pub dynamic_config: Value,
    /// The rules, with their counters.
    pub rules: Arc<RuleSet>,
    /// The scenario document these settings came from (all keys filled in).
    pub document: Value,
}

const KEYS: [&str; 8] = [
    "seed",
    "stuck",
    "log",
    "latency_ms",
    "hold_ms",
    "client_config",
    "dynamic_config",
    "rules",
];

impl Settings {
    /// Settings from a complete scenario document (every key present).
    fn from_document(doc: Value, old_rules: Option<&Arc<RuleSet>>) -> Result<Self, String> {
        let obj = doc.as_object().ok_or("a scenario must be a JSON object")?;
        let seed = obj["seed"]
            .as_u64()
            .ok_or_else(|| format!("seed: expected a non-negative integer, got {}", obj["seed"]))?;
        let flag = |k: &str| {
            obj[k]
                .as_bool()
                .ok_or_else(|| format!("{k}: expected a boolean, got {}", obj[k]))
        };
        let stuck = flag("stuck")?;
        let log = flag("log")?;
        let latency =
            Latency::from_value(&obj["latency_ms"]).map_err(|e| format!("latency_ms: {e}"))?;
        let hold = Duration::from_millis(obj["hold_ms"].as_u64().ok_or_else(|| {
            format!(
                "hold_ms: expected a non-negative integer, got {}",
                obj["hold_ms"]
            )
        })?);
        for k in ["client_config", "dynamic_config"] {
            if !obj[k].is_object() {
                return Err(format!("{k}: expected an object, got {}", obj[k]));
            }
        }
        let rules = match old_rules {
            Some(r) => r.clone(),
            None => {
                let items = obj["rules"]
                    .as_array()
                    .ok_or_else(|| format!("rules: expected an array, got {}", obj["rules"]))?;
                let rules = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Rule::from_value(v).map_err(|e| format!("rules[{i}]: {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                Arc::new(RuleSet::new(rules, seed))
            }
        };
        Ok(Settings {
            seed,
            stuck,
            log,
            latency,
            hold,
            client_config: obj["client_config"].clone(),
            dynamic_config: obj["dynamic_config"].clone(),
            rules,
            document: doc,
        })
    }

    /// The defaults: no rules, zero latency, 30 s hold, logging on, seed 0.
    pub fn defaults(latency: Latency, hold: Duration, log: bool) -> Self {
        let doc = serde_json::json!({
            "seed": 0, "stuck": false, "log": log, "latency_ms": latency.to_value(),
            "hold_ms": hold.as_millis() as u64, "client_config": {},
            "dynamic_config": {"refresh_interval_sec": 300}, "rules": [],
        });
        Self::from_document(doc, None).expect("default scenario is valid")
    }

    /// Applies a scenario patch: the keys present replace the current ones.
    /// Rule counters restart when `rules` or `seed` is in the patch.
    pub fn patch(&self, patch: &Value) -> Result<Self, String> {
        let obj: &Map<String, Value> = patch
            .as_object()
            .ok_or("a scenario must be a JSON object")?;
        if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(format!("unknown key {k:?} (known: {})", KEYS.join(", ")));
        }
        let mut doc = self.document.clone();
        let target = doc.as_object_mut().expect("document is an object");
        for (k, v) in obj {
            target.insert(k.clone(), v.clone());
        }
        let keep_rules = !obj.contains_key("rules") && !obj.contains_key("seed");
        Self::from_document(doc, keep_rules.then_some(&self.rules))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Settings {
        Settings::defaults(Latency::Fixed(0), Duration::from_secs(30), true)
    }

    #[test]
    fn latency_forms() {
        assert_eq!(Latency::parse("5").unwrap(), Latency::Fixed(5));
        assert_eq!(Latency::parse("5..50").unwrap(), Latency::Range(5, 50));
        assert_eq!(
            Latency::from_value(&json!([1, 2])).unwrap(),
            Latency::Range(1, 2)
        );
        assert!(Latency::parse("9..1").is_err());
        assert_eq!(Latency::Range(10, 12).pick(5), Duration::from_millis(12));
    }

    #[test]
    fn patch_keeps_other_keys() {
        let s = base()
            .patch(&json!({"rules": [{"endpoint": "asample", "match": {"first": 1}, "action": {"status": 429}}]}))
            .unwrap();
        let t = s.patch(&json!({"stuck": true})).unwrap();
        assert!(t.stuck);
        assert_eq!(t.rules.rules.len(), 1);
        assert!(Arc::ptr_eq(&s.rules, &t.rules));
        assert!(base()
            .patch(&json!({"bogus": 1}))
            .unwrap_err()
            .contains("bogus"));
    }

    #[test]
    fn rule_errors_name_the_field() {
        let err = |rule: Value| base().patch(&json!({"rules": [rule]})).unwrap_err();
        assert!(err(json!({"endpoint": "nope", "action": {"status": 500}}))
            .contains("rules[0]: endpoint"));
        assert!(
            err(json!({"endpoint": "asample", "action": {"status": 500, "drop": true}}))
                .contains("choose one")
        );
        assert!(
            err(json!({"endpoint": "asample", "action": {"fail": {}}})).contains("retrieve_future")
        );
        assert!(
            err(json!({"endpoint": "future", "action": {"status": 500}})).contains("action.status")
        );
        assert!(err(
            json!({"endpoint": "asample", "match": {"poll": 1}, "action": {"status": 500}})
        )
        .contains("match.poll"));
        assert!(err(json!({"endpoint": "asample", "action": {"stauts": 500}})).contains("stauts"));
        assert!(
            err(json!({"endpoint": "asample", "action": {"headers": {"a": "b"}}}))
                .contains("needs action.status")
        );
    }
}
