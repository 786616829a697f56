//! Conversion between the protobuf `SampleResponse` and [`SampleOutput`].

use prost::bytes::Bytes;
use prost::Message;

use super::{ProtoStopReason, SampleResponse, SampledSequence, TopkLogprobs};
use crate::error::Error;
use crate::sampling::output::decode_error;
use crate::sampling::{SampleOutput, Sequence, StopReason, TopkPosition};

/// The SDK's filler of unused top-k slots (`MASK_LOGPROB`, with token 0).
pub const MASK_LOGPROB: f32 = -99999.0;

fn le_words<T>(
    b: &[u8],
    what: &str,
    request_id: &str,
    f: impl Fn([u8; 4]) -> T,
) -> Result<Vec<T>, Error> {
    if !b.len().is_multiple_of(4) {
        return Err(decode_error(
            request_id,
            format!("{what}: {} bytes is not a multiple of 4", b.len()),
        ));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn topk_positions(t: &TopkLogprobs, request_id: &str) -> Result<Option<Vec<TopkPosition>>, Error> {
    let (n, k) = (t.length as usize, t.k as usize);
    if n == 0 || k == 0 {
        return Ok(None);
    }
    let ids = le_words(
        &t.token_ids,
        "topk token_ids",
        request_id,
        i32::from_le_bytes,
    )?;
    let lps = le_words(&t.logprobs, "topk logprobs", request_id, f32::from_le_bytes)?;
    if ids.len() != n * k || lps.len() != n * k {
        return Err(decode_error(
            request_id,
            format!(
                "topk: {} ids and {} logprobs for {n}×{k}",
                ids.len(),
                lps.len()
            ),
        ));
    }
    let is_mask = |i: usize| ids[i] == 0 && lps[i] == MASK_LOGPROB;
    let positions = (0..n)
        .map(|p| {
            let start = p * k;
            if is_mask(start) {
                return None;
            }
            let mut end = start + k;
            while end > start && is_mask(end - 1) {
                end -= 1;
            }
            Some((start..end).map(|i| (ids[i], lps[i])).collect())
        })
        .collect();
    Ok(Some(positions))
}

/// Decodes a protobuf `SampleResponse` body into a [`SampleOutput`] whose
/// `request_id` is `request_id`. Any malformation is an error of kind
/// `Decode` (not retried).
pub fn decode_sample_response(body: Bytes, request_id: &str) -> Result<SampleOutput, Error> {
    let msg = SampleResponse::decode(body).map_err(|e| decode_error(request_id, e))?;
    let mut sequences = Vec::with_capacity(msg.sequences.len());
    for s in &msg.sequences {
        let stop_reason = match ProtoStopReason::try_from(s.stop_reason) {
            Ok(ProtoStopReason::Stop) => StopReason::Stop,
            Ok(ProtoStopReason::Length) => StopReason::Length,
            Err(_) => {
                return Err(decode_error(
                    request_id,
                    format!("unknown stop_reason enum value {}", s.stop_reason),
                ))
            }
        };
        let logprobs = match &s.logprobs {
            Some(b) if !b.is_empty() => {
                Some(le_words(b, "logprobs", request_id, f32::from_le_bytes)?)
            }
            _ => None,
        };
        sequences.push(Sequence {
            tokens: le_words(&s.tokens, "tokens", request_id, i32::from_le_bytes)?,
            logprobs,
            stop_reason,
            sequence_id: None,
        });
    }
    let prompt_logprobs = match &msg.prompt_logprobs {
        Some(b) if !b.is_empty() => Some(le_words(b, "prompt_logprobs", request_id, |w| {
            let x = f32::from_le_bytes(w);
            (!x.is_nan()).then_some(x)
        })?),
        _ => None,
    };
    let topk_prompt_logprobs = match &msg.topk_prompt_logprobs {
        Some(t) => topk_positions(t, request_id)?,
        None => None,
    };
    Ok(SampleOutput {
        sequences,
        prompt_logprobs,
        topk_prompt_logprobs,
        prompt_cache_hit_tokens: i64::from(msg.prompt_cache_hit_tokens),
        request_id: request_id.to_owned(),
    })
}

fn le_bytes<T: Copy>(xs: &[T], f: impl Fn(T) -> [u8; 4]) -> Bytes {
    xs.iter().flat_map(|&x| f(x)).collect::<Vec<u8>>().into()
}

/// Encodes a [`SampleOutput`] as the server would (the inverse of
/// [`decode_sample_response`]); for simulators and tests. `None` prompt
/// logprobs become NaN; top-k positions are padded with the sentinel to the
/// longest position; the prompt cache count saturates at `i32::MAX`.
pub fn encode_sample_response(out: &SampleOutput) -> Vec<u8> {
    let sequences = out
        .sequences
        .iter()
        .map(|s| SampledSequence {
            stop_reason: match s.stop_reason {
                StopReason::Stop => ProtoStopReason::Stop as i32,
                StopReason::Length => ProtoStopReason::Length as i32,
            },
            tokens: le_bytes(&s.tokens, i32::to_le_bytes),
            logprobs: s.logprobs.as_ref().map(|l| le_bytes(l, f32::to_le_bytes)),
            topk_sampled_logprobs: None,
        })
        .collect();
    let prompt_logprobs = out.prompt_logprobs.as_ref().map(|l| {
        let xs: Vec<f32> = l.iter().map(|x| x.unwrap_or(f32::NAN)).collect();
        le_bytes(&xs, f32::to_le_bytes)
    });
    let topk_prompt_logprobs = out.topk_prompt_logprobs.as_ref().map(|positions| {
        let k = positions.iter().flatten().map(Vec::len).max().unwrap_or(0);
        let (mut ids, mut lps) = (Vec::new(), Vec::new());
        for p in positions {
            let entries = p.as_deref().unwrap_or(&[]);
            for j in 0..k {
                let (id, lp) = entries.get(j).copied().unwrap_or((0, MASK_LOGPROB));
                ids.push(id);
                lps.push(lp);
            }
        }
        TopkLogprobs {
            token_ids: le_bytes(&ids, i32::to_le_bytes),
            logprobs: le_bytes(&lps, f32::to_le_bytes),
            k: k as u32,
            length: positions.len() as u32,
        }
    });
    SampleResponse {
        sequences,
        prompt_logprobs,
        topk_prompt_logprobs,
        prompt_cache_hit_tokens: i32::try_from(out.prompt_cache_hit_tokens).unwrap_or(i32::MAX),
        target_prompt_logprobs: None,
        prompt_alt_tokens: None,
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    /// Made by the official SDK's `tinker_public_pb2` (tinker 0.38.0): two
    /// sequences (LENGTH with logprobs, STOP without), prompt logprobs
    /// `[NaN, -2.5, -0.125]`, top-k k=2 over 3 positions (first all
    /// sentinel, last with one sentinel), 42 cache-hit tokens.
    const SDK_BYTES: &str = "0a1e0801120c0a000000f5ffffff701101001a0c000000bf0000a0bf000000000a06120405000000120c0000c07f000020c0000000be1a380a180000000000000000070000000800000009000000000000001218804fc3c7804fc3c7000000bf0000c0bf000080be804fc3c718022003202a";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn sdk_output() -> SampleOutput {
        SampleOutput {
            sequences: vec![
                Sequence {
                    tokens: vec![10, -11, 70000],
                    logprobs: Some(vec![-0.5, -1.25, 0.0]),
                    stop_reason: StopReason::Length,
                    sequence_id: None,
                },
                Sequence {
                    tokens: vec![5],
                    logprobs: None,
                    stop_reason: StopReason::Stop,
                    sequence_id: None,
                },
            ],
            prompt_logprobs: Some(vec![None, Some(-2.5), Some(-0.125)]),
            topk_prompt_logprobs: Some(vec![
                None,
                Some(vec![(7, -0.5), (8, -1.5)]),
                Some(vec![(9, -0.25)]),
            ]),
            prompt_cache_hit_tokens: 42,
            request_id: "req".into(),
        }
    }

    #[test]
    fn decodes_the_sdk_bytes() {
        let out = decode_sample_response(unhex(SDK_BYTES).into(), "req").unwrap();
        assert_eq!(out, sdk_output());
    }

    #[test]
    fn encodes_byte_for_byte_like_the_sdk() {
        assert_eq!(encode_sample_response(&sdk_output()), unhex(SDK_BYTES));
    }

    #[test]
    fn malformed_is_a_decode_error() {
        let e = decode_sample_response(Bytes::from_static(b"\x0a\xff\xff"), "r").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Decode);
        assert!(!e.retryable);
        // Stop reason 7 does not exist.
        let bad = SampleResponse {
            sequences: vec![SampledSequence {
                stop_reason: 7,
                tokens: Bytes::new(),
                logprobs: None,
                topk_sampled_logprobs: None,
            }],
            ..Default::default()
        };
        let e = decode_sample_response(bad.encode_to_vec().into(), "r").unwrap_err();
        assert!(e.message.contains("unknown stop_reason"), "{}", e.message);
        // Three bytes of tokens is not an int32 array.
        let bad = SampleResponse {
            sequences: vec![SampledSequence {
                stop_reason: 0,
                tokens: Bytes::from_static(b"abc"),
                logprobs: None,
                topk_sampled_logprobs: None,
            }],
            ..Default::default()
        };
        assert!(decode_sample_response(bad.encode_to_vec().into(), "r").is_err());
    }

    #[test]
    fn empty_arrays_are_absent() {
        let msg = SampleResponse {
            sequences: vec![SampledSequence {
                stop_reason: 1,
                tokens: Bytes::new(),
                logprobs: Some(Bytes::new()),
                topk_sampled_logprobs: None,
            }],
            prompt_logprobs: Some(Bytes::new()),
            topk_prompt_logprobs: Some(TopkLogprobs::default()),
            ..Default::default()
        };
        let out = decode_sample_response(msg.encode_to_vec().into(), "r").unwrap();
        assert_eq!(out.sequences[0].logprobs, None);
        assert_eq!(out.prompt_logprobs, None);
        assert_eq!(out.topk_prompt_logprobs, None);
    }
}
