//! Deterministic sample results.
//!
//! A result depends only on the request, so a test can tell which request a
//! response belongs to. The function, stable across releases of the
//! simulator:
//!
//! ```text
//! splitmix64(x):  z = x + 0x9E3779B97F4A7C15
//!                 z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
//!                 z = (z ^ (z >> 27)) * 0x94D049BB133111EB
//!                 return z ^ (z >> 31)                      (all wrapping u64)
//! mix(a, b)     = splitmix64(a ^ splitmix64(b))
//! fnv1a64(bytes): h = 0xcbf29ce484222325; for each byte: h = (h ^ byte) * 0x100000001b3
//!
//! K = utf8(sampling_session_id) ++ [0x00] ++ i64le(seq_id)
//!     ++ for each prompt chunk in order:
//!          encoded_text: i32le(token) for each token (chunk boundaries do not matter)
//!          other types (images included):
//!                        [0xFE] ++ compact JSON of the chunk, keys sorted ++ [0x00]
//!     ++ [0xFF]
//!     ++ i64le(max_tokens, 16 when absent) ++ u64le(bits of temperature as f64, default 1.0)
//!     ++ i64le(top_k, default -1) ++ u64le(bits of top_p as f64, default 1.0)
//!     ++ i64le(seed, i64::MIN when absent)
//! h = fnv1a64(K)                            (stop sequences and num_samples are not part of it)
//!
//! sample j (0-based):            s_j = mix(h, j)
//! token i of sample j:           r = mix(s_j, i); token = (r >> 16) % 32000; logprob = -(r & 0xFFFF) / 8192
//! prompt logprob, position p≥1:  r = mix(h ^ 0x70726f6d7074, p); logprob = -(r & 0xFFFF) / 8192
//!                                (position 0 has none: JSON null, NaN in protobuf)
//! top-k entry t of a row:        r = mix(row_seed, t); token = (r >> 16) % 32000;
//!                                logprob = -t - (r & 0x1FFF) / 8192
//!   prompt row p≥1:  row_seed = mix(h ^ 0x746f706b, p)        (row 0: null / sentinel)
//!   sampled row i:   row_seed = mix(s_j ^ 0x746f706b, i)
//! prompt_alt_tokens, row i (position i+1), draw t:
//!                                r = mix(mix(h ^ 0x616c74, i + 1), t); token = (r >> 16) % 32000;
//!                                logprob = -(r & 0xFFFF) / 8192
//! ```
//!
//! With `prompt_logprobs_last_n = N`, prompt logprobs and prompt top-k rows
//! of positions before `len - N` are null. Neither it nor
//! `prompt_alt_tokens_k` is part of `K`. `target_prompt_logprobs` is not
//! supported (422).
//!
//! Every sequence has exactly `max_tokens` tokens and stop reason `length`.
//! All logprobs are multiples of 1/8192, exact in `f32`, JSON and protobuf.
//! [`expected_tokens`] and [`SampleSpec::expected`] compute the same values
//! in Rust; `POST /_sim/expected` does it over HTTP.

use crate::spec::{SampleSpec, SamplingParams};

/// Size of the simulated vocabulary.
pub const VOCAB: u64 = 32_000;
/// Token id of an empty top-k slot in protobuf.
pub const TOPK_SENTINEL_TOKEN: i32 = 0;
/// Logprob of an empty top-k slot in protobuf.
pub const TOPK_SENTINEL_LOGPROB: f32 = -99999.0;

const PROMPT_SALT: u64 = 0x7072_6f6d_7074;
const TOPK_SALT: u64 = 0x746f_706b;
const ALT_SALT: u64 = 0x61_6c74;

/// The compact part of a request that determines its result: kept per future.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResultKey {
    /// `fnv1a64(K)`, see the module docs.
    pub hash: u64,
    /// Number of prompt positions: text tokens plus each image's
    /// `expected_tokens`.
    pub prompt_len: u32,
    /// Sequences to produce.
    pub num_samples: u32,
    /// Tokens per sequence.
    pub max_tokens: u32,
    /// Whether prompt logprobs are returned.
    pub prompt_logprobs: bool,
    /// Top-k of prompt positions (0 = none).
    pub topk_prompt: u32,
    /// Top-k of sampled positions (0 = none).
    pub topk_sample: u32,
    /// Score only the last N prompt positions (0 = all).
    pub prompt_last_n: u32,
    /// Alternative prompt tokens per position (0 = none).
    pub alt_k: u32,
}

