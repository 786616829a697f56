//! The JSON wire types of the Tinker API (`shared/PROTOCOL.md`).
//!
//! Request bodies serialize exactly as the official Python SDK sends them
//! (`None` fields dropped, the SDK's defaults always present). Answers are
//! parsed leniently: unknown keys are ignored, as the SDK's pydantic
//! models do.
//!
//! ```
//! use tinkex_core::wire::{ModelInput, SamplingParams};
//! let prompt = ModelInput::from_tokens(vec![1, 2, 3]);
//! assert_eq!(
//!     serde_json::to_string(&prompt).unwrap(),
//!     r#"{"chunks":[{"type":"encoded_text","tokens":[1,2,3]}]}"#
//! );
//! let params = SamplingParams { max_tokens: Some(32), ..SamplingParams::default() };
//! assert_eq!(
//!     serde_json::to_string(&params).unwrap(),
//!     r#"{"max_tokens":32,"temperature":1.0,"top_k":-1,"top_p":1.0}"#
//! );
//! ```

use serde::{Deserialize, Deserializer, Serialize};

mod futures;
mod session;

pub use futures::{FutureCompletion, FuturesAnswer, FuturesRetrieveRequest, FuturesTarget};
pub use session::{
    ClientConfigRequest, CreateSamplingSessionAnswer, CreateSamplingSessionRequest,
    CreateSessionAnswer, CreateSessionRequest, FinishReason, FinishReasonBody,
    FinishSessionRequest, HeartbeatRequest, JoinSamplingSessionAnswer, JoinSamplingSessionRequest,
    SamplerInfo, ServerFlags,
};

/// Estimated wire bytes per prompt token (the Python SDK's estimate).
pub const BYTES_PER_TOKEN: u64 = 10;

/// A prompt: a sequence of chunks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ModelInput {
    /// The chunks, in order.
    pub chunks: Vec<Chunk>,
}

impl ModelInput {
    /// A prompt of one encoded-text chunk.
    pub fn from_tokens(tokens: Vec<i32>) -> ModelInput {
        ModelInput {
            chunks: vec![Chunk::EncodedText { tokens }],
        }
    }

    /// The number of prompt tokens in encoded-text chunks.
    pub fn token_count(&self) -> usize {
        self.chunks.iter().map(Chunk::token_count).sum()
    }

    /// The Python SDK's size estimate, which picks the 429 fallback backoff
    /// and charges the dispatch bytes budget: 10 bytes per token.
    pub fn estimated_bytes(&self) -> u64 {
        self.chunks.iter().map(Chunk::estimated_bytes).sum()
    }
}

/// One chunk of a prompt. Internally tagged by `type`, so new chunk kinds
/// (images) are new variants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Chunk {
    /// Token ids: `{"type":"encoded_text","tokens":[...]}`.
    EncodedText {
        /// The token ids.
        tokens: Vec<i32>,
    },
}

impl Chunk {
    /// Tokens this chunk contributes to the prompt.
    pub fn token_count(&self) -> usize {
        match self {
            Chunk::EncodedText { tokens } => tokens.len(),
        }
    }

    /// Estimated wire bytes of this chunk.
    pub fn estimated_bytes(&self) -> u64 {
        match self {
            Chunk::EncodedText { tokens } => tokens.len() as u64 * BYTES_PER_TOKEN,
        }
    }
}

/// Stop sequences: a string, a list of strings, or a list of token ids.
/// An empty list disables every stop token, EOS included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    Text(String),
    /// Several stop strings.
    Texts(Vec<String>),
    /// Stop token ids.
    Tokens(Vec<i32>),
}

/// Sampling parameters. `None` fields are left out of the JSON, as the SDK
/// does; the defaults (temperature 1.0, top_k −1, top_p 1.0) are always sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Maximum tokens to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Random seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Sampling temperature.
    #[serde(default = "one")]
    pub temperature: f64,
    /// Top-k cut-off; −1 disables it.
    #[serde(default = "minus_one")]
    pub top_k: i32,
    /// Nucleus cut-off.
    #[serde(default = "one")]
    pub top_p: f64,
}

