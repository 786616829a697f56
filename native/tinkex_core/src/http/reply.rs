//! A complete HTTP answer, how much of one is read, and what the protocol
//! reads from it.
//!
//! A server (or a proxy in front of it) decides how big an answer is; the
//! client decides how much of it it is willing to hold. Every body is read
//! against a limit: by `Content-Length` before a byte is read, else by a
//! running count as it streams. A success over its limit is refused (the
//! connection is dropped, not drained). Of an error status's body only the
//! first [`ERROR_BODY_MAX`] bytes (or the limit, if smaller) are kept: the
//! status drives the retry decision, the body only explains it.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderName, CONTENT_TYPE};
use reqwest::{StatusCode, Url};

use super::{names, transport_error, MAX_RETRY_AFTER};
use crate::error::{Error, ErrorKind};

/// Default limit of result answers: 256 MiB.
pub const DEFAULT_RESULT_LIMIT: u64 = 256 << 20;
/// Default limit of control answers: 1 MiB.
pub const DEFAULT_CONTROL_LIMIT: u64 = 1 << 20;
/// Most bytes of an error status's body kept (the rest is not read).
pub const ERROR_BODY_MAX: u64 = 64 * 1024;
/// Most bytes reserved up front from a `Content-Length` (the rest grows as
/// it arrives), so a lying header cannot make the client allocate its
/// whole limit at once.
const PREALLOC_MAX: u64 = 8 << 20;

/// Which limit an answer is read against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyClass {
    /// Answers that carry sample results or lists of finished requests:
    /// `retrieve_future` and `retrieve_futures`.
    Result,
    /// Every other call (`client/config`, `create_session`, heartbeats,
    /// `asample`, ...): small JSON documents.
    Control,
}

impl BodyClass {
    /// The class of a request to `url`, by its last path segment.
    ///
    /// ```
    /// use tinkex_core::http::BodyClass;
    /// let u = |p: &str| reqwest::Url::parse(&format!("http://h/base/api/v1/{p}")).unwrap();
    /// assert_eq!(BodyClass::of(&u("retrieve_future")), BodyClass::Result);
    /// assert_eq!(BodyClass::of(&u("retrieve_futures")), BodyClass::Result);
    /// assert_eq!(BodyClass::of(&u("client/config")), BodyClass::Control);
    /// ```
    pub fn of(url: &Url) -> BodyClass {
        match url.path().rsplit('/').next() {
            Some("retrieve_future" | "retrieve_futures") => BodyClass::Result,
            _ => BodyClass::Control,
        }
    }

    /// The name used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyClass::Result => "result",
            BodyClass::Control => "control",
        }
    }
}

/// The largest answer bodies an endpoint reads, in bytes, per
/// [`BodyClass`] (`TinkexNative.SamplingClient`'s `:max_body_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Limit of [`BodyClass::Result`] answers (default 256 MiB).
    pub result: u64,
    /// Limit of [`BodyClass::Control`] answers (default 1 MiB).
    pub control: u64,
}

impl Default for BodyLimits {
    fn default() -> BodyLimits {
        BodyLimits {
            result: DEFAULT_RESULT_LIMIT,
            control: DEFAULT_CONTROL_LIMIT,
        }
    }
}

impl BodyLimits {
    /// The limit of `class`.
    pub fn of(&self, class: BodyClass) -> u64 {
        match class {
            BodyClass::Result => self.result,
            BodyClass::Control => self.control,
        }
    }
}

/// A body being read, counted against its limit. A body that arrives in
/// one chunk (the usual case for small answers) is kept as it came,
/// without a copy; the buffer for more is made on the second chunk.
#[derive(Debug)]
pub(crate) struct Counted {
    limit: u64,
    len: u64,
    reserve: usize,
    first: Option<Bytes>,
    rest: Option<BytesMut>,
}

impl Counted {
    /// An empty body read against `limit`; `expected` is the announced
    /// length, if any, to reserve once a second chunk arrives (bounded by
    /// [`PREALLOC_MAX`]).
    pub(crate) fn new(limit: u64, expected: Option<u64>) -> Counted {
        Counted {
            limit,
            len: 0,
            reserve: expected.unwrap_or(0).min(limit).min(PREALLOC_MAX) as usize,
            first: None,
            rest: None,
        }
    }

    /// Adds a chunk, or keeps only what fits and answers `false` when the
    /// body would go over the limit.
    pub(crate) fn push(&mut self, chunk: Bytes) -> bool {
        let room = self.limit - self.len;
        let fits = chunk.len() as u64 <= room;
        let chunk = if fits {
            chunk
        } else {
            chunk.slice(..room as usize)
        };
        self.len += chunk.len() as u64;
        if self.first.is_none() && self.rest.is_none() {
            self.first = Some(chunk);
            return fits;
        }
        let rest = self
            .rest
            .get_or_insert_with(|| BytesMut::with_capacity(self.reserve.max(self.len as usize)));
        if let Some(f) = self.first.take() {
            rest.extend_from_slice(&f);
        }
        rest.extend_from_slice(&chunk);
        fits
    }