/// A top-k matrix: one row per position, `None` for a position without values.
pub type TopkRows = Vec<Option<Vec<(i32, f32)>>>;

/// Alternative prompt tokens: per prompt position after the first, `k`
/// (token, logprob) draws.
pub type AltRows = Vec<Vec<(i32, f32)>>;

/// One generated sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Sequence {
    /// Token ids.
    pub tokens: Vec<i32>,
    /// One logprob per token.
    pub logprobs: Vec<f32>,
    /// Top-k per sampled position, when requested.
    pub topk: Option<TopkRows>,
}

/// A complete result.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleResult {
    /// One per sample.
    pub sequences: Vec<Sequence>,
    /// Per prompt token, `None` for the first; present when requested.
    pub prompt_logprobs: Option<Vec<Option<f32>>>,
    /// `k` and the rows of the prompt's top-k, when requested.
    pub topk_prompt_logprobs: Option<(u32, TopkRows)>,
    /// `k` and, per prompt position after the first, `k` (token, logprob)
    /// draws, when requested.
    pub prompt_alt_tokens: Option<(u32, AltRows)>,
}

/// `splitmix64`, see the module docs.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `mix(a, b) = splitmix64(a ^ splitmix64(b))`.
pub fn mix(a: u64, b: u64) -> u64 {
    splitmix64(a ^ splitmix64(b))
}

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn token_of(r: u64) -> i32 {
    ((r >> 16) % VOCAB) as i32
}

fn logprob_of(r: u64) -> f32 {
    -((r & 0xFFFF) as f32) / 8192.0
}

fn topk_row(row_seed: u64, k: u32) -> Vec<(i32, f32)> {
    (0..k)
        .map(|t| {
            let r = mix(row_seed, u64::from(t));
            (token_of(r), -(t as f32) - ((r & 0x1FFF) as f32) / 8192.0)
        })
        .collect()
}

/// The tokens of sample `sample_index` for a prompt made only of text tokens.
///
/// ```
/// use tinker_sim::{expected_tokens, SamplingParams};
/// let params = SamplingParams::with_max_tokens(4);
/// let a = expected_tokens("s:sample:0", 0, &[1, 2, 3], &params, 0);
/// assert_eq!(a.len(), 4);
/// assert_eq!(a, expected_tokens("s:sample:0", 0, &[1, 2, 3], &params, 0));
/// assert_ne!(a, expected_tokens("s:sample:0", 1, &[1, 2, 3], &params, 0));
/// ```
pub fn expected_tokens(
    sampling_session_id: &str,
    seq_id: i64,
    prompt_tokens: &[i32],
    params: &SamplingParams,
    sample_index: u32,
) -> Vec<i32> {
    let spec = SampleSpec::from_tokens(sampling_session_id, seq_id, prompt_tokens, params.clone());
    let s = mix(spec.key().hash, u64::from(sample_index));
    (0..params.effective_max_tokens())
        .map(|i| token_of(mix(s, u64::from(i))))
        .collect()
}