fn one() -> f64 {
    1.0
}

fn minus_one() -> i32 {
    -1
}

impl Default for SamplingParams {
    fn default() -> SamplingParams {
        SamplingParams {
            max_tokens: None,
            seed: None,
            stop: None,
            temperature: 1.0,
            top_k: -1,
            top_p: 1.0,
        }
    }
}

/// The body of `POST /api/v1/asample`. Borrows the prompt so a resend
/// costs no copy of it.
#[derive(Debug, Serialize)]
pub struct SampleRequest<'a> {
    /// Always `"sample"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The sampling session.
    pub sampling_session_id: &'a str,
    /// The attempt's sequence number; the server derives the request id
    /// from (`sampling_session_id`, `seq_id`).
    pub seq_id: u64,
    /// Completions wanted.
    pub num_samples: u32,
    /// The prompt.
    pub prompt: &'a ModelInput,
    /// Sampling parameters.
    pub sampling_params: &'a SamplingParams,
    /// Whether to return prompt logprobs.
    pub prompt_logprobs: bool,
    /// Top-k prompt logprobs per position (0 = none).
    pub topk_prompt_logprobs: u32,
    /// Top-k logprobs per sampled token; this client always sends 0.
    pub topk_sample_logprobs: u32,
    /// Alternative prompt tokens; this client always sends 0.
    pub prompt_alt_tokens_k: u32,
    /// Stability info; this client always sends `false`.
    pub record_stability_info: bool,
}

/// The answer of `asample`: a future to poll, and one id per sample.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AsampleAnswer {
    /// The future's id.
    pub request_id: String,
    /// One id per requested sample (absent from older servers).
    #[serde(default)]
    pub sample_sequence_ids: Option<Vec<String>>,
}

/// The body of `POST /api/v1/retrieve_future`.
#[derive(Debug, Serialize)]
pub struct RetrieveFutureRequest<'a> {
    /// The future's id.
    pub request_id: &'a str,
    /// `true` until the server has answered `complete_metadata` once.
    pub allow_metadata_only: bool,
}

/// Any JSON answer of `retrieve_future`, in one pass. Which case it is
/// follows the SDK's order: `type == "try_again"`, then
/// `status == "complete_metadata"`, then the presence of `error`, else a
/// result.
#[derive(Debug, Default, Deserialize)]
pub struct PollAnswer {
    /// `"try_again"` for a pending future, `"sample"` for a result.
    #[serde(rename = "type", default, deserialize_with = "lenient_string")]
    pub kind: Option<String>,
    /// `"complete_metadata"` when only the result's size is given.
    #[serde(default, deserialize_with = "lenient_string")]
    pub status: Option<String>,
    /// Present (whatever its value) when the request failed.
    #[serde(default, deserialize_with = "present")]
    pub error: Option<serde_json::Value>,
    /// The failure's category: `user`, `server` or `unknown`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub category: Option<String>,
    /// `active`, `paused_capacity` or `paused_rate_limit`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub queue_state: Option<String>,
    /// Why the queue is paused, in words.
    #[serde(default, deserialize_with = "lenient_string")]
    pub queue_state_reason: Option<String>,
    /// Size of the result announced by `complete_metadata`.
    #[serde(default)]
    pub response_payload_size: Option<u64>,
    /// The sampled sequences of a JSON result.
    #[serde(default)]
    pub sequences: Option<Vec<JsonSequence>>,
    /// Prompt logprobs of a JSON result (`null` where none).
    #[serde(default)]
    pub prompt_logprobs: Option<Vec<Option<f32>>>,
    /// Top-k prompt logprobs of a JSON result: per position `null` or a
    /// list of `[token, logprob]` pairs.
    #[serde(default)]
    pub topk_prompt_logprobs: Option<Vec<crate::sampling::TopkPosition>>,
    /// Prompt tokens billed as prefix-cache hits.
    #[serde(default)]
    pub prompt_cache_hit_tokens: Option<i64>,
}