    /// The bytes read.
    pub(crate) fn into_bytes(self) -> Bytes {
        match (self.first, self.rest) {
            (Some(f), _) => f,
            (None, Some(r)) => r.freeze(),
            (None, None) => Bytes::new(),
        }
    }
}

fn too_large(status: StatusCode, class: BodyClass, path: &str, limit: u64, what: String) -> Error {
    let mut e = Error::new(
        ErrorKind::Decode,
        format!(
            "the answer of {path} is too large: {what}, over the {limit}-byte limit of {} answers \
             (raise it with max_body_bytes: [{}: bytes])",
            class.as_str(),
            class.as_str()
        ),
    );
    e.status = Some(status.as_u16());
    e
}

/// Reads `resp`'s body against `limit` (see the module docs). `path` names
/// the call in the error.
pub(crate) async fn read(
    mut resp: reqwest::Response,
    limit: u64,
    class: BodyClass,
    path: &str,
) -> Result<Reply, Error> {
    let status = resp.status();
    let headers = std::mem::take(resp.headers_mut());
    let announced = resp.content_length();
    let success = status.is_success();
    if let Some(n) = announced.filter(|n| success && *n > limit) {
        return Err(too_large(
            status,
            class,
            path,
            limit,
            format!("Content-Length is {n} bytes"),
        ));
    }
    // An error's body only explains it: its start is enough.
    let limit = if success {
        limit
    } else {
        limit.min(ERROR_BODY_MAX)
    };
    let mut body = Counted::new(limit, announced);
    while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
        if !body.push(chunk) {
            if success {
                return Err(too_large(
                    status,
                    class,
                    path,
                    limit,
                    format!("more than {limit} bytes arrived"),
                ));
            }
            break;
        }
    }
    Ok(Reply {
        status,
        headers,
        body: body.into_bytes(),
    })
}

