//! Bodies and answers of the session set-up calls (`crate::session`).

use serde::{Deserialize, Serialize};

/// Flags a server may send from `POST /api/v1/client/config`; missing keys
/// take the SDK's defaults and unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ServerFlags {
    /// The retry handler's concurrency (default 2000).
    pub sample_max_concurrent_requests: u64,
    /// Skip the retry handler for `sample` (default false).
    pub sample_no_retries: bool,
    /// Run the stuck watchdog (default true).
    pub sample_enable_stuck_detection: bool,
    /// Prompt bytes in submission at once (default 10 MiB).
    pub sample_dispatch_bytes_semaphore_size: u64,
    /// Result bytes announced by `complete_metadata` held at once (50 MiB).
    pub inflight_response_bytes_semaphore_size: u64,
    /// How long a billing (402) pause may last (default 3600 s).
    pub billing_exception_max_pause_duration_sec: f64,
    /// Session-wide `retrieve_futures` polling (default false; not
    /// implemented: per-request polling stays supported).
    pub sample_use_retrieve_futures: bool,
    /// Clones of a sampling client ask `join_sampling_session` for their
    /// `seq_id` base instead of drawing one (default false).
    pub sample_join_sampling_session: bool,
}

impl Default for ServerFlags {
    fn default() -> ServerFlags {
        ServerFlags {
            sample_max_concurrent_requests: 2000,
            sample_no_retries: false,
            sample_enable_stuck_detection: true,
            sample_dispatch_bytes_semaphore_size: 10 * 1024 * 1024,
            inflight_response_bytes_semaphore_size: 50 * 1024 * 1024,
            billing_exception_max_pause_duration_sec: 3600.0,
            sample_use_retrieve_futures: false,
            sample_join_sampling_session: false,
        }
    }
}

/// The body of `POST /api/v1/client/config`.
#[derive(Debug, Serialize)]
pub struct ClientConfigRequest<'a> {
    /// This client's version.
    pub sdk_version: &'a str,
}

/// The body of `POST /api/v1/create_session`.
#[derive(Debug, Serialize)]
pub struct CreateSessionRequest<'a> {
    /// Always `"create_session"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Free-form tags.
    pub tags: &'a [String],
    /// Free-form metadata (`null` when none).
    pub user_metadata: Option<&'a serde_json::Value>,
    /// This client's version.
    pub sdk_version: &'a str,
}

/// The answer of `create_session`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CreateSessionAnswer {
    /// The new session.
    pub session_id: String,
    /// Messages the server wants the user to see.
    #[serde(default)]
    pub info_message: Option<String>,
    /// A warning for the user.
    #[serde(default)]
    pub warning_message: Option<String>,
    /// An error for the user (the session was still created).
    #[serde(default)]
    pub error_message: Option<String>,
}

/// The body of `POST /api/v1/create_sampling_session`: exactly one of
/// `base_model` and `model_path` is set.
#[derive(Debug, Serialize)]
pub struct CreateSamplingSessionRequest<'a> {
    /// Always `"create_sampling_session"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The owning session.
    pub session_id: &'a str,
    /// A counter per sampling client of the session.
    pub sampling_session_seq_id: u64,
    /// A base model name, e.g. `Qwen/Qwen3-8B`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_model: Option<&'a str>,
    /// Saved weights, `tinker://...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_path: Option<&'a str>,
}

/// The answer of `create_sampling_session`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CreateSamplingSessionAnswer {
    /// The new sampling session.
    pub sampling_session_id: String,
}

/// The body of `POST /api/v1/session_heartbeat`.
#[derive(Debug, Serialize)]
pub struct HeartbeatRequest<'a> {
    /// Always `"session_heartbeat"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The session kept alive.
    pub session_id: &'a str,
}

/// The answer of `GET /api/v1/samplers/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct SamplerInfo {
    /// The sampler's id.
    #[serde(default)]
    pub sampler_id: Option<String>,
    /// The base model it samples from.
    #[serde(default)]
    pub base_model: Option<String>,
    /// The weights it samples with, when not a base model.
    #[serde(default)]
    pub model_path: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flags_default_and_ignore_unknown() {
        let f: ServerFlags = serde_json::from_str("{}").unwrap();
        assert_eq!(f, ServerFlags::default());
        let f: ServerFlags =
            serde_json::from_str(r#"{"sample_max_concurrent_requests":7,"new_flag":true}"#)
                .unwrap();
        assert_eq!(f.sample_max_concurrent_requests, 7);
        assert_eq!(f.sample_dispatch_bytes_semaphore_size, 10 * 1024 * 1024);
    }

    #[test]
    fn session_bodies() {
        let r = CreateSamplingSessionRequest {
            kind: "create_sampling_session",
            session_id: "s",
            sampling_session_seq_id: 0,
            base_model: Some("Qwen/Qwen3-8B"),
            model_path: None,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"type":"create_sampling_session","session_id":"s","sampling_session_seq_id":0,"base_model":"Qwen/Qwen3-8B"})
        );
        let r = CreateSessionRequest {
            kind: "create_session",
            tags: &[],
            user_metadata: None,
            sdk_version: "0.1.0",
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"type":"create_session","tags":[],"user_metadata":null,"sdk_version":"0.1.0"})
        );
    }
}
