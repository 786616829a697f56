//! Rules of a scenario: which requests they match (`match`) and what they
//! do (`action`), parsed and validated from JSON. The format is specified in
//! `native/tinker_sim/README.md`; [`crate::matcher`] evaluates rules.

use crate::endpoint::Endpoint;
use crate::scenario::Latency;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A set of integers: `N`, `[N, M, ...]` or `{"from": A, "to": B}` (inclusive,
/// either bound optional).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum IntSel {
    /// Exactly this value.
    One(i64),
    /// Any of these values.
    Many(Vec<i64>),
    /// A range.
    Range(IntRange),
}

/// An inclusive range of integers; a missing bound is unbounded.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntRange {
    /// Lowest value (inclusive).
    pub from: Option<i64>,
    /// Highest value (inclusive).
    pub to: Option<i64>,
}

impl IntSel {
    /// Whether `v` is in the set.
    pub fn contains(&self, v: i64) -> bool {
        match self {
            IntSel::One(x) => *x == v,
            IntSel::Many(xs) => xs.contains(&v),
            IntSel::Range(IntRange { from, to }) => {
                from.is_none_or(|f| v >= f) && to.is_none_or(|t| v <= t)
            }
        }
    }
}

/// Which requests a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Calls of one endpoint.
    Endpoint(Endpoint),
    /// Calls of every API endpoint (`"*"`).
    Any,
    /// The creation of a future (`"future"`): the action sets its fate.
    Future,
}

/// The filters and selectors of a rule (`"match"`), all optional and AND-ed.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// The request's seq_id (asample: from the body; retrieve_future and
    /// cancel_future: of the future named by `request_id`).
    pub seq_id: Option<IntSel>,
    /// The request's sampling session id.
    pub sampling_session_id: Option<String>,
    /// retrieve_future only: the 1-based number of this poll of this future.
    pub poll: Option<IntSel>,
    /// Fire on the first N requests that pass the filters.
    pub first: Option<u64>,
    /// Fire only after N requests passed the filters.
    pub after: Option<u64>,
    /// Fire on these (1-based) requests that pass the filters.
    pub nth: Option<IntSel>,
    /// Fire with this probability (deterministic given `seed` and order).
    pub rate: Option<f64>,
}

/// The body of a scripted answer.
#[derive(Clone, Debug, PartialEq)]
pub enum ReplyBody {
    /// The simulator's default body for the status.
    Default,
    /// This JSON value.
    Json(Value),
    /// These bytes, verbatim.
    Raw(String),
    /// No body at all (`content-length: 0`).
    Empty,
    /// A JSON body of exactly `bytes` bytes, generated as it is sent (see
    /// [`crate::padded`]), with or without a `content-length`.
    Padded {
        /// Its size.
        bytes: u64,
        /// Sent chunked, without `content-length`.
        chunked: bool,
    },
}

/// What a call rule does with a matching request.
#[derive(Clone, Debug, PartialEq)]
pub enum CallAction {
    /// Answer with this status, headers and body.
    Respond {
        /// HTTP status.
        status: u16,
        /// Extra response headers.
        headers: Vec<(String, String)>,
        /// The body.
        body: ReplyBody,
        /// For the default body of a 408: the queue state to report.
        queue_state: Option<String>,
        /// For the default body of a 408: the reason to report.
        queue_state_reason: Option<String>,
    },
    /// Close the connection without answering.
    Drop,
    /// Answer 200 with a body that is not valid JSON.
    Malformed,
    /// retrieve_future: answer `try_again` for this poll.
    TryAgain {
        /// `queue_state` of the answer.
        queue_state: String,
        /// `queue_state_reason` of the answer.
        queue_state_reason: Option<String>,
    },
    /// retrieve_future: answer `complete_metadata` for this poll.
    CompleteMetadata,
    /// retrieve_future: answer a failed future for this poll.
    Fail(FailSpec),
    /// Only delay, then answer normally.
    Pass,
}

/// A failed-future answer.
#[derive(Clone, Debug, PartialEq)]
pub struct FailSpec {
    /// `category` (`user`, `server`, `unknown` or anything else).
    pub category: String,
    /// `error` message.
    pub error: String,
}

/// What happens to a future over its life, set when it is created.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fate {
    /// Fail with this error once ready.
    pub fail: Option<FailSpec>,
    /// Never complete.
    pub stuck: bool,
    /// Answer this many `try_again` to the first polls, at once.
    pub try_again: u32,
    /// `queue_state` of those answers.
    pub queue_state: Option<String>,
    /// `queue_state_reason` of those answers.
    pub queue_state_reason: Option<String>,
    /// Answer `complete_metadata` once before the result.
    pub complete_metadata: bool,
    /// Overrides the global latency.
    pub latency: Option<Latency>,
}

