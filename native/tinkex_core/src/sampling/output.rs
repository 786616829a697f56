//! The result of one sample, as every decoder (protobuf or JSON) produces it.

use crate::error::{Error, ErrorKind};
use crate::wire::PollAnswer;

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// A stop sequence or EOS was produced.
    Stop,
    /// `max_tokens` was reached.
    Length,
}

impl StopReason {
    /// Parses the JSON value (`"stop"` / `"length"`).
    pub fn parse(s: &str) -> Option<StopReason> {
        match s {
            "stop" => Some(StopReason::Stop),
            "length" => Some(StopReason::Length),
            _ => None,
        }
    }

    /// The wire/atom name.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Stop => "stop",
            StopReason::Length => "length",
        }
    }
}

/// One generated sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    /// Generated token ids.
    pub tokens: Vec<i32>,
    /// One logprob per generated token, when the server sent them.
    pub logprobs: Option<Vec<f32>>,
    /// Why generation stopped.
    pub stop_reason: StopReason,
    /// The id the server gave this sample when it was submitted
    /// (`sample_sequence_ids` of the attempt that produced the result).
    pub sequence_id: Option<String>,
}

/// Top-k logprobs at one prompt position: `None` where none were computed,
/// else up to k `(token_id, logprob)` pairs.
pub type TopkPosition = Option<Vec<(i32, f32)>>;

/// A finished sample.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SampleOutput {
    /// The generated sequences, `num_samples` of them.
    pub sequences: Vec<Sequence>,
    /// Per prompt token, when requested: `None` where no logprob was
    /// computed (the first token, and NaN on the protobuf wire).
    pub prompt_logprobs: Option<Vec<Option<f32>>>,
    /// Top-k prompt logprobs per position, when requested.
    pub topk_prompt_logprobs: Option<Vec<TopkPosition>>,
    /// Prompt tokens billed as prefix-cache hits.
    pub prompt_cache_hit_tokens: i64,
    /// The future's id.
    pub request_id: String,
}

pub(crate) fn decode_error(request_id: &str, msg: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Decode,
        format!("Error decoding the result of request {request_id}: {msg}"),
    )
    .with_request_id(request_id)
}

impl SampleOutput {
    /// Builds the output from a JSON result (older servers, or a server
    /// that ignores `Accept: application/x-protobuf`).
    pub(crate) fn from_json(answer: PollAnswer, request_id: &str) -> Result<SampleOutput, Error> {
        let Some(seqs) = answer.sequences else {
            return Err(decode_error(request_id, "the answer has no `sequences`"));
        };
        let mut sequences = Vec::with_capacity(seqs.len());
        for s in seqs {
            let stop_reason = StopReason::parse(&s.stop_reason).ok_or_else(|| {
                decode_error(
                    request_id,
                    format!("unknown stop_reason {:?}", s.stop_reason),
                )
            })?;
            sequences.push(Sequence {
                tokens: s.tokens,
                logprobs: s.logprobs,
                stop_reason,
                sequence_id: None,
            });
        }
        Ok(SampleOutput {
            sequences,
            prompt_logprobs: answer.prompt_logprobs,
            topk_prompt_logprobs: answer.topk_prompt_logprobs,
            prompt_cache_hit_tokens: answer.prompt_cache_hit_tokens.unwrap_or(0),
            request_id: request_id.to_owned(),
        })
    }

    /// Stamps each sequence with the id the server gave it at submission.
    /// The SDK asserts one id per sequence; a server that sends none (an
    /// older one) leaves the ids unset.
    pub(crate) fn attach_sequence_ids(&mut self, ids: Option<Vec<String>>) -> Result<(), Error> {
        let Some(ids) = ids else { return Ok(()) };
        if ids.len() != self.sequences.len() {
            return Err(decode_error(
                &self.request_id,
                format!(
                    "{} sample_sequence_ids for {} sequences",
                    ids.len(),
                    self.sequences.len()
                ),
            ));
        }
        for (seq, id) in self.sequences.iter_mut().zip(ids) {
            seq.sequence_id = Some(id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_result() {
        let a: PollAnswer = serde_json::from_str(
            r#"{"type":"sample","sequences":[{"tokens":[1,2],"logprobs":[-0.1,-0.2],"stop_reason":"length"}],"prompt_logprobs":null,"prompt_cache_hit_tokens":3}"#,
        )
        .unwrap();
        let mut out = SampleOutput::from_json(a, "r1").unwrap();
        assert_eq!(out.sequences[0].stop_reason, StopReason::Length);
        assert_eq!(out.prompt_cache_hit_tokens, 3);
        assert_eq!(out.request_id, "r1");
        out.attach_sequence_ids(Some(vec!["q".into()])).unwrap();
        assert_eq!(out.sequences[0].sequence_id.as_deref(), Some("q"));
        let e = out.attach_sequence_ids(Some(vec![])).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Decode);
    }

    #[test]
    fn bad_json_results() {
        let a: PollAnswer =
            serde_json::from_str(r#"{"sequences":[{"tokens":[1],"stop_reason":"eos"}]}"#).unwrap();
        let e = SampleOutput::from_json(a, "r").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Decode);
        assert!(!e.retryable);
        assert_eq!(e.request_id.as_deref(), Some("r"));
        let a: PollAnswer = serde_json::from_str(r#"{"type":"sample"}"#).unwrap();
        assert!(SampleOutput::from_json(a, "r").is_err());
    }
}
