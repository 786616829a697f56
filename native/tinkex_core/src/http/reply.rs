//! A complete HTTP answer and what the protocol reads from it.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, CONTENT_TYPE};
use reqwest::StatusCode;

use super::{names, MAX_RETRY_AFTER};
use crate::error::{Error, ErrorKind};

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
