//! The request log: a bounded in-memory ring (`GET /_sim/log`) and an
//! optional JSON-lines file (`--log FILE`).

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// Default number of entries kept in memory.
pub const DEFAULT_CAPACITY: usize = 50_000;

/// A request body as received.
#[derive(Debug)]
pub enum Body {
    /// No bytes.
    Empty,
    /// A JSON document.
    Json(Value),
    /// Bytes that are not JSON, with the parse error.
    Invalid(String, bytes::Bytes),
}

impl Body {
    /// Parses raw request bytes.
    pub fn parse(raw: bytes::Bytes) -> Body {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Body::Empty;
        }
        match serde_json::from_slice(&raw) {
            Ok(v) => Body::Json(v),
            Err(e) => Body::Invalid(e.to_string(), raw),
        }
    }

    /// The JSON document, if the body is one.
    pub fn json(&self) -> Option<&Value> {
        match self {
            Body::Json(v) => Some(v),
            _ => None,
        }
    }

    /// As logged: the JSON value, `null` when empty, else the text.
    pub fn to_value(&self) -> Value {
        match self {
            Body::Empty => Value::Null,
            Body::Json(v) => v.clone(),
            Body::Invalid(_, raw) => Value::String(String::from_utf8_lossy(raw).into_owned()),
        }
    }
}

/// One logged request.
#[derive(Debug)]
pub struct LogEntry {
    /// Position in the log, from 0, never reused until `/_sim/reset`.
    pub seq: u64,
    /// Microseconds from server start to the arrival of the request.
    pub t_us: u64,
    /// Microseconds from server start to the answer.
    pub t_done_us: u64,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Endpoint name, if the path is an API endpoint.
    pub endpoint: Option<&'static str>,
    /// Request headers, names lowercased, `x-api-key` redacted.
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: Arc<Body>,
    /// Answer status; 0 when no answer was sent.
    pub status: u16,
    /// What the answer was (see the README).
    pub outcome: &'static str,
    /// Index of the scenario rule that scripted the answer.
    pub rule: Option<usize>,
    /// The seq_id concerned, when known.
    pub seq_id: Option<i64>,
    /// The request id concerned, when known.
    pub request_id: Option<Arc<str>>,
}

impl Serialize for LogEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Headers<'a>(&'a [(String, String)]);
        impl Serialize for Headers<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0 {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("seq", &self.seq)?;
        m.serialize_entry("t_us", &self.t_us)?;
        m.serialize_entry("t_done_us", &self.t_done_us)?;
        m.serialize_entry("method", &self.method)?;
        m.serialize_entry("path", &self.path)?;
        m.serialize_entry("endpoint", &self.endpoint)?;
        m.serialize_entry("headers", &Headers(&self.headers))?;
        m.serialize_entry("body", &self.body.to_value())?;
        m.serialize_entry("status", &self.status)?;
        m.serialize_entry("outcome", &self.outcome)?;
        m.serialize_entry("rule", &self.rule)?;
        m.serialize_entry("seq_id", &self.seq_id)?;
        m.serialize_entry("request_id", &self.request_id.as_deref())?;
        m.end()
    }
}

struct Ring {
    entries: VecDeque<Arc<LogEntry>>,
    next_seq: u64,
    dropped: u64,
}

/// The log.
pub struct Log {
    ring: Mutex<Ring>,
    capacity: usize,
    file: Option<Mutex<mpsc::Sender<String>>>,
}

impl Log {
    /// A log keeping `capacity` entries in memory, and writing every entry to
    /// `file` as a JSON line when given.
    pub fn new(capacity: usize, file: Option<std::fs::File>) -> Self {
        let file = file.map(|f| {
            let (tx, rx) = mpsc::channel::<String>();
            std::thread::Builder::new()
                .name("tinker_sim-log".into())
                .spawn(move || write_lines(f, rx))
                .expect("spawn log writer");
            Mutex::new(tx)
        });
        Self {
            ring: Mutex::new(Ring {
                entries: VecDeque::new(),
                next_seq: 0,
                dropped: 0,
            }),
            capacity,
            file,
        }
    }

    /// Appends an entry, assigning its `seq`.
    pub fn push(&self, mut entry: LogEntry) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        entry.seq = ring.next_seq;
        ring.next_seq += 1;
        let entry = Arc::new(entry);
        if self.capacity > 0 {
            if ring.entries.len() >= self.capacity {
                ring.entries.pop_front();
                ring.dropped += 1;
            }
            ring.entries.push_back(entry.clone());
        }
        drop(ring);
        if let Some(file) = &self.file {
            if let Ok(line) = serde_json::to_string(&*entry) {
                let _ = file.lock().unwrap_or_else(|e| e.into_inner()).send(line);
            }
        }
    }

    /// Entries with `seq >= since`, at most `limit`; the `seq` to ask for
    /// next; and how many entries the ring has dropped.
    pub fn since(&self, since: u64, limit: usize) -> (Vec<Arc<LogEntry>>, u64, u64) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let entries: Vec<_> = ring
            .entries
            .iter()
            .filter(|e| e.seq >= since)
            .take(limit)
            .cloned()
            .collect();
        let next = entries
            .last()
            .map_or(since.min(ring.next_seq), |e| e.seq + 1);
        (entries, next, ring.dropped)
    }

    /// Number of entries in memory and dropped so far.
    pub fn sizes(&self) -> (usize, u64) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        (ring.entries.len(), ring.dropped)
    }

    /// Forgets every entry and restarts `seq` at 0.
    pub fn clear(&self) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.entries.clear();
        ring.next_seq = 0;
        ring.dropped = 0;
    }
}

fn write_lines(file: std::fs::File, rx: mpsc::Receiver<String>) {
    let mut w = std::io::BufWriter::new(file);
    while let Ok(line) = rx.recv() {
        let _ = writeln!(w, "{line}");
        while let Ok(line) = rx.try_recv() {
            let _ = writeln!(w, "{line}");
        }
        let _ = w.flush();
    }
}

/// Redacts an API key for the log: keeps its first 4 characters.
pub fn redact(key: &str) -> String {
    let prefix: String = key.chars().take(4).collect();
    format!("{prefix}<redacted>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> LogEntry {
        LogEntry {
            seq: 0,
            t_us: 1,
            t_done_us: 2,
            method: "POST".into(),
            path: "/api/v1/asample".into(),
            endpoint: Some("asample"),
            headers: vec![("x-api-key".into(), redact("tml-secret"))],
            body: Arc::new(Body::parse(bytes::Bytes::from_static(b"{\"seq_id\":3}"))),
            status: 200,
            outcome: "created",
            rule: None,
            seq_id: Some(3),
            request_id: None,
        }
    }

    #[test]
    fn ring_is_bounded_and_pages() {
        let log = Log::new(3, None);
        for _ in 0..5 {
            log.push(entry());
        }
        let (entries, next, dropped) = log.since(0, 100);
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!((next, dropped), (5, 2));
        let (entries, next, _) = log.since(4, 100);
        assert_eq!((entries.len(), next), (1, 5));
        let (entries, next, _) = log.since(5, 100);
        assert_eq!((entries.len(), next), (0, 5));
    }

    #[test]
    fn entry_json() {
        let v = serde_json::to_value(entry()).unwrap();
        assert_eq!(v["headers"]["x-api-key"], "tml-<redacted>");
        assert_eq!(v["body"]["seq_id"], 3);
        assert_eq!(v["status"], 200);
        assert_eq!(
            Body::parse(bytes::Bytes::from_static(b"{nope")).to_value(),
            "{nope"
        );
    }
}