impl ResultKey {
    /// Computes the result (see the module docs for the function).
    pub fn result(&self) -> SampleResult {
        let sequences = (0..self.num_samples)
            .map(|j| {
                let s = mix(self.hash, u64::from(j));
                let (tokens, logprobs) = (0..self.max_tokens)
                    .map(|i| {
                        let r = mix(s, u64::from(i));
                        (token_of(r), logprob_of(r))
                    })
                    .unzip();
                let topk = (self.topk_sample > 0).then(|| {
                    (0..self.max_tokens)
                        .map(|i| Some(topk_row(mix(s ^ TOPK_SALT, u64::from(i)), self.topk_sample)))
                        .collect()
                });
                Sequence {
                    tokens,
                    logprobs,
                    topk,
                }
            })
            .collect();
        let first_scored = match self.prompt_last_n {
            0 => 1,
            n => self.prompt_len.saturating_sub(n).max(1),
        };
        let prompt_logprobs = self.prompt_logprobs.then(|| {
            (0..self.prompt_len)
                .map(|p| {
                    (p >= first_scored)
                        .then(|| logprob_of(mix(self.hash ^ PROMPT_SALT, u64::from(p))))
                })
                .collect()
        });
        let topk_prompt_logprobs = (self.topk_prompt > 0).then(|| {
            let rows = (0..self.prompt_len)
                .map(|p| {
                    (p >= first_scored).then(|| {
                        topk_row(mix(self.hash ^ TOPK_SALT, u64::from(p)), self.topk_prompt)
                    })
                })
                .collect();
            (self.topk_prompt, rows)
        });
        let prompt_alt_tokens = (self.alt_k > 0).then(|| {
            let rows = (1..self.prompt_len.max(1))
                .map(|p| {
                    let row_seed = mix(self.hash ^ ALT_SALT, u64::from(p));
                    (0..self.alt_k)
                        .map(|t| {
                            let r = mix(row_seed, u64::from(t));
                            (token_of(r), logprob_of(r))
                        })
                        .collect()
                })
                .collect();
            (self.alt_k, rows)
        });
        SampleResult {
            sequences,
            prompt_logprobs,
            topk_prompt_logprobs,
            prompt_alt_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::body;
    use serde_json::{json, Value};

    #[test]
    fn known_values_are_stable() {
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn chunking_does_not_change_the_result() {
        let spec = SampleSpec::from_json(Some(&body(0))).unwrap();
        let tokens = expected_tokens(
            "s:sample:0",
            0,
            &[1, 2, 3],
            &SamplingParams::with_max_tokens(5),
            1,
        );
        let result = spec.expected();
        assert_eq!(result.sequences.len(), 2);
        assert_eq!(result.sequences[1].tokens, tokens);
        assert_eq!(result.sequences[0].tokens.len(), 5);
        assert_ne!(result.sequences[0].tokens, result.sequences[1].tokens);
    }

    #[test]
    fn seq_id_and_params_change_the_result() {
        let a = SampleSpec::from_json(Some(&body(0))).unwrap().expected();
        let b = SampleSpec::from_json(Some(&body(1))).unwrap().expected();
        assert_ne!(a.sequences[0].tokens, b.sequences[0].tokens);
        let mut other = body(0);
        other["sampling_params"]["temperature"] = json!(0.5);
        let c = SampleSpec::from_json(Some(&other)).unwrap().expected();
        assert_ne!(a.sequences[0].tokens, c.sequences[0].tokens);
    }

    #[test]
    fn prompt_logprobs_start_with_null() {
        let r = SampleSpec::from_json(Some(&body(0))).unwrap().expected();
        let lps = r.prompt_logprobs.unwrap();
        assert_eq!(lps.len(), 3);
        assert!(lps[0].is_none() && lps[1].is_some());
        let j = SampleSpec::from_json(Some(&body(0)))
            .unwrap()
            .expected()
            .to_json();
        assert_eq!(j["prompt_logprobs"][0], Value::Null);
        assert_eq!(j["sequences"][0]["stop_reason"], "length");
    }

    #[test]
    fn last_n_and_alt_tokens() {
        let mut b = body(0);
        b["prompt"]["chunks"][1]["tokens"] = json!([3, 4, 5]);
        b["prompt_logprobs_last_n"] = json!(2);
        b["prompt_alt_tokens_k"] = json!(2);
        let r = SampleSpec::from_json(Some(&b)).unwrap().expected();
        let lps = r.prompt_logprobs.clone().unwrap();
        assert_eq!(
            lps.iter().map(Option::is_some).collect::<Vec<_>>(),
            [false, false, false, true, true]
        );
        let (k, rows) = r.prompt_alt_tokens.clone().unwrap();
        assert_eq!((k, rows.len(), rows[0].len()), (2, 4, 2));
        let alt = r.to_proto().prompt_alt_tokens.unwrap();
        assert_eq!(alt.tokens.unwrap().shape, vec![4, 2]);
        b["target_prompt_logprobs"] = json!({"data": [1], "dtype": "int64", "shape": [1, 1]});
        assert_eq!(
            SampleSpec::from_json(Some(&b)).unwrap_err().field,
            "target_prompt_logprobs"
        );
    }

    #[test]
    fn topk_rows_decrease() {
        let mut b = body(0);
        b["topk_prompt_logprobs"] = json!(3);
        let r = SampleSpec::from_json(Some(&b)).unwrap().expected();
        let (k, rows) = r.topk_prompt_logprobs.clone().unwrap();
        assert_eq!((k, rows.len()), (3, 3));
        assert!(rows[0].is_none());
        let row = rows[1].as_ref().unwrap();
        assert!(row[0].1 > row[1].1 && row[1].1 > row[2].1);
        let p = r.to_proto().topk_prompt_logprobs.unwrap();
        assert_eq!((p.k, p.length, p.token_ids.len()), (3, 3, 36));
    }
}
