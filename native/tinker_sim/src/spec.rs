//! Parsing and validation of an asample request into a [`SampleSpec`], and
//! the key (`K`, see [`crate::results`]) that determines its result.

use crate::request::{FieldError, Fields};
use crate::results::{fnv1a64, ResultKey, SampleResult};
use serde_json::Value;

/// `max_tokens` used when a request leaves it out.
pub const DEFAULT_MAX_TOKENS: u32 = 16;
/// Largest accepted `max_tokens`.
pub const MAX_MAX_TOKENS: i64 = 131_072;
/// Largest accepted `num_samples`.
pub const MAX_NUM_SAMPLES: i64 = 1024;
/// Largest accepted `topk_prompt_logprobs` / `topk_sample_logprobs`.
pub const MAX_TOPK: i64 = 64;

/// The `sampling_params` of an asample request.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Tokens per sequence; [`DEFAULT_MAX_TOKENS`] when `None`.
    pub max_tokens: Option<u32>,
    /// Sampling temperature (default 1.0).
    pub temperature: f64,
    /// Top-k cut-off (default -1).
    pub top_k: i64,
    /// Nucleus cut-off (default 1.0).
    pub top_p: f64,
    /// Sampling seed.
    pub seed: Option<i64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            max_tokens: None,
            temperature: 1.0,
            top_k: -1,
            top_p: 1.0,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Params with `max_tokens` set and every other field at its default.
    pub fn with_max_tokens(max_tokens: u32) -> Self {
        Self {
            max_tokens: Some(max_tokens),
            ..Self::default()
        }
    }

    /// `max_tokens`, or [`DEFAULT_MAX_TOKENS`] when absent.
    pub fn effective_max_tokens(&self) -> u32 {
        self.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)
    }
}

/// One chunk of a prompt.
#[derive(Clone, Debug, PartialEq)]
pub enum PromptChunk {
    /// `{"type":"encoded_text","tokens":[...]}`.
    Tokens(Vec<i32>),
    /// `{"type":"image",...}` or `{"type":"image_asset_pointer",...}`,
    /// validated (see [`crate::image`]), kept as its JSON value.
    Image {
        /// The chunk as sent.
        json: Value,
        /// Prompt positions it takes: its `expected_tokens`, 0 when absent
        /// (the simulator does not decode images to count them).
        tokens: u32,
    },
    /// Any other chunk type, kept as its JSON value; it takes no positions.
    Other(Value),
}

/// A parsed and validated asample request.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleSpec {
    /// The sampling session.
    pub sampling_session_id: String,
    /// The client's sequence number of this attempt.
    pub seq_id: i64,
    /// Sequences to produce.
    pub num_samples: u32,
    /// The prompt.
    pub prompt: Vec<PromptChunk>,
    /// Sampling parameters.
    pub params: SamplingParams,
    /// Whether `prompt_logprobs` was requested.
    pub prompt_logprobs: bool,
    /// `topk_prompt_logprobs` (0 = none).
    pub topk_prompt_logprobs: u32,
    /// `topk_sample_logprobs` (0 = none).
    pub topk_sample_logprobs: u32,
    /// `prompt_logprobs_last_n` (only the last N prompt positions are scored).
    pub prompt_logprobs_last_n: Option<u32>,
    /// `prompt_alt_tokens_k` (0 = none).
    pub prompt_alt_tokens_k: u32,
}

impl SampleSpec {
    /// A one-sample request whose prompt is a single text chunk.
    pub fn from_tokens(
        sampling_session_id: &str,
        seq_id: i64,
        prompt_tokens: &[i32],
        params: SamplingParams,
    ) -> Self {
        Self {
            sampling_session_id: sampling_session_id.to_string(),
            seq_id,
            num_samples: 1,
            prompt: vec![PromptChunk::Tokens(prompt_tokens.to_vec())],
            params,
            prompt_logprobs: false,
            topk_prompt_logprobs: 0,
            topk_sample_logprobs: 0,
            prompt_logprobs_last_n: None,
            prompt_alt_tokens_k: 0,
        }
    }

