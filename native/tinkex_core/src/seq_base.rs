//! Where a sampling client's `seq_id`s start.
//!
//! The server deduplicates `asample` on `(sampling_session_id, seq_id)`:
//! two clients of one sampling session that send the same `seq_id` get the
//! same result, whatever their prompts. So every client of a sampling
//! session needs its own range, as in the Python SDK:
//!
//! | client | first `seq_id` |
//! |---|---|
//! | the original (it created the sampling session) | 0 |
//! | a clone, server flag `sample_join_sampling_session` on | 1e9 × `client_counter` of `POST /api/v1/join_sampling_session` |
//! | a clone, flag off | 1e9 × `r`, `r` uniform in [1, 1e9] |
//!
//! On top of the SDK's rules, a [`SeqBases`] registry (one per OS process:
//! [`SeqBases::global`]) remembers every base handed out per
//! `(base_url, sampling_session_id)`, and never hands one out twice: a
//! random draw that repeats is drawn again, and a `client_counter` whose
//! base is taken (a server whose counter went back, or a clone of a
//! session whose original runs here) is asked for again. Bases are never
//! returned to the registry: the server remembers the `seq_id`s a stopped
//! client used, so a new client must not reuse them either (a base costs
//! 8 bytes).
//!
//! ```
//! use tinkex_core::seq_base::{SeqBases, CLONE_STRIDE};
//! let bases = SeqBases::new();
//! assert!(bases.claim("http://sim", "s:sample:0", 0));
//! assert!(!bases.claim("http://sim", "s:sample:0", 0));
//! let mut draws = [7, 7, 9].into_iter();
//! assert_eq!(bases.claim_drawn("http://sim", "s:sample:0", || draws.next().unwrap()), Some(7 * CLONE_STRIDE));
//! assert_eq!(bases.claim_drawn("http://sim", "s:sample:0", || draws.next().unwrap()), Some(9 * CLONE_STRIDE));
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use rand::Rng;

use crate::error::{Error, ErrorKind};
use crate::http::Endpoint;
use crate::session::join_sampling_session;

/// The width of one client's `seq_id` range: a clone's base is a multiple
/// of it, and `seq_id / CLONE_STRIDE` is its `cloned_sampler_id`.
pub const CLONE_STRIDE: u64 = 1_000_000_000;

/// The largest random clone number (the SDK's `uuid4 % 1e9 + 1`).
pub const MAX_DRAWN_CLONE: u64 = 1_000_000_000;

/// Draws tried before giving up; with 1e9 numbers this is never reached
/// unless the draw is broken.
const MAX_DRAWS: usize = 64;

/// How a client relates to its sampling session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It created the sampling session.
    Original,
    /// It attaches to a sampling session that exists already (that another
    /// client, here or elsewhere, may be sampling from).
    Clone,
}

/// Where a client's `seq_id`s start, and how that was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqBase {
    /// The first `seq_id`.
    pub first_seq_id: u64,
    /// How it was chosen.
    pub source: BaseSource,
}

/// How a [`SeqBase`] was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseSource {
    /// 0: the client created the sampling session.
    Original,
    /// From `join_sampling_session` (`joins` calls, the last answering
    /// `client_counter`).
    Joined {
        /// The counter in use.
        client_counter: u64,
        /// Joins sent (more than one when a counter's base was taken here).
        joins: usize,
    },
    /// A random clone number.
    Drawn,
}

/// `(base_url, sampling_session_id)`: the sampling sessions of different
/// services are apart even when their ids are equal.
type SessionKey = (Box<str>, Box<str>);

/// Bases handed out, per `(base_url, sampling_session_id)`.
#[derive(Debug, Default)]
pub struct SeqBases {
    used: Mutex<HashMap<SessionKey, HashSet<u64>>>,
}

impl SeqBases {
    /// An empty registry (tests; clients use [`SeqBases::global`]).
    pub fn new() -> SeqBases {
        SeqBases::default()
    }

