//! Start-up configuration, and the command line that fills it.

use crate::log::DEFAULT_CAPACITY;
use crate::scenario::Latency;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

/// How the simulator starts. [`SimConfig::default`] is what a test wants:
/// an ephemeral port on 127.0.0.1, any `tml-` key, zero latency, 30 s hold.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Address to bind (default 127.0.0.1).
    pub host: IpAddr,
    /// Port to bind (default 0: ephemeral).
    pub port: u16,
    /// Accept only this API key; `None` accepts any key starting with `tml-`
    /// (or a JWT starting with `eyJ`).
    pub api_key: Option<String>,
    /// Latency of a future (default 0).
    pub latency: Latency,
    /// How long a pending poll is held (default 30 s).
    pub hold: Duration,
    /// Scenario file applied at start and on `/_sim/reset`.
    pub scenario_file: Option<PathBuf>,
    /// Inline scenario (applied after the file).
    pub scenario: Option<serde_json::Value>,
    /// JSON-lines log file.
    pub log_file: Option<PathBuf>,
    /// Whether requests are logged (default true).
    pub log: bool,
    /// Entries kept in memory (default 50 000).
    pub log_capacity: usize,
    /// Exit when stdin closes (binary only; default true).
    pub exit_on_stdin_eof: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            api_key: None,
            latency: Latency::Fixed(0),
            hold: Duration::from_secs(30),
            scenario_file: None,
            scenario: None,
            log_file: None,
            log: true,
            log_capacity: DEFAULT_CAPACITY,
            exit_on_stdin_eof: true,
        }
    }
}

/// Text of `tinker_sim --help`.
pub const USAGE: &str = "\
tinker_sim: local simulator of the Tinker sampling API

USAGE: tinker_sim [OPTIONS]

  --port N             port to bind on 127.0.0.1 (default 0 = ephemeral)
  --host ADDR          address to bind (default 127.0.0.1)
  --scenario FILE      scenario JSON applied at start and on /_sim/reset
  --api-key KEY        accept only this key (default: any key starting with tml-)
  --latency-ms N|A..B  time from asample to result, fixed or uniform (default 0)
  --hold-ms N          how long a pending poll is held before try_again (default 30000)
  --log FILE           also write every request as a JSON line to FILE
  --no-log             do not log requests (benchmarks)
  --log-capacity N     requests kept in memory for /_sim/log (default 50000)
  --no-stdin-exit      keep running when stdin closes
  -h, --help           this text

The first line on stdout is `listening on 127.0.0.1:PORT`. The process exits
when stdin closes (unless --no-stdin-exit), on SIGTERM and on SIGINT.
";

impl SimConfig {
    /// Parses command-line arguments (without the program name).
    /// `Ok(None)` means `--help` was asked for.
    pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Result<Option<Self>, String> {
        let mut c = SimConfig::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = |name: &str| {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match flag.as_str() {
                "-h" | "--help" => return Ok(None),
                "--port" => {
                    let v = value("--port")?;
                    c.port = v
                        .parse()
                        .map_err(|_| format!("--port: expected 0..65535, got {v:?}"))?;
                }
                "--host" => {
                    let v = value("--host")?;
                    c.host = v
                        .parse()
                        .map_err(|_| format!("--host: expected an IP address, got {v:?}"))?;
                }
                "--scenario" => c.scenario_file = Some(value("--scenario")?.into()),
                "--api-key" => c.api_key = Some(value("--api-key")?),
                "--latency-ms" => {
                    c.latency = Latency::parse(&value("--latency-ms")?)
                        .map_err(|e| format!("--latency-ms: {e}"))?
                }
                "--hold-ms" => {
                    let v = value("--hold-ms")?;
                    let ms: u64 = v
                        .parse()
                        .map_err(|_| format!("--hold-ms: expected milliseconds, got {v:?}"))?;
                    c.hold = Duration::from_millis(ms);
                }
                "--log" => c.log_file = Some(value("--log")?.into()),
                "--no-log" => c.log = false,
                "--log-capacity" => {
                    let v = value("--log-capacity")?;
                    c.log_capacity = v
                        .parse()
                        .map_err(|_| format!("--log-capacity: expected a count, got {v:?}"))?;
                }
                "--no-stdin-exit" => c.exit_on_stdin_eof = false,
                other => return Err(format!("unknown option {other:?} (see --help)")),
            }
        }
        Ok(Some(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<SimConfig>, String> {
        SimConfig::from_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags() {
        let c = parse(&[
            "--port",
            "0",
            "--latency-ms=5..50",
            "--hold-ms",
            "100",
            "--api-key",
            "tml-x",
            "--no-log",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.latency, Latency::Range(5, 50));
        assert_eq!(c.hold, Duration::from_millis(100));
        assert_eq!(c.api_key.as_deref(), Some("tml-x"));
        assert!(!c.log);
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&["--port", "x"]).unwrap_err().contains("--port"));
        assert!(parse(&["--bogus"]).unwrap_err().contains("--bogus"));
        assert!(parse(&["--port"]).unwrap_err().contains("needs a value"));
    }
}
