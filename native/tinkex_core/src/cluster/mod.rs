//! The native half of `TinkexNative.Cluster`: what a node needs so that
//! many BEAM nodes can share one API key's limits without a message per
//! sample.
//!
//! - [`Budget`]: this node's leased share of a cluster-wide budget of
//!   in-flight samples; samples take permits from it locally.
//! - [`run_leased`]: one attempt of a sample under a budget permit; when
//!   the lease is revoked, the request is withdrawn from the server (so
//!   it no longer counts there) and the attempt starts over under a new
//!   permit.
//!
//! Where the `seq_id`s of a client start when it samples from a sampling
//! session another node created is `crate::seq_base`'s clone rule, the
//! same as for any clone.
//!
//! The coordination itself (leases, membership, the shared backoff's
//! propagation) is plain OTP in the Elixir layer.

mod attempt;
pub mod budget;

pub use attempt::{run_leased, withdraw, WITHDRAW_TIMEOUT};
pub use budget::{Budget, BudgetPermit, Level, Snapshot};

use sha2::{Digest, Sha256};

/// The name of `{base_url, api_key}` between the nodes of a cluster: a
/// SHA-256 under a domain of its own, so the key itself never crosses (a
/// trailing `/` of the URL does not make another name).
///
/// ```
/// use tinkex_core::cluster::key_digest;
/// assert_eq!(key_digest("http://a.test/", "tml-1"), key_digest("http://a.test", "tml-1"));
/// assert_ne!(key_digest("http://a.test", "tml-1"), key_digest("http://a.test", "tml-2"));
/// ```
pub fn key_digest(base_url: &str, api_key: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tinkex_native.cluster\0");
    h.update(base_url.trim_end_matches('/').as_bytes());
    h.update([0u8]);
    h.update(api_key.as_bytes());
    h.finalize().into()
}