/// What a rule does.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleAction {
    /// A call rule: an answer, after `delay_ms`.
    Call {
        /// The answer.
        action: CallAction,
        /// Wait this long first.
        delay_ms: u64,
    },
    /// A future rule.
    Future(Fate),
}

/// One validated rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Optional label, echoed in stats and the log.
    pub name: Option<String>,
    /// What it applies to.
    pub target: Target,
    /// When it fires.
    pub matcher: Match,
    /// What it does.
    pub action: RuleAction,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    endpoint: String,
    #[serde(default, rename = "match")]
    matcher: Match,
    #[serde(default)]
    action: RawAction,
    name: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    status: Option<u16>,
    headers: Option<BTreeMap<String, String>>,
    body: Option<Value>,
    body_raw: Option<String>,
    #[serde(default)]
    empty_body: bool,
    body_bytes: Option<u64>,
    #[serde(default)]
    chunked: bool,
    queue_state: Option<String>,
    queue_state_reason: Option<String>,
    #[serde(default)]
    drop: bool,
    #[serde(default)]
    malformed: bool,
    delay_ms: Option<u64>,
    try_again: Option<RawTryAgain>,
    #[serde(default)]
    complete_metadata: bool,
    fail: Option<RawFail>,
    #[serde(default)]
    stuck: bool,
    latency_ms: Option<Value>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTryAgain {
    count: Option<u32>,
    queue_state: Option<String>,
    queue_state_reason: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFail {
    category: Option<String>,
    error: Option<String>,
}

impl RawFail {
    fn spec(self) -> FailSpec {
        FailSpec {
            category: self.category.unwrap_or_else(|| "server".into()),
            error: self.error.unwrap_or_else(|| "simulated failure".into()),
        }
    }
}

impl Rule {
    /// Parses and validates one rule.
    pub fn from_value(v: &Value) -> Result<Self, String> {
        let raw: RawRule = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        let target = match raw.endpoint.as_str() {
            "*" => Target::Any,
            "future" => Target::Future,
            name => Target::Endpoint(Endpoint::from_name(name).ok_or_else(|| {
                format!("endpoint: unknown endpoint {name:?} (use a name like \"asample\", \"retrieve_future\", \"*\" or \"future\")")
            })?),
        };
        if let Some(rate) = raw.matcher.rate {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("match.rate: must be in [0, 1], got {rate}"));
            }
        }
        let is_poll_endpoint = target == Target::Endpoint(Endpoint::RetrieveFuture);
        if raw.matcher.poll.is_some() && !is_poll_endpoint {
            return Err("match.poll: only valid for endpoint \"retrieve_future\"".into());
        }
        let action = if target == Target::Future {
            RuleAction::Future(future_action(raw.action)?)
        } else {
            let delay_ms = raw.action.delay_ms.unwrap_or(0);
            RuleAction::Call {
                action: call_action(raw.action, is_poll_endpoint)?,
                delay_ms,
            }
        };
        Ok(Rule {
            name: raw.name,
            target,
            matcher: raw.matcher,
            action,
        })
    }
}

fn future_action(a: RawAction) -> Result<Fate, String> {
    let call_only = [
        ("status", a.status.is_some()),
        ("headers", a.headers.is_some()),
        ("body", a.body.is_some()),
        ("body_raw", a.body_raw.is_some()),
        ("empty_body", a.empty_body),
        ("body_bytes", a.body_bytes.is_some()),
        ("chunked", a.chunked),
        ("queue_state", a.queue_state.is_some()),
        ("queue_state_reason", a.queue_state_reason.is_some()),
        ("drop", a.drop),
        ("malformed", a.malformed),
        ("delay_ms", a.delay_ms.is_some()),
    ];
    if let Some((key, _)) = call_only.iter().find(|(_, set)| *set) {
        return Err(format!(
            "action.{key}: not valid for endpoint \"future\" (use fail, stuck, try_again, complete_metadata, latency_ms)"
        ));
    }
    let has_try_again = a.try_again.is_some();
    let try_again = a.try_again.unwrap_or_default();
    Ok(Fate {
        fail: a.fail.map(RawFail::spec),
        stuck: a.stuck,
        try_again: if has_try_again {
            try_again.count.unwrap_or(1)
        } else {
            0
        },
        queue_state: try_again.queue_state,
        queue_state_reason: try_again.queue_state_reason,
        complete_metadata: a.complete_metadata,
        latency: a
            .latency_ms
            .as_ref()
            .map(Latency::from_value)
            .transpose()
            .map_err(|e| format!("action.latency_ms: {e}"))?,
    })
}