/// One sequence of a JSON result.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JsonSequence {
    /// Generated token ids.
    pub tokens: Vec<i32>,
    /// Their logprobs, when the server sent them.
    #[serde(default)]
    pub logprobs: Option<Vec<f32>>,
    /// `"stop"` or `"length"`.
    pub stop_reason: String,
}

/// Keeps a string; any other JSON value (or `null`) becomes `None`, so an
/// odd field never turns a usable answer into a decode error.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

/// `Some(value)` whenever the key is present, even with `null`: the SDK
/// treats any answer with an `error` key as a failure.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sample_request_matches_the_sdk() {
        let prompt = ModelInput::from_tokens(vec![1, 2, 3]);
        let params = SamplingParams {
            max_tokens: Some(3),
            ..SamplingParams::default()
        };
        let req = SampleRequest {
            kind: "sample",
            sampling_session_id: "s:sample:0",
            seq_id: 7,
            num_samples: 2,
            prompt: &prompt,
            sampling_params: &params,
            prompt_logprobs: false,
            topk_prompt_logprobs: 0,
            topk_sample_logprobs: 0,
            prompt_alt_tokens_k: 0,
            record_stability_info: false,
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(
            v,
            json!({"num_samples":2,"prompt":{"chunks":[{"tokens":[1,2,3],"type":"encoded_text"}]},
                   "sampling_params":{"max_tokens":3,"temperature":1.0,"top_k":-1,"top_p":1.0},
                   "sampling_session_id":"s:sample:0","seq_id":7,"prompt_logprobs":false,
                   "topk_prompt_logprobs":0,"topk_sample_logprobs":0,"prompt_alt_tokens_k":0,
                   "record_stability_info":false,"type":"sample"})
        );
    }

    #[test]
    fn stop_shapes() {
        for (stop, text) in [
            (Stop::Text("x".into()), r#""x""#),
            (Stop::Texts(vec!["a".into()]), r#"["a"]"#),
            (Stop::Tokens(vec![5, 6]), "[5,6]"),
        ] {
            assert_eq!(serde_json::to_string(&stop).unwrap(), text);
            assert_eq!(serde_json::from_str::<Stop>(text).unwrap(), stop);
        }
        let p = SamplingParams {
            seed: Some(1),
            stop: Some(Stop::Tokens(vec![])),
            temperature: 0.7,
            ..SamplingParams::default()
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"seed":1,"stop":[],"temperature":0.7,"top_k":-1,"top_p":1.0}"#
        );
    }

    #[test]
    fn poll_answers() {
        let a: PollAnswer = serde_json::from_str(
            r#"{"type":"try_again","request_id":"r","queue_state":"paused_capacity","x":1}"#,
        )
        .unwrap();
        assert_eq!(a.kind.as_deref(), Some("try_again"));
        assert_eq!(a.queue_state.as_deref(), Some("paused_capacity"));
        let a: PollAnswer = serde_json::from_str(r#"{"error":null,"category":7}"#).unwrap();
        assert_eq!(a.error, Some(serde_json::Value::Null));
        assert_eq!(a.category, None);
        let a: PollAnswer = serde_json::from_str(r#"{"type":"sample","sequences":[{"tokens":[1],"logprobs":null,"stop_reason":"stop"}],"prompt_logprobs":[null,-1.5],"topk_prompt_logprobs":[null,[[3,-0.5]]]}"#).unwrap();
        assert!(a.error.is_none());
        assert_eq!(a.prompt_logprobs, Some(vec![None, Some(-1.5)]));
        assert_eq!(
            a.topk_prompt_logprobs,
            Some(vec![None, Some(vec![(3, -0.5)])])
        );
    }
}
