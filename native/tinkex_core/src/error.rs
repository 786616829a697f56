//! The one error type every layer of the core returns.
//!
//! An [`Error`] says *what* went wrong ([`ErrorKind`]), the HTTP status when
//! there was one, a human message, the request id when the server gave one,
//! and whether the retry handler may try again. Classification lives in
//! [`crate::classify`]; this module only carries the facts.

use std::fmt;

/// What kind of failure an [`Error`] is. Each maps to one `type` atom on
/// the Elixir side (`TinkexNative.Error.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The connection failed, was reset or closed before an answer.
    Transport,
    /// The HTTP request timed out.
    Timeout,
    /// The server answered with a non-success status (see `status`).
    Http,
    /// The future expired (410 while polling): the attempt may be retried
    /// with a new seq_id.
    Expired,
    /// The server said the request failed (`{"error":..,"category":..}`).
    /// Never retried.
    RequestFailed,
    /// The answer could not be decoded. Never retried.
    Decode,
    /// No request of the handler succeeded within `progress_timeout`.
    Stuck,
    /// The caller's input was rejected before anything was sent.
    Validation,
    /// The job was cancelled (caller gone or explicit cancel).
    Cancelled,
    /// A bug: a panic inside the native code, caught.
    Internal,
}

impl ErrorKind {
    /// The stable snake_case name used on the wire to Elixir and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transport => "transport",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Http => "http",
            ErrorKind::Expired => "expired",
            ErrorKind::RequestFailed => "request_failed",
            ErrorKind::Decode => "decode",
            ErrorKind::Stuck => "stuck",
            ErrorKind::Validation => "validation",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Internal => "internal",
        }
    }
}

/// The category a failed future carries (`"user" | "server" | "unknown"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// The request itself was bad (the caller's fault).
    User,
    /// The service failed.
    Server,
    /// The server did not say, or said something we do not know.
    Unknown,
}

impl Category {
    /// Parses the wire value; anything unknown is [`Category::Unknown`].
    pub fn parse(s: &str) -> Category {
        match s {
            "user" => Category::User,
            "server" => Category::Server,
            _ => Category::Unknown,
        }
    }

    /// The wire/atom name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::User => "user",
            Category::Server => "server",
            Category::Unknown => "unknown",
        }
    }
}

/// A failure of one request, with everything a caller needs to act on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// What went wrong.
    pub kind: ErrorKind,
    /// The failed future's category, when the server gave one.
    pub category: Option<Category>,
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// A message for humans. Never contains the API key.
    pub message: String,
    /// The server's request id, when known.
    pub request_id: Option<String>,
    /// Whether the retry handler may start a new attempt.
    pub retryable: bool,
    /// The layer that saw the error ruled out a new attempt, whatever the
    /// retry rule says of its kind and status (a poll the SDK fails for
    /// good: its status is the poll's, not a submit's). `retryable` is
    /// then `false`, and the handler keeps it so.
    pub fatal: bool,
    /// The delay the server asked for with an HTTP error answer
    /// (`retry-after-ms` / `retry-after`, when within (0, 60] s), in ms.
    pub retry_after_ms: Option<u64>,
}

impl Error {
    /// A new error of `kind`; `retryable` follows [`crate::classify::default_retryable`].
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        let mut e = Error {
            kind,
            category: None,
            status: None,
            message: message.into(),
            request_id: None,
            retryable: false,
            fatal: false,
            retry_after_ms: None,
        };
        e.retryable = crate::classify::default_retryable(&e);
        e
    }

    /// An HTTP status error; retryable for 408, 409, 429 and 5xx.
    pub fn http(status: u16, message: impl Into<String>) -> Error {
        let mut e = Error::new(ErrorKind::Http, message);
        e.status = Some(status);
        e.retryable = crate::classify::default_retryable(&e);
        e
    }

    /// A failed future: never retried, whatever the category.
    pub fn request_failed(category: Category, message: impl Into<String>) -> Error {
        let mut e = Error::new(ErrorKind::RequestFailed, message);
        e.category = Some(category);
        e
    }

    /// Rules out any new attempt for this error (see [`Error::fatal`]).
    ///
    /// ```
    /// use tinkex_core::error::Error;
    /// let e = Error::http(409, "conflict while polling").into_fatal();
    /// assert!(e.fatal && !e.retryable);
    /// ```
    pub fn into_fatal(mut self) -> Error {
        self.retryable = false;
        self.fatal = true;
        self
    }

    /// Sets the server's requested delay.
    pub fn with_retry_after(mut self, after: Option<std::time::Duration>) -> Error {
        self.retry_after_ms = after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Sets the request id.
    pub fn with_request_id(mut self, id: impl Into<String>) -> Error {
        self.request_id = Some(id.into());
        self
    }

    /// The stuck error of the watchdog, with the Python SDK's exact text.
    pub fn stuck(progress_timeout_ms: u64) -> Error {
        Error::new(
            ErrorKind::Stuck,
            format!(
                "No progress made in {}s. Requests appear to be stuck.",
                crate::classify::format_seconds(progress_timeout_ms)
            ),
        )
    }

    /// True for errors the Python SDK counts as the user's fault: a failed
    /// future of category `user`, or a 4xx other than 408. Only telemetry
    /// severity depends on it.
    pub fn is_user_error(&self) -> bool {
        self.category == Some(Category::User)
            || matches!(self.status, Some(s) if (400..500).contains(&s) && s != 408)
            || self.kind == ErrorKind::Validation
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
