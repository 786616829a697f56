//! The `seq_id` base of a clone: a client that samples from a sampling
//! session it did not create (another node's, in a cluster). Its `seq_id`s
//! must never collide with the original's or another clone's, since the
//! server derives a request's id from `(sampling_session_id, seq_id)`: a
//! collision would return another request's result.
//!
//! As the Python SDK does: when the server offers
//! `sample_join_sampling_session`, the server numbers the clones
//! (`POST /api/v1/join_sampling_session` answers `client_counter`, 1, 2,
//! …); otherwise the clone draws its number uniformly from 1..=10^9. The
//! base is the number times 10^9 (the original client counts from 0).

use rand::Rng;
use serde::Deserialize;

use crate::error::Error;
use crate::http::Endpoint;
use crate::session::request_with_retries;

/// `seq_id`s of one clone fit below the next clone's base.
pub const CLONE_STRIDE: u64 = 1_000_000_000;

#[derive(Deserialize)]
struct JoinAnswer {
    client_counter: u64,
}

/// The first `seq_id` of a clone of `sampling_session_id`: asked of the
/// server when `join` (the server's `sample_join_sampling_session` flag),
/// else drawn at random.
pub async fn clone_seq_base(
    ep: &Endpoint,
    sampling_session_id: &str,
    join: bool,
) -> Result<u64, Error> {
    if !join {
        return Ok(CLONE_STRIDE * rand::rng().random_range(1..=CLONE_STRIDE));
    }
    let body = serde_json::to_vec(&serde_json::json!({
        "type": "join_sampling_session",
        "sampling_session_id": sampling_session_id,
    }))
    .map_err(|e| Error::new(crate::error::ErrorKind::Internal, e.to_string()))?;
    let reply = request_with_retries(
        ep,
        reqwest::Method::POST,
        ep.url("/api/v1/join_sampling_session", &[])?,
        Some(body.into()),
        &crate::session::SessionRetry::default(),
    )
    .await?;
    if !reply.status.is_success() {
        return Err(reply.to_error());
    }
    let a: JoinAnswer = reply.json()?;
    Ok(CLONE_STRIDE.saturating_mul(a.client_counter))
}