    /// Parses an asample body (see `docs/protocol.md`), naming the first bad field.
    pub fn from_json(body: Option<&Value>) -> Result<Self, FieldError> {
        let f = Fields::of(body)?;
        if let Some(t) = f.opt_string("type")? {
            if t != "sample" {
                return Err(FieldError::new("type", "must be \"sample\""));
            }
        }
        let sampling_session_id = f.string("sampling_session_id")?.to_string();
        let seq_id = f.int("seq_id")?;
        let num_samples = f.opt_int("num_samples")?.unwrap_or(1);
        if !(1..=MAX_NUM_SAMPLES).contains(&num_samples) {
            return Err(FieldError::new(
                "num_samples",
                format!("must be in 1..={MAX_NUM_SAMPLES}, got {num_samples}"),
            ));
        }
        let prompt = parse_prompt(&f.object("prompt")?)?;
        let sp = f.object("sampling_params")?;
        let max_tokens = match sp.opt_int("max_tokens")? {
            None => None,
            Some(m) if (0..=MAX_MAX_TOKENS).contains(&m) => Some(m as u32),
            Some(m) => {
                return Err(FieldError::new(
                    "sampling_params.max_tokens",
                    format!("must be in 0..={MAX_MAX_TOKENS}, got {m}"),
                ))
            }
        };
        let params = SamplingParams {
            max_tokens,
            temperature: sp.opt_f64("temperature")?.unwrap_or(1.0),
            top_k: sp.opt_int("top_k")?.unwrap_or(-1),
            top_p: sp.opt_f64("top_p")?.unwrap_or(1.0),
            seed: sp.opt_int("seed")?,
        };
        let topk = |key: &str| -> Result<u32, FieldError> {
            let k = f.opt_int(key)?.unwrap_or(0);
            if !(0..=MAX_TOPK).contains(&k) {
                return Err(FieldError::new(
                    key,
                    format!("must be in 0..={MAX_TOPK}, got {k}"),
                ));
            }
            Ok(k as u32)
        };
        let topk_prompt_logprobs = topk("topk_prompt_logprobs")?;
        let topk_sample_logprobs = topk("topk_sample_logprobs")?;
        let prompt_alt_tokens_k = topk("prompt_alt_tokens_k")?;
        let prompt_logprobs_last_n = match f.opt_int("prompt_logprobs_last_n")? {
            None => None,
            Some(n) if n >= 1 && n <= i64::from(u32::MAX) => Some(n as u32),
            Some(n) => {
                return Err(FieldError::new(
                    "prompt_logprobs_last_n",
                    format!("must be 1 or greater, got {n}"),
                ))
            }
        };
        if body
            .and_then(|b| b.get("target_prompt_logprobs"))
            .is_some_and(|v| !v.is_null())
        {
            return Err(FieldError::new(
                "target_prompt_logprobs",
                "is not supported by tinker_sim",
            ));
        }
        f.opt_bool("record_stability_info")?;
        Ok(Self {
            sampling_session_id,
            seq_id,
            num_samples: num_samples as u32,
            prompt,
            params,
            prompt_logprobs: f.opt_bool("prompt_logprobs")?.unwrap_or(false),
            topk_prompt_logprobs,
            topk_sample_logprobs,
            prompt_logprobs_last_n,
            prompt_alt_tokens_k,
        })
    }

    /// The bytes `K` hashed into the result seed (see the module docs).
    pub fn key_bytes(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(64);
        k.extend_from_slice(self.sampling_session_id.as_bytes());
        k.push(0);
        k.extend_from_slice(&self.seq_id.to_le_bytes());
        for chunk in &self.prompt {
            match chunk {
                PromptChunk::Tokens(tokens) => {
                    for t in tokens {
                        k.extend_from_slice(&t.to_le_bytes());
                    }
                }
                PromptChunk::Image { json: v, .. } | PromptChunk::Other(v) => {
                    k.push(0xFE);
                    k.extend_from_slice(v.to_string().as_bytes());
                    k.push(0);
                }
            }
        }
        k.push(0xFF);
        let p = &self.params;
        k.extend_from_slice(&i64::from(p.effective_max_tokens()).to_le_bytes());
        k.extend_from_slice(&p.temperature.to_bits().to_le_bytes());
        k.extend_from_slice(&p.top_k.to_le_bytes());
        k.extend_from_slice(&p.top_p.to_bits().to_le_bytes());
        k.extend_from_slice(&p.seed.unwrap_or(i64::MIN).to_le_bytes());
        k
    }

    /// Number of prompt positions: text tokens plus each image's
    /// `expected_tokens`.
    pub fn prompt_len(&self) -> usize {
        self.prompt
            .iter()
            .map(|c| match c {
                PromptChunk::Tokens(t) => t.len(),
                PromptChunk::Image { tokens, .. } => *tokens as usize,
                PromptChunk::Other(_) => 0,
            })
            .sum()
    }

