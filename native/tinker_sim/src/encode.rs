//! Encodings of a [`SampleResult`]: the JSON `SampleResponse` and the
//! protobuf `tinker_public.SampleResponse`.

use crate::proto;
use crate::results::{SampleResult, TopkRows, TOPK_SENTINEL_LOGPROB, TOPK_SENTINEL_TOKEN};
use serde_json::{json, Value};

fn topk_json(rows: &TopkRows) -> Value {
    Value::Array(
        rows.iter()
            .map(|row| match row {
                None => Value::Null,
                Some(entries) => {
                    Value::Array(entries.iter().map(|(t, lp)| json!([t, lp])).collect())
                }
            })
            .collect(),
    )
}

fn topk_proto(k: u32, rows: &TopkRows) -> proto::TopkLogprobs {
    let mut ids = Vec::with_capacity(rows.len() * k as usize);
    let mut lps = Vec::with_capacity(rows.len() * k as usize);
    for row in rows {
        match row {
            Some(entries) => {
                ids.extend(entries.iter().map(|e| e.0));
                lps.extend(entries.iter().map(|e| e.1));
            }
            None => {
                ids.extend(std::iter::repeat_n(TOPK_SENTINEL_TOKEN, k as usize));
                lps.extend(std::iter::repeat_n(TOPK_SENTINEL_LOGPROB, k as usize));
            }
        }
    }
    proto::TopkLogprobs {
        token_ids: proto::i32_bytes(&ids),
        logprobs: proto::f32_bytes(&lps),
        k,
        length: rows.len() as u32,
    }
}

impl SampleResult {
    /// The JSON `SampleResponse` (`"type":"sample"`).
    pub fn to_json(&self) -> Value {
        let sequences: Vec<Value> = self
            .sequences
            .iter()
            .map(|s| {
                let mut v = json!({
                    "tokens": s.tokens,
                    "logprobs": s.logprobs,
                    "stop_reason": "length",
                });
                if let Some(rows) = &s.topk {
                    v["topk_logprobs"] = topk_json(rows);
                }
                v
            })
            .collect();
        json!({
            "type": "sample",
            "sequences": sequences,
            "prompt_logprobs": self.prompt_logprobs,
            "topk_prompt_logprobs": self.topk_prompt_logprobs.as_ref().map(|(_, rows)| topk_json(rows)),
            "prompt_cache_hit_tokens": 0,
            "prompt_alt_tokens": self.prompt_alt_tokens.as_ref().map(|(k, rows)| {
                let shape = [rows.len(), *k as usize];
                let tokens: Vec<i32> = rows.iter().flatten().map(|e| e.0).collect();
                let logprobs: Vec<f32> = rows.iter().flatten().map(|e| e.1).collect();
                json!({
                    "tokens": {"data": tokens, "dtype": "int64", "shape": shape},
                    "logprobs": {"data": logprobs, "dtype": "float32", "shape": shape},
                })
            }),
        })
    }

    /// The protobuf `tinker_public.SampleResponse`.
    pub fn to_proto(&self) -> proto::SampleResponse {
        proto::SampleResponse {
            sequences: self
                .sequences
                .iter()
                .map(|s| proto::SampledSequence {
                    stop_reason: proto::StopReason::Length as i32,
                    tokens: proto::i32_bytes(&s.tokens),
                    logprobs: Some(proto::f32_bytes(&s.logprobs)),
                    topk_sampled_logprobs: s.topk.as_ref().map(|rows| {
                        topk_proto(
                            rows.first()
                                .map_or(0, |r| r.as_ref().map_or(0, |e| e.len() as u32)),
                            rows,
                        )
                    }),
                })
                .collect(),
            prompt_logprobs: self.prompt_logprobs.as_ref().map(|lps| {
                let values: Vec<f32> = lps.iter().map(|v| v.unwrap_or(f32::NAN)).collect();
                proto::f32_bytes(&values)
            }),
            topk_prompt_logprobs: self
                .topk_prompt_logprobs
                .as_ref()
                .map(|(k, rows)| topk_proto(*k, rows)),
            prompt_cache_hit_tokens: 0,
            target_prompt_logprobs: None,
            prompt_alt_tokens: self.prompt_alt_tokens.as_ref().map(|(k, rows)| {
                let shape = vec![rows.len() as i64, i64::from(*k)];
                let tokens: Vec<u8> = rows
                    .iter()
                    .flatten()
                    .flat_map(|e| i64::from(e.0).to_le_bytes())
                    .collect();
                let logprobs: Vec<f32> = rows.iter().flatten().map(|e| e.1).collect();
                proto::PromptAltTokens {
                    tokens: Some(proto::Tensor {
                        encoding: Some(proto::tensor::Encoding::Dense(tokens)),
                        dtype: proto::DType::Int64 as i32,
                        shape: shape.clone(),
                    }),
                    logprobs: Some(proto::Tensor {
                        encoding: Some(proto::tensor::Encoding::Dense(proto::f32_bytes(&logprobs))),
                        dtype: proto::DType::Float32 as i32,
                        shape,
                    }),
                }
            }),
        }
    }
}
