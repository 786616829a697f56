//! The protobuf result messages of package `tinker_public`, written by hand
//! with `prost` derives (no `protoc`, no `build.rs`).
//!
//! Field numbers follow the official SDK's `tinker/proto/tinker_public_pb2.py`
//! (0.38.0); `docs/protocol.md` lists them. Arrays travel as little-endian `bytes`.
//! The conformance script (`test/conformance/run`) checks that the SDK's own
//! generated module re-serialises what this module writes byte for byte.

use prost::Message;

/// `tinker_public.SampleResponse`: the result of a finished sample future.
#[derive(Clone, PartialEq, Message)]
pub struct SampleResponse {
    /// Field 1: one entry per requested sample.
    #[prost(message, repeated, tag = "1")]
    pub sequences: Vec<SampledSequence>,
    /// Field 2: float32 little-endian array, NaN where there is no value.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub prompt_logprobs: Option<Vec<u8>>,
    /// Field 3: top-k logprobs of the prompt positions.
    #[prost(message, optional, tag = "3")]
    pub topk_prompt_logprobs: Option<TopkLogprobs>,
    /// Field 4: prompt tokens served from the prefix cache (always 0 here).
    #[prost(int32, tag = "4")]
    pub prompt_cache_hit_tokens: i32,
    /// Field 5: logprobs of requested target tokens (not produced by the simulator).
    #[prost(message, optional, tag = "5")]
    pub target_prompt_logprobs: Option<Tensor>,
    /// Field 6: alternative prompt tokens (not produced by the simulator).
    #[prost(message, optional, tag = "6")]
    pub prompt_alt_tokens: Option<PromptAltTokens>,
}

/// `tinker_public.SampledSequence`: one generated sequence.
#[derive(Clone, PartialEq, Message)]
pub struct SampledSequence {
    /// Field 1: a [`StopReason`] value.
    #[prost(enumeration = "StopReason", tag = "1")]
    pub stop_reason: i32,
    /// Field 2: int32 little-endian token ids.
    #[prost(bytes = "vec", tag = "2")]
    pub tokens: Vec<u8>,
    /// Field 3: float32 little-endian logprobs, one per token.
    #[prost(bytes = "vec", optional, tag = "3")]
    pub logprobs: Option<Vec<u8>>,
    /// Field 4: top-k logprobs of each sampled position.
    #[prost(message, optional, tag = "4")]
    pub topk_sampled_logprobs: Option<TopkLogprobs>,
}

/// `tinker_public.TopkLogprobs`: dense row-major `length × k` matrices.
#[derive(Clone, PartialEq, Message)]
pub struct TopkLogprobs {
    /// Field 1: int32 little-endian token ids.
    #[prost(bytes = "vec", tag = "1")]
    pub token_ids: Vec<u8>,
    /// Field 2: float32 little-endian logprobs.
    #[prost(bytes = "vec", tag = "2")]
    pub logprobs: Vec<u8>,
    /// Field 3: entries per row.
    #[prost(uint32, tag = "3")]
    pub k: u32,
    /// Field 4: number of rows.
    #[prost(uint32, tag = "4")]
    pub length: u32,
}

/// `tinker_public.Tensor`.
#[derive(Clone, PartialEq, Message)]
pub struct Tensor {
    /// Fields 1 (`dense`) or 2 (`sparse_csr`).
    #[prost(oneof = "tensor::Encoding", tags = "1, 2")]
    pub encoding: Option<tensor::Encoding>,
    /// Field 3: a [`DType`] value.
    #[prost(enumeration = "DType", tag = "3")]
    pub dtype: i32,
    /// Field 4: the shape.
    #[prost(int64, repeated, tag = "4")]
    pub shape: Vec<i64>,
}

/// The `oneof encoding` of [`Tensor`].
pub mod tensor {
    /// How a tensor's values are laid out.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Encoding {
        /// Field 1: dense little-endian values.
        #[prost(bytes, tag = "1")]
        Dense(Vec<u8>),
        /// Field 2: sparse CSR layout.
        #[prost(message, tag = "2")]
        SparseCsr(super::SparseCsr),
    }
}

/// `tinker_public.SparseCsr`.
#[derive(Clone, PartialEq, Message)]
pub struct SparseCsr {
    /// Field 1: the non-zero values.
    #[prost(bytes = "vec", tag = "1")]
    pub values: Vec<u8>,
    /// Field 2: int64 row offsets.
    #[prost(bytes = "vec", tag = "2")]
    pub crow_indices: Vec<u8>,
    /// Field 3: int64 column indices.
    #[prost(bytes = "vec", tag = "3")]
    pub col_indices: Vec<u8>,
}

/// `tinker_public.PromptAltTokens`.
#[derive(Clone, PartialEq, Message)]
pub struct PromptAltTokens {
    /// Field 1: the alternative tokens.
    #[prost(message, optional, tag = "1")]
    pub tokens: Option<Tensor>,
    /// Field 2: their logprobs.
    #[prost(message, optional, tag = "2")]
    pub logprobs: Option<Tensor>,
}

/// `tinker_public.StopReason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum StopReason {
    /// A stop sequence or EOS ended the sequence.
    Stop = 0,
    /// `max_tokens` ended the sequence.
    Length = 1,
}

/// `tinker_public.DType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DType {
    /// Unset.
    Unspecified = 0,
    /// 32-bit float.
    Float32 = 1,
    /// 64-bit integer.
    Int64 = 2,
    /// 32-bit integer.
    Int32 = 3,
    /// bfloat16.
    Bfloat16 = 4,
}

/// Little-endian bytes of an `i32` array.
pub fn i32_bytes(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian bytes of an `f32` array.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_sequence_wire_bytes() {
        let seq = SampledSequence {
            stop_reason: StopReason::Length as i32,
            tokens: i32_bytes(&[1]),
            logprobs: Some(f32_bytes(&[-0.5])),
            topk_sampled_logprobs: None,
        };
        // field 1 varint 1; field 2 len 4; field 3 len 4.
        assert_eq!(
            seq.encode_to_vec(),
            vec![0x08, 0x01, 0x12, 4, 1, 0, 0, 0, 0x1a, 4, 0, 0, 0, 0xbf]
        );
    }

    #[test]
    fn empty_optional_bytes_are_still_written() {
        let resp = SampleResponse {
            prompt_logprobs: Some(Vec::new()),
            ..Default::default()
        };
        assert_eq!(resp.encode_to_vec(), vec![0x12, 0x00]);
    }
}