/// A complete HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The status as a number.
    pub fn code(&self) -> u16 {
        self.status.as_u16()
    }

    fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// True when the answer is a protobuf payload.
    pub fn is_protobuf(&self) -> bool {
        self.header(&CONTENT_TYPE)
            .is_some_and(|c| c.contains("application/x-protobuf"))
    }

    /// The server's `x-should-retry` override, if any.
    pub fn should_retry(&self) -> Option<bool> {
        match self.header(&names::SHOULD_RETRY)? {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    /// The delay the server asks for: `retry-after-ms`, else `retry-after`
    /// in seconds or as an HTTP date; only when within (0, 60] s, as the
    /// SDK honours it.
    pub fn retry_after(&self) -> Option<Duration> {
        let ms = self
            .header(&names::RETRY_AFTER_MS)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|ms| ms / 1000.0);
        let secs = ms.or_else(|| {
            let v = self.header(&reqwest::header::RETRY_AFTER)?.trim();
            v.parse::<f64>().ok().or_else(|| {
                let at = httpdate::parse_http_date(v).ok()?;
                Some(match at.duration_since(std::time::SystemTime::now()) {
                    Ok(d) => d.as_secs_f64(),
                    Err(_) => 0.0,
                })
            })
        })?;
        (secs > 0.0 && secs <= MAX_RETRY_AFTER.as_secs_f64()).then(|| Duration::from_secs_f64(secs))
    }

    /// Parses the body as JSON; a malformed body is a `Decode` error.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::new(
                ErrorKind::Decode,
                format!("Malformed JSON answer (status {}): {e}", self.code()),
            )
        })
    }

    /// The server's explanation: `detail`, `message` or `error` of a JSON
    /// body, else the body text (truncated).
    pub fn detail(&self) -> String {
        const MAX: usize = 1000;
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(&self.body) {
            for k in ["detail", "message", "error"] {
                match m.get(k) {
                    Some(serde_json::Value::String(s)) => return s.clone(),
                    Some(v) if !v.is_null() => return v.to_string(),
                    _ => {}
                }
            }
        }
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        match text.char_indices().nth(MAX) {
            Some((i, _)) => format!("{}…", &text[..i]),
            None => text.to_owned(),
        }
    }

    /// The answer as an HTTP error: `Error code: <status> - <detail>`,
    /// with the server's [`Reply::retry_after`].
    pub fn to_error(&self) -> Error {
        let detail = self.detail();
        let msg = if detail.is_empty() {
            format!("Error code: {}", self.code())
        } else {
            format!("Error code: {} - {detail}", self.code())
        };
        Error::http(self.code(), msg).with_retry_after(self.retry_after())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn reply(status: u16, headers: &[(&'static str, &str)], body: &'static str) -> Reply {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                HeaderName::from_static(k),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            headers: h,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn retry_after_rules() {
        let ms = |v: &str| reply(429, &[("retry-after-ms", v)], "").retry_after();
        assert_eq!(ms("300"), Some(Duration::from_millis(300)));
        assert_eq!(ms("0"), None);
        assert_eq!(ms("60001"), None);
        let s = |v: &str| reply(429, &[("retry-after", v)], "").retry_after();
        assert_eq!(s("2"), Some(Duration::from_secs(2)));
        assert_eq!(s("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(s("61"), None);
        assert_eq!(s("soon"), None);
        let at = std::time::SystemTime::now() + Duration::from_secs(30);
        let d = s(&httpdate::fmt_http_date(at)).unwrap();
        assert!(
            d > Duration::from_secs(27) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(
            s(&httpdate::fmt_http_date(std::time::SystemTime::UNIX_EPOCH)),
            None
        );
        // retry-after-ms wins over retry-after.
        let both = reply(429, &[("retry-after-ms", "100"), ("retry-after", "5")], "");
        assert_eq!(both.retry_after(), Some(Duration::from_millis(100)));
        assert_eq!(reply(429, &[], "").retry_after(), None);
    }

    #[test]
    fn content_type_and_should_retry() {
        assert!(reply(200, &[("content-type", "application/x-protobuf")], "").is_protobuf());
        assert!(!reply(200, &[("content-type", "application/json")], "").is_protobuf());
        assert_eq!(
            reply(500, &[("x-should-retry", "false")], "").should_retry(),
            Some(false)
        );
    }

    #[test]
    fn counted_bodies_stop_at_the_limit() {
        let chunk = |s: &'static str| Bytes::from_static(s.as_bytes());
        let mut one = Counted::new(10, None);
        assert!(one.push(chunk("0123456789")));
        let b = one.into_bytes();
        assert_eq!(&b[..], b"0123456789");

        let mut many = Counted::new(10, Some(10));
        assert!(many.push(chunk("0123")));
        assert!(many.push(chunk("456")));
        assert!(!many.push(chunk("789AB")));
        assert_eq!(&many.into_bytes()[..], b"0123456789");

        let mut unreserved = Counted::new(5, None);
        assert!(unreserved.push(chunk("ab")));
        assert!(unreserved.push(chunk("cd")));
        assert!(!unreserved.push(chunk("ef")));
        assert_eq!(&unreserved.into_bytes()[..], b"abcde");

        assert!(Counted::new(0, Some(0)).into_bytes().is_empty());
        // One chunk is kept as it came; a huge announced length reserves
        // only PREALLOC_MAX, and only once a second chunk arrives.
        let mut c = Counted::new(u64::MAX, Some(u64::MAX));
        let big = Bytes::from(vec![1u8; 100]);
        c.push(big.clone());
        assert!(c.rest.is_none());
        c.push(big);
        assert_eq!(c.rest.as_ref().unwrap().capacity() as u64, PREALLOC_MAX);
    }

    #[test]
    fn too_large_names_the_call_and_the_option() {
        let e = too_large(
            StatusCode::OK,
            BodyClass::Control,
            "/api/v1/client/config",
            1024,
            "Content-Length is 2048 bytes".into(),
        );
        assert_eq!(
            e.message,
            "the answer of /api/v1/client/config is too large: Content-Length is 2048 bytes, \
             over the 1024-byte limit of control answers (raise it with max_body_bytes: [control: bytes])"
        );
        assert_eq!(
            (e.kind, e.status, e.retryable),
            (ErrorKind::Decode, Some(200), false)
        );
    }

    #[test]
    fn error_messages() {
        let e = reply(422, &[], r#"{"detail":[{"msg":"bad"}]}"#).to_error();
        assert_eq!(e.message, r#"Error code: 422 - [{"msg":"bad"}]"#);
        assert!(!e.retryable);
        let e = reply(503, &[], "upstream down").to_error();
        assert_eq!(e.message, "Error code: 503 - upstream down");
        assert!(e.retryable);
        assert_eq!(reply(400, &[], "").to_error().message, "Error code: 400");
        let e = reply(401, &[], r#"{"message":"bad key"}"#).to_error();
        assert_eq!(e.status, Some(401));
        assert!(e.message.ends_with("bad key"));
        assert_eq!(e.retry_after_ms, None);
    }

    #[test]
    fn error_carries_retry_after() {
        let e = reply(503, &[("retry-after-ms", "250")], "").to_error();
        assert_eq!(e.retry_after_ms, Some(250));
        let e = reply(429, &[("retry-after", "2")], "").to_error();
        assert_eq!(e.retry_after_ms, Some(2000));
        // Outside (0, 60] s the server's value is not honoured, nor reported.
        let e = reply(429, &[("retry-after", "600")], "").to_error();
        assert_eq!(e.retry_after_ms, None);
    }
}
