//! Body and answer of `POST /api/v1/retrieve_futures`, the session-level
//! long poll (`crate::sampling::futures_poller`).

use serde::{Deserialize, Serialize};

/// Whose completions a `retrieve_futures` poll asks for: one sampling
/// session and one clone of it.
#[derive(Debug, Serialize)]
pub struct FuturesTarget<'a> {
    /// Always `"sampling_session"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The sampling session.
    pub sampling_session_id: &'a str,
    /// The clone (`seq_id / 1e9`; 0 for the client that made the session).
    pub cloned_sampler_id: u64,
}

/// The body of `POST /api/v1/retrieve_futures`.
///
/// ```
/// use tinkex_core::wire::{FuturesRetrieveRequest, FuturesTarget};
/// let ids = ["r1".to_owned()];
/// let req = FuturesRetrieveRequest {
///     target: FuturesTarget { kind: "sampling_session", sampling_session_id: "s", cloned_sampler_id: 0 },
///     prev_cursor: 3,
///     retrieved_request_ids: &ids,
///     timeout: Some(0.0),
/// };
/// assert_eq!(
///     serde_json::to_string(&req).unwrap(),
///     r#"{"target":{"type":"sampling_session","sampling_session_id":"s","cloned_sampler_id":0},"prev_cursor":3,"retrieved_request_ids":["r1"],"timeout":0.0}"#
/// );
/// ```
#[derive(Debug, Serialize)]
pub struct FuturesRetrieveRequest<'a> {
    /// The session and clone polled.
    pub target: FuturesTarget<'a>,
    /// The cursor of the last answer (0 at first): completions at or
    /// before it count as seen.
    pub prev_cursor: u64,
    /// Requests whose results were fetched since the last poll, sorted.
    pub retrieved_request_ids: &'a [String],
    /// `Some(0.0)` for an ack-only poll that must answer at once; absent
    /// for a long poll held at the server's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
}

/// The answer of `retrieve_futures`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FuturesAnswer {
    /// Completions after `prev_cursor`.
    #[serde(default)]
    pub completions: Vec<FutureCompletion>,
    /// The cursor to send back as `prev_cursor`.
    pub cursor: u64,
}

/// One completed request of a `retrieve_futures` answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FutureCompletion {
    /// `"finished"` or `"failed"` (anything else is treated as failed: the
    /// fetch that follows tells what happened).
    pub state: String,
    /// The request.
    pub request_id: String,
    /// Size of the finished result, when the server knows it.
    #[serde(default)]
    pub response_payload_uncompressed_size: Option<u64>,
}

impl FutureCompletion {
    /// The result size to reserve before fetching: only for a finished
    /// request whose size is known and not zero (the SDK's truthiness).
    pub fn payload_size(&self) -> Option<u64> {
        (self.state == "finished")
            .then_some(self.response_payload_uncompressed_size)
            .flatten()
            .filter(|&n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let a: FuturesAnswer = serde_json::from_str(
            r#"{"completions":[{"state":"finished","request_id":"a","response_payload_uncompressed_size":12},
                               {"state":"finished","request_id":"b","response_payload_uncompressed_size":null},
                               {"state":"failed","request_id":"c"}],"cursor":3,"extra":1}"#,
        )
        .unwrap();
        assert_eq!(a.cursor, 3);
        let sizes: Vec<_> = a.completions.iter().map(|c| c.payload_size()).collect();
        assert_eq!(sizes, [Some(12), None, None]);
        let empty: FuturesAnswer = serde_json::from_str(r#"{"cursor":0}"#).unwrap();
        assert!(empty.completions.is_empty());
        assert!(serde_json::from_str::<FuturesAnswer>(r#"{"completions":[]}"#).is_err());
    }
}