    /// The compact key that determines the result.
    pub fn key(&self) -> ResultKey {
        ResultKey {
            hash: fnv1a64(&self.key_bytes()),
            prompt_len: self.prompt_len() as u32,
            num_samples: self.num_samples,
            max_tokens: self.params.effective_max_tokens(),
            prompt_logprobs: self.prompt_logprobs,
            topk_prompt: self.topk_prompt_logprobs,
            topk_sample: self.topk_sample_logprobs,
            prompt_last_n: self.prompt_logprobs_last_n.unwrap_or(0),
            alt_k: self.prompt_alt_tokens_k,
        }
    }

    /// The result the simulator produces for this request.
    pub fn expected(&self) -> SampleResult {
        self.key().result()
    }
}

fn parse_prompt(prompt: &Fields<'_>) -> Result<Vec<PromptChunk>, FieldError> {
    let chunks = prompt.array("chunks")?;
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let name = format!("prompt.chunks[{i}]");
            let obj = chunk
                .as_object()
                .ok_or_else(|| FieldError::new(&name, "must be an object"))?;
            let ty = match obj.get("type") {
                None | Some(Value::Null) => "encoded_text",
                Some(Value::String(s)) => s.as_str(),
                Some(_) => {
                    return Err(FieldError::new(&format!("{name}.type"), "must be a string"))
                }
            };
            match ty {
                "encoded_text" => {}
                "image" | "image_asset_pointer" => {
                    let tokens = crate::image::check(obj, ty, &name)?;
                    return Ok(PromptChunk::Image {
                        json: chunk.clone(),
                        tokens,
                    });
                }
                _ => return Ok(PromptChunk::Other(chunk.clone())),
            }
            let tokens = match obj.get("tokens") {
                Some(Value::Array(items)) => items,
                Some(_) => {
                    return Err(FieldError::new(
                        &format!("{name}.tokens"),
                        "must be an array",
                    ))
                }
                None => return Err(FieldError::new(&format!("{name}.tokens"), "is required")),
            };
            tokens
                .iter()
                .enumerate()
                .map(|(j, t)| {
                    t.as_i64()
                        .and_then(|t| i32::try_from(t).ok())
                        .ok_or_else(|| {
                            FieldError::new(
                                &format!("{name}.tokens[{j}]"),
                                "must be a 32-bit integer",
                            )
                        })
                })
                .collect::<Result<Vec<i32>, _>>()
                .map(PromptChunk::Tokens)
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// An asample body the unit tests of the crate share.
    pub(crate) fn body(seq_id: i64) -> Value {
        json!({"type":"sample","sampling_session_id":"s:sample:0","seq_id":seq_id,"num_samples":2,
               "prompt":{"chunks":[{"type":"encoded_text","tokens":[1,2]},{"type":"encoded_text","tokens":[3]}]},
               "sampling_params":{"max_tokens":5,"temperature":1.0,"top_k":-1,"top_p":1.0},
               "prompt_logprobs":true,"topk_prompt_logprobs":0})
    }

    #[test]
    fn images_take_their_expected_tokens() {
        let mut b = body(0);
        b["prompt"]["chunks"] = json!([
            {"type":"encoded_text","tokens":[1,2]},
            {"type":"image","data":"iVBORw==","format":"png","expected_tokens":3},
            {"type":"image_asset_pointer","location":"s3://b/c.jpg","format":"jpeg"},
            {"type":"encoded_text","tokens":[3]}]);
        let spec = SampleSpec::from_json(Some(&b)).unwrap();
        assert_eq!(spec.prompt_len(), 6);
        let lp = spec.expected().prompt_logprobs.unwrap();
        assert_eq!(lp.len(), 6);
        // The image's bytes are part of the result's key.
        let mut other = b.clone();
        other["prompt"]["chunks"][1]["data"] = json!("iVBORx==");
        let other = SampleSpec::from_json(Some(&other)).unwrap();
        assert_ne!(spec.key().hash, other.key().hash);
        b["prompt"]["chunks"][1]["format"] = json!("gif");
        let e = SampleSpec::from_json(Some(&b)).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.status),
            ("prompt.chunks[1].format", 422)
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let mut b = body(0);
        b["sampling_params"]["max_tokens"] = json!("many");
        let e = SampleSpec::from_json(Some(&b)).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.status),
            ("sampling_params.max_tokens", 422)
        );
        let mut b = body(0);
        b["prompt"]["chunks"][1]["tokens"][0] = json!(1.5);
        let e = SampleSpec::from_json(Some(&b)).unwrap_err();
        assert_eq!(e.field, "prompt.chunks[1].tokens[0]");
        let mut b = body(0);
        b.as_object_mut().unwrap().remove("seq_id");
        assert_eq!(SampleSpec::from_json(Some(&b)).unwrap_err().field, "seq_id");
        assert_eq!(SampleSpec::from_json(None).unwrap_err().status, 400);
    }
}
