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
//! The coordination itself (leases, membership, the shared backoff's
//! propagation) is plain OTP in the Elixir layer.

mod attempt;
pub mod budget;

pub use attempt::{run_leased, withdraw, WITHDRAW_TIMEOUT};
pub use budget::{Budget, BudgetPermit, Level, Snapshot};
