//! The largest answer bodies a client reads (`TinkexNative.SamplingClient`'s
//! `:max_body_bytes`), as the session and client NIFs take them.

use tinkex_core::http::{BodyLimits, Endpoint};

use crate::session::endpoint;

/// The largest answer bodies to read, `%{result: bytes, control: bytes}`
/// (`TinkexNative.SamplingClient`'s `:max_body_bytes`, validated there).
#[derive(rustler::NifMap, Clone, Copy)]
pub struct LimitsArg {
    result: u64,
    control: u64,
}

impl From<LimitsArg> for BodyLimits {
    fn from(l: LimitsArg) -> BodyLimits {
        BodyLimits {
            result: l.result,
            control: l.control,
        }
    }
}

/// [`endpoint`](crate::session::endpoint) reading answers up to `limits`.
pub fn limited_endpoint(
    base_url: &str,
    api_key: &str,
    version: &str,
    limits: LimitsArg,
) -> rustler::NifResult<Endpoint> {
    endpoint(base_url, api_key, version).map(|ep| ep.with_body_limits(limits.into()))
}
