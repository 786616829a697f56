//! `tinker_sim`: the command-line simulator. See `--help` and the README.

use std::io::{Read, Write};
use std::process::ExitCode;
use tinker_sim::config::USAGE;
use tinker_sim::{serve, SimConfig};

fn main() -> ExitCode {
    let config = match SimConfig::from_args(std::env::args().skip(1)) {
        Ok(Some(c)) => c,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("tinker_sim: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tinker_sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: SimConfig) -> ExitCode {
    let watch_stdin = config.exit_on_stdin_eof;
    // Installed before the listening line, so a SIGTERM sent right after it
    // is handled (exit 0), not fatal.
    let signals = Signals::install();
    let (addr, _handle) = match serve(config).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("tinker_sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
    drop(out);
    if watch_stdin {
        std::thread::spawn(|| {
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => std::process::exit(0),
                    Ok(_) => {}
                }
            }
        });
    }
    signals.wait().await;
    ExitCode::SUCCESS
}

#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
        }
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> Self {
        Signals
    }

    async fn wait(self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