fn call_action(a: RawAction, is_poll: bool) -> Result<CallAction, String> {
    if a.stuck || a.latency_ms.is_some() {
        return Err("action.stuck / action.latency_ms: only valid for endpoint \"future\"".into());
    }
    let kinds: Vec<&str> = [
        ("status", a.status.is_some()),
        ("drop", a.drop),
        ("malformed", a.malformed),
        ("try_again", a.try_again.is_some()),
        ("complete_metadata", a.complete_metadata),
        ("fail", a.fail.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(k, _)| *k)
    .collect();
    if kinds.len() > 1 {
        return Err(format!("action: choose one of {kinds:?}"));
    }
    let status_only = [
        ("headers", a.headers.is_some()),
        ("body", a.body.is_some()),
        ("body_raw", a.body_raw.is_some()),
        ("empty_body", a.empty_body),
        ("body_bytes", a.body_bytes.is_some()),
        ("chunked", a.chunked),
        ("queue_state", a.queue_state.is_some()),
        ("queue_state_reason", a.queue_state_reason.is_some()),
    ];
    if a.status.is_none() {
        if let Some((key, _)) = status_only.iter().find(|(_, set)| *set) {
            return Err(format!("action.{key}: needs action.status"));
        }
    }
    if !is_poll && (a.try_again.is_some() || a.complete_metadata || a.fail.is_some()) {
        return Err(
            "action.try_again / complete_metadata / fail: only valid for endpoint \"retrieve_future\" (or \"future\")"
                .into(),
        );
    }
    if let Some(status) = a.status {
        if !(100..=999).contains(&status) {
            return Err(format!("action.status: {status} is not an HTTP status"));
        }
        let set = [
            a.body.is_some(),
            a.body_raw.is_some(),
            a.empty_body,
            a.body_bytes.is_some(),
        ];
        if set.iter().filter(|s| **s).count() > 1 {
            return Err("action: choose one of body, body_raw, empty_body, body_bytes".into());
        }
        if a.chunked && a.body_bytes.is_none() {
            return Err("action.chunked: needs action.body_bytes".into());
        }
        let body = match (a.body, a.body_raw, a.empty_body, a.body_bytes) {
            (Some(v), _, _, _) => ReplyBody::Json(v),
            (_, Some(s), _, _) => ReplyBody::Raw(s),
            (_, _, true, _) => ReplyBody::Empty,
            (_, _, _, Some(bytes)) if bytes < crate::padded::MIN_BYTES => {
                return Err(format!(
                    "action.body_bytes: must be at least {}, got {bytes}",
                    crate::padded::MIN_BYTES
                ))
            }
            (_, _, _, Some(bytes)) => ReplyBody::Padded {
                bytes,
                chunked: a.chunked,
            },
            _ => ReplyBody::Default,
        };
        return Ok(CallAction::Respond {
            status,
            headers: a.headers.unwrap_or_default().into_iter().collect(),
            body,
            queue_state: a.queue_state,
            queue_state_reason: a.queue_state_reason,
        });
    }
    if a.drop {
        return Ok(CallAction::Drop);
    }
    if a.malformed {
        return Ok(CallAction::Malformed);
    }
    if let Some(t) = a.try_again {
        return Ok(CallAction::TryAgain {
            queue_state: t.queue_state.unwrap_or_else(|| "active".into()),
            queue_state_reason: t.queue_state_reason,
        });
    }
    if a.complete_metadata {
        return Ok(CallAction::CompleteMetadata);
    }
    if let Some(f) = a.fail {
        return Ok(CallAction::Fail(f.spec()));
    }
    if a.delay_ms.is_some() {
        return Ok(CallAction::Pass);
    }
    Err("action: empty (set status, drop, malformed, delay_ms, try_again, complete_metadata or fail)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn future_fates() {
        let r = Rule::from_value(&json!({"endpoint": "future",
            "action": {"try_again": {"count": 3, "queue_state": "paused_capacity"}, "complete_metadata": true}}))
        .unwrap();
        match r.action {
            RuleAction::Future(f) => {
                assert_eq!(f.try_again, 3);
                assert_eq!(f.queue_state.as_deref(), Some("paused_capacity"));
                assert!(f.complete_metadata);
            }
            other => panic!("{other:?}"),
        }
    }
}
