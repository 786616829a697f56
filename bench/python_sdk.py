"""Benchmark peer: the official Tinker Python SDK on the local simulator.

    python bench/python_sdk.py --base-url http://127.0.0.1:PORT \
        --samples 20000 --concurrency 64            # P2: samples/s
    python bench/python_sdk.py --base-url ... --samples 2000 --concurrency 64 \
        --storm-ms 3000                             # P6: requests per sample

Drives `ServiceClient(base_url=...).create_sampling_client(base_model=...)`
and `SamplingClient.sample(...)` futures, keeping at most `--concurrency`
samples outstanding (a semaphore released by each future's done callback).
Prints one JSON line.

With `--storm-ms`, it scripts the simulator through its admin API (P6):
just before the first sample it installs the storm (every `asample`
answers 429, and 20% of `retrieve_future` polls answer 500), after
`--storm-ms` it lifts the 429s (the 500s stay), and it reads
`/_sim/stats` before and after to count the `asample` and
`retrieve_future` requests sent per successful sample.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request

os.environ.setdefault("TINKER_API_KEY", "tml-bench")
os.environ.setdefault("TINKER_TELEMETRY", "0")

import tinker  # noqa: E402
from tinker import types  # noqa: E402

# The P6 scenario, shared with bench/elixir/p6_requests.exs.
POLL_5XX = {
    "endpoint": "retrieve_future",
    "match": {"rate": 0.2},
    "action": {"status": 500},
    "name": "poll-5xx",
}
STORM_429 = {"endpoint": "asample", "action": {"status": 429}, "name": "storm-429"}


def admin(base_url: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{base_url}/_sim/{path}",
        data=data,
        method="GET" if body is None else "POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def cpu_seconds(pid: str) -> float | None:
    """User + system CPU seconds of a process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def sample_requests(stats: dict) -> int:
    """asample + retrieve_future requests the simulator answered."""
    eps = stats.get("endpoints", {})
    return sum(
        sum(eps.get(name, {}).values()) for name in ("asample", "retrieve_future")
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--storm-ms", type=int, default=0, help="P6: 429 storm length")
    args = ap.parse_args()
    base = args.base_url.rstrip("/")

    service = tinker.ServiceClient(base_url=base, api_key=os.environ["TINKER_API_KEY"])
    sc = service.create_sampling_client(base_model="Qwen/Qwen3-8B")
    if hasattr(sc, "result"):
        sc = sc.result()
    prompt = types.ModelInput.from_ints([1, 2, 3])
    params = types.SamplingParams(max_tokens=args.max_tokens, temperature=0.7)

    # One warm-up sample so session set-up is not timed.
    sc.sample(prompt=prompt, num_samples=1, sampling_params=params).result()

    storm = args.storm_ms > 0
    if storm:
        admin(base, "scenario", {"rules": [STORM_429, POLL_5XX]})
        before = admin(base, "stats")
        timer = threading.Timer(
            args.storm_ms / 1000, lambda: admin(base, "scenario", {"rules": [POLL_5XX]})
        )

    window = threading.Semaphore(args.concurrency)
    lock = threading.Lock()
    counts = {"ok": 0, "errors": 0, "first_error": None}
    all_done = threading.Event()

    def on_done(f) -> None:
        exc = f.exception()
        with lock:
            if exc is None:
                counts["ok"] += 1
            else:
                counts["errors"] += 1
                counts["first_error"] = counts["first_error"] or repr(exc)
            finished = counts["ok"] + counts["errors"]
        window.release()
        if finished == args.samples:
            all_done.set()

    sim_pid = os.environ.get("SIM_PID")
    sim_cpu0 = cpu_seconds(sim_pid) if sim_pid else None
    cpu0 = time.process_time()
    started = time.monotonic()
    if storm:
        timer.start()
    for _ in range(args.samples):
        window.acquire()
        fut = sc.sample(prompt=prompt, num_samples=1, sampling_params=params)
        fut.future().add_done_callback(on_done)
    all_done.wait()
    seconds = time.monotonic() - started
    client_cpu_s = time.process_time() - cpu0
    sim_cpu1 = cpu_seconds(sim_pid) if sim_pid else None

    out = {
        "client": "python_sdk",
        "tinker_version": tinker.__version__,
        "samples": counts["ok"],
        "errors": counts["errors"],
        "concurrency": args.concurrency,
        "seconds": seconds,
        "samples_per_s": counts["ok"] / seconds,
        "client_cpu_s": client_cpu_s,
        "sim_cpu_s": None if sim_cpu0 is None or sim_cpu1 is None else sim_cpu1 - sim_cpu0,
    }
    if storm:
        timer.join()
        after = admin(base, "stats")
        sent = sample_requests(after) - sample_requests(before)
        out["storm_ms"] = args.storm_ms
        out["requests"] = sent
        out["requests_per_sample"] = sent / max(counts["ok"], 1)
        count = lambda st: st.get("endpoints", {}).get("asample", {}).get("429", 0)  # noqa: E731
        out["asample_429s"] = count(after) - count(before)
    if counts["first_error"]:
        out["first_error"] = counts["first_error"]
    print(json.dumps(out), flush=True)
    # The SDK's background thread can keep the process alive; leave at once.
    sys.stdout.flush()
    os._exit(0 if counts["errors"] == 0 else 1)


if __name__ == "__main__":
    sys.exit(main())
