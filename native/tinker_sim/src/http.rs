//! Answers: what a handler returns, and how it becomes an HTTP response.

use crate::padded::{Padded, SimBody};
use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

/// `Content-Type` of JSON answers.
pub const JSON: &str = "application/json";
/// `Content-Type` of protobuf answers.
pub const PROTOBUF: &str = "application/x-protobuf";

/// An answer, or the decision not to answer.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status; 0 for a dropped connection.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<&'static str>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
    /// The log's `outcome`.
    pub outcome: &'static str,
    /// Close the connection instead of answering.
    pub drop: bool,
    /// Instead of `body`: a generated body of this many bytes, sent
    /// chunked when the flag is set (see [`crate::padded`]).
    pub padded: Option<(u64, bool)>,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, body: &Value, outcome: &'static str) -> Reply {
        Reply {
            status,
            content_type: Some(JSON),
            headers: Vec::new(),
            body: Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
            outcome,
            drop: false,
            padded: None,
        }
    }

    /// A 200 JSON answer with outcome `ok`.
    pub fn ok(body: Value) -> Reply {
        Reply::json(200, &body, "ok")
    }

    /// An error answer in the shape FastAPI and tinkex understand:
    /// `{"detail": msg, "message": msg, "category": ...}` plus `extra` keys.
    pub fn error(status: u16, message: &str, extra: Value) -> Reply {
        let category = if (400..500).contains(&status) {
            "user"
        } else {
            "server"
        };
        let mut body = json!({"detail": message, "message": message, "category": category});
        if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
            b.extend(extra);
        }
        Reply::json(status, &body, "error")
    }

    /// A protobuf answer.
    pub fn protobuf(body: Vec<u8>, outcome: &'static str) -> Reply {
        Reply {
            status: 200,
            content_type: Some(PROTOBUF),
            headers: Vec::new(),
            body: Bytes::from(body),
            outcome,
            drop: false,
            padded: None,
        }
    }

    /// Bytes as they are, with the given content type (none for an empty body).
    pub fn raw(
        status: u16,
        body: Bytes,
        content_type: Option<&'static str>,
        outcome: &'static str,
    ) -> Reply {
        Reply {
            status,
            content_type,
            headers: Vec::new(),
            body,
            outcome,
            drop: false,
            padded: None,
        }
    }

    /// Close the connection without answering.
    pub fn drop_connection() -> Reply {
        Reply {
            status: 0,
            content_type: None,
            headers: Vec::new(),
            body: Bytes::new(),
            outcome: "drop",
            drop: true,
            padded: None,
        }
    }

    /// Adds headers.
    pub fn with_headers(mut self, headers: &[(String, String)]) -> Reply {
        self.headers.extend(headers.iter().cloned());
        self
    }

    /// A generated JSON body of `bytes` bytes (chunked: without
    /// `content-length`).
    pub fn padded(status: u16, bytes: u64, chunked: bool, outcome: &'static str) -> Reply {
        let mut r = Reply::raw(status, Bytes::new(), Some(JSON), outcome);
        r.padded = Some((bytes, chunked));
        r
    }

    /// The HTTP response.
    pub fn into_response(self) -> Response<SimBody> {
        let body = match self.padded {
            Some((bytes, chunked)) => Either::Right(Padded::new(bytes, chunked)),
            None => Either::Left(Full::new(self.body)),
        };
        let mut resp = Response::new(body);
        *resp.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = resp.headers_mut();
        if let Some(ct) = self.content_type {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        for (k, v) in &self.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                h.insert(k, v);
            }
        }
        resp
    }
}