    /// The registry of this OS process (one BEAM VM).
    pub fn global() -> &'static SeqBases {
        static GLOBAL: OnceLock<SeqBases> = OnceLock::new();
        GLOBAL.get_or_init(SeqBases::new)
    }

    /// Records `base` for the sampling session; false when it was taken.
    pub fn claim(&self, base_url: &str, sampling_session_id: &str, base: u64) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.entry((base_url.into(), sampling_session_id.into()))
            .or_default()
            .insert(base)
    }

    /// How many bases the sampling session holds here.
    pub fn held(&self, base_url: &str, sampling_session_id: &str) -> usize {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.get(&(base_url.into(), sampling_session_id.into()))
            .map_or(0, HashSet::len)
    }

    /// Claims `CLONE_STRIDE × draw()` for the first draw whose base is
    /// free; `draw` gives clone numbers in [1, [`MAX_DRAWN_CLONE`]].
    /// `None` if [`MAX_DRAWS`] draws all collided.
    pub fn claim_drawn(
        &self,
        base_url: &str,
        sampling_session_id: &str,
        mut draw: impl FnMut() -> u64,
    ) -> Option<u64> {
        (0..MAX_DRAWS)
            .map(|_| draw().clamp(1, MAX_DRAWN_CLONE) * CLONE_STRIDE)
            .find(|&base| self.claim(base_url, sampling_session_id, base))
    }

    /// Decides and claims the base of a client of `sampling_session_id` at
    /// `ep` (see the module docs). `join` is the server's
    /// `sample_join_sampling_session` flag; it matters only for a clone.
    pub async fn claim_for(
        &self,
        ep: &Endpoint,
        sampling_session_id: &str,
        role: Role,
        join: bool,
    ) -> Result<SeqBase, Error> {
        let url = ep.base_url();
        if role == Role::Original && self.claim(url, sampling_session_id, 0) {
            return Ok(SeqBase {
                first_seq_id: 0,
                source: BaseSource::Original,
            });
        }
        if join {
            return self.claim_joined(ep, sampling_session_id).await;
        }
        let drawn = self.claim_drawn(url, sampling_session_id, || {
            rand::rng().random_range(1..=MAX_DRAWN_CLONE)
        });
        drawn
            .map(|first_seq_id| SeqBase {
                first_seq_id,
                source: BaseSource::Drawn,
            })
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Internal,
                    format!("no free seq_id range left for sampling session {sampling_session_id}"),
                )
            })
    }

    /// Joins until the server's counter gives a base that is free here. A
    /// server whose counter only grows needs at most one join per base held
    /// here, plus one.
    async fn claim_joined(&self, ep: &Endpoint, ssid: &str) -> Result<SeqBase, Error> {
        let url = ep.base_url();
        let max_joins = self.held(url, ssid) + 1;
        let mut last = 0;
        for joins in 1..=max_joins {
            let counter = join_sampling_session(ep, ssid).await?;
            last = counter;
            let base = counter.checked_mul(CLONE_STRIDE).ok_or_else(|| {
                Error::new(
                    ErrorKind::Decode,
                    format!("join_sampling_session answered client_counter {counter}, which overflows a seq_id"),
                )
            })?;
            if self.claim(url, ssid, base) {
                return Ok(SeqBase {
                    first_seq_id: base,
                    source: BaseSource::Joined {
                        client_counter: counter,
                        joins,
                    },
                });
            }
        }
        Err(Error::new(
            ErrorKind::Internal,
            format!(
                "join_sampling_session for {ssid} answered client_counter {last} {max_joins} time(s), \
                 whose seq_ids a client of this VM already uses"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_are_per_service_and_sampling_session() {
        let b = SeqBases::new();
        assert!(b.claim("u1", "s", 0));
        assert!(!b.claim("u1", "s", 0));
        assert!(b.claim("u2", "s", 0));
        assert!(b.claim("u1", "t", 0));
        assert_eq!(b.held("u1", "s"), 1);
        assert_eq!(b.held("u1", "none"), 0);
    }

    #[test]
    fn a_repeated_draw_is_drawn_again() {
        let b = SeqBases::new();
        let mut draws = [3, 3, 3, 4].into_iter();
        let mut next = || draws.next().unwrap();
        assert_eq!(b.claim_drawn("u", "s", &mut next), Some(3 * CLONE_STRIDE));
        assert_eq!(b.claim_drawn("u", "s", &mut next), Some(4 * CLONE_STRIDE));
        // A draw that always repeats gives up instead of spinning.
        assert_eq!(b.claim_drawn("u", "s", || 3), None);
    }

    #[test]
    fn draws_stay_in_range_and_never_give_the_original_base() {
        let b = SeqBases::new();
        assert!(b.claim("u", "s", 0));
        assert_eq!(b.claim_drawn("u", "s", || 0), Some(CLONE_STRIDE));
        assert_eq!(
            b.claim_drawn("u", "s", || u64::MAX),
            Some(MAX_DRAWN_CLONE * CLONE_STRIDE)
        );
        for _ in 0..1000 {
            let base = b
                .claim_drawn("u", "s", || rand::rng().random_range(1..=MAX_DRAWN_CLONE))
                .unwrap();
            assert_eq!(base % CLONE_STRIDE, 0);
            assert!((CLONE_STRIDE..=MAX_DRAWN_CLONE * CLONE_STRIDE).contains(&base));
        }
        assert_eq!(b.held("u", "s"), 1003);
    }
}
