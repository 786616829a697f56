//! What to sample: the prompt, the parameters and the options of one
//! `sample` or `compute_logprobs` call.

use bytes::Bytes;

use crate::error::{Error, ErrorKind};
use crate::wire::{ModelInput, SampleRequest, SamplingParams};

/// The public SDK method a request belongs to (`x-sdk-method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SdkMethod {
    /// `SamplingClient.sample`.
    Sample,
    /// `SamplingClient.compute_logprobs`.
    ComputeLogprobs,
}

impl SdkMethod {
    /// The header value.
    pub fn header(self) -> &'static str {
        match self {
            SdkMethod::Sample => "SamplingClient.sample",
            SdkMethod::ComputeLogprobs => "SamplingClient.compute_logprobs",
        }
    }
}

/// One sample request, as the caller asked for it. Validation (non-empty
/// prompt, sane parameters) is the Elixir side's job; this type only
/// carries the values.
///
/// ```
/// use tinkex_core::sampling::SampleSpec;
/// use tinkex_core::wire::{ModelInput, SamplingParams};
/// let spec = SampleSpec::new(ModelInput::from_tokens(vec![1, 2, 3]), SamplingParams::default(), 4);
/// assert_eq!(spec.estimated_bytes(), 30);
/// let lp = SampleSpec::compute_logprobs(ModelInput::from_tokens(vec![1, 2]));
/// assert_eq!((lp.num_samples, lp.params.max_tokens, lp.prompt_logprobs), (1, Some(1), true));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SampleSpec {
    /// The prompt.
    pub prompt: ModelInput,
    /// Sampling parameters.
    pub params: SamplingParams,
    /// Completions wanted.
    pub num_samples: u32,
    /// Whether to return prompt logprobs.
    pub prompt_logprobs: bool,
    /// Top-k prompt logprobs per position (0 = none).
    pub topk_prompt_logprobs: u32,
    /// The SDK method reported in `x-sdk-method`.
    pub method: SdkMethod,
}

impl SampleSpec {
    /// A `sample` of `num_samples` completions, without prompt logprobs.
    pub fn new(prompt: ModelInput, params: SamplingParams, num_samples: u32) -> SampleSpec {
        SampleSpec {
            prompt,
            params,
            num_samples,
            prompt_logprobs: false,
            topk_prompt_logprobs: 0,
            method: SdkMethod::Sample,
        }
    }

    /// `compute_logprobs`: one sample of one token with prompt logprobs,
    /// whose `prompt_logprobs` is the answer.
    pub fn compute_logprobs(prompt: ModelInput) -> SampleSpec {
        SampleSpec {
            prompt,
            params: SamplingParams {
                max_tokens: Some(1),
                ..SamplingParams::default()
            },
            num_samples: 1,
            prompt_logprobs: true,
            topk_prompt_logprobs: 0,
            method: SdkMethod::ComputeLogprobs,
        }
    }

    /// The prompt's estimated size (10 bytes per token).
    pub fn estimated_bytes(&self) -> u64 {
        self.prompt.estimated_bytes()
    }

    /// The `asample` body for this attempt; serialized once per attempt
    /// and shared by its resends.
    pub fn body(&self, sampling_session_id: &str, seq_id: u64) -> Result<Bytes, Error> {
        let req = SampleRequest {
            kind: "sample",
            sampling_session_id,
            seq_id,
            num_samples: self.num_samples,
            prompt: &self.prompt,
            sampling_params: &self.params,
            prompt_logprobs: self.prompt_logprobs,
            topk_prompt_logprobs: self.topk_prompt_logprobs,
            topk_sample_logprobs: 0,
            prompt_alt_tokens_k: 0,
            record_stability_info: false,
        };
        let mut buf = Vec::with_capacity(256 + self.prompt.token_count() * 7);
        serde_json::to_writer(&mut buf, &req)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("encoding asample: {e}")))?;
        Ok(buf.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_carries_seq_id_and_fixed_fields() {
        let spec = SampleSpec::compute_logprobs(ModelInput::from_tokens(vec![5]));
        let v: serde_json::Value = serde_json::from_slice(&spec.body("sess", 42).unwrap()).unwrap();
        assert_eq!(v["seq_id"], 42);
        assert_eq!(v["sampling_session_id"], "sess");
        assert_eq!(
            v["sampling_params"],
            serde_json::json!({"max_tokens":1,"temperature":1.0,"top_k":-1,"top_p":1.0})
        );
        assert_eq!(v["prompt_logprobs"], true);
        assert_eq!(v["topk_sample_logprobs"], 0);
        assert_eq!(v["prompt_alt_tokens_k"], 0);
        assert_eq!(v["record_stability_info"], false);
        assert_eq!(
            SdkMethod::ComputeLogprobs.header(),
            "SamplingClient.compute_logprobs"
        );
    }
}
