//! The protobuf result of `retrieve_future` (`tinker_public.SampleResponse`),
//! written by hand with `prost` derives (no `protoc`), and its decoding into
//! [`SampleOutput`].
//!
//! Arrays travel as little-endian `bytes`. Decoding follows the Python SDK's
//! `tinker.proto.response_conv`: an empty `logprobs` is no logprobs, NaN
//! prompt logprobs are `None`, top-k positions filled with the sentinel
//! (token 0, logprob −99999.0) are `None` and trailing sentinel pairs are
//! trimmed, and an unknown stop reason is a decode error. Fields this client
//! never requests (`target_prompt_logprobs`, `prompt_alt_tokens`,
//! `topk_sampled_logprobs`) are parsed but not converted.
//!
//! ```
//! use tinkex_core::proto::{decode_sample_response, encode_sample_response};
//! use tinkex_core::sampling::{SampleOutput, Sequence, StopReason};
//! let out = SampleOutput {
//!     sequences: vec![Sequence { tokens: vec![1, 2], logprobs: Some(vec![-0.5, -1.0]),
//!                                stop_reason: StopReason::Length, sequence_id: None }],
//!     prompt_logprobs: Some(vec![None, Some(-2.0)]),
//!     request_id: "r".into(),
//!     ..SampleOutput::default()
//! };
//! let bytes = encode_sample_response(&out);
//! assert_eq!(decode_sample_response(bytes.into(), "r").unwrap(), out);
//! ```

use prost::bytes::Bytes;
use prost::Message;

mod convert;

pub use convert::{decode_sample_response, encode_sample_response, MASK_LOGPROB};

/// `tinker_public.SampleResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct SampleResponse {
    /// The generated sequences.
    #[prost(message, repeated, tag = "1")]
    pub sequences: Vec<SampledSequence>,
    /// float32[] per prompt token, NaN where none.
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub prompt_logprobs: Option<Bytes>,
    /// Top-k prompt logprobs.
    #[prost(message, optional, tag = "3")]
    pub topk_prompt_logprobs: Option<TopkLogprobs>,
    /// Prompt tokens billed as prefix-cache hits.
    #[prost(int32, tag = "4")]
    pub prompt_cache_hit_tokens: i32,
    /// Logprobs of requested target tokens (not requested by this client).
    #[prost(message, optional, tag = "5")]
    pub target_prompt_logprobs: Option<Tensor>,
    /// Alternative prompt tokens (not requested by this client).
    #[prost(message, optional, tag = "6")]
    pub prompt_alt_tokens: Option<PromptAltTokens>,
}

/// `tinker_public.SampledSequence`.
#[derive(Clone, PartialEq, Message)]
pub struct SampledSequence {
    /// A [`ProtoStopReason`] value.
    #[prost(enumeration = "ProtoStopReason", tag = "1")]
    pub stop_reason: i32,
    /// int32[] generated tokens.
    #[prost(bytes = "bytes", tag = "2")]
    pub tokens: Bytes,
    /// float32[] logprobs of the generated tokens.
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub logprobs: Option<Bytes>,
    /// Top-k logprobs per generated token (not requested by this client).
    #[prost(message, optional, tag = "4")]
    pub topk_sampled_logprobs: Option<TopkLogprobs>,
}

/// `tinker_public.StopReason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ProtoStopReason {
    /// `STOP_REASON_STOP`.
    Stop = 0,
    /// `STOP_REASON_LENGTH`.
    Length = 1,
}

/// `tinker_public.TopkLogprobs`: two dense `length × k` matrices.
#[derive(Clone, PartialEq, Message)]
pub struct TopkLogprobs {
    /// int32[length·k].
    #[prost(bytes = "bytes", tag = "1")]
    pub token_ids: Bytes,
    /// float32[length·k].
    #[prost(bytes = "bytes", tag = "2")]
    pub logprobs: Bytes,
    /// Entries per position.
    #[prost(uint32, tag = "3")]
    pub k: u32,
    /// Positions.
    #[prost(uint32, tag = "4")]
    pub length: u32,
}

/// `tinker_public.Tensor`.
#[derive(Clone, PartialEq, Message)]
pub struct Tensor {
    /// Dense bytes or a sparse CSR layout.
    #[prost(oneof = "TensorData", tags = "1, 2")]
    pub data: Option<TensorData>,
    /// A [`DType`] value.
    #[prost(enumeration = "DType", tag = "3")]
    pub dtype: i32,
    /// The shape.
    #[prost(int64, repeated, tag = "4")]
    pub shape: Vec<i64>,
}

/// The `oneof` of [`Tensor`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum TensorData {
    /// Little-endian elements of `dtype`.
    #[prost(bytes = "bytes", tag = "1")]
    Dense(Bytes),
    /// A CSR matrix.
    #[prost(message, tag = "2")]
    SparseCsr(SparseCsr),
}

/// `tinker_public.SparseCsr`.
#[derive(Clone, PartialEq, Message)]
pub struct SparseCsr {
    /// Non-zero values.
    #[prost(bytes = "bytes", tag = "1")]
    pub values: Bytes,
    /// int64[] row offsets.
    #[prost(bytes = "bytes", tag = "2")]
    pub crow_indices: Bytes,
    /// int64[] column indices.
    #[prost(bytes = "bytes", tag = "3")]
    pub col_indices: Bytes,
}

/// `tinker_public.DType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DType {
    /// `DTYPE_UNSPECIFIED`.
    Unspecified = 0,
    /// `DTYPE_FLOAT32`.
    Float32 = 1,
    /// `DTYPE_INT64`.
    Int64 = 2,
    /// `DTYPE_INT32`.
    Int32 = 3,
    /// `DTYPE_BFLOAT16`.
    Bfloat16 = 4,
}

/// `tinker_public.PromptAltTokens`.
#[derive(Clone, PartialEq, Message)]
pub struct PromptAltTokens {
    /// Token ids.
    #[prost(message, optional, tag = "1")]
    pub tokens: Option<Tensor>,
    /// Their logprobs.
    #[prost(message, optional, tag = "2")]
    pub logprobs: Option<Tensor>,
}
