"""Benchmark peer: the official Tinker Python SDK on the local simulator.

    python bench/python_sdk.py --base-url http://127.0.0.1:PORT \
        --seconds 10 --concurrency 64               # P2: samples/s
    python bench/python_sdk.py --base-url ... --samples 2000 --concurrency 64 \
        --storm-ms 3000                             # P6: requests per sample

Drives `ServiceClient(base_url=...).create_sampling_client(base_model=...)`
and `SamplingClient.sample(...)` futures, keeping at most `--concurrency`
samples outstanding (a semaphore released by each future's done callback),
for `--samples` samples or, with `--seconds`, until that time has passed
(then the outstanding ones are awaited). `--concurrency` untimed warm-up
samples go first. Prints one JSON line; `client_cpu_s` is this process's
CPU time (all threads) over the timed part.

`--client-config JSON` sets what the simulator answers to
`POST client/config` (the server flags, e.g.
`{"sample_use_retrieve_futures": true}`) before the client is created.

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

# The P6 scenario, shared with bench/elixir/requests.exs. The session
# poller's rule comes after POLL_5XX (a rule's draws hash its index), so
# POLL_5XX draws the same whether or not the server flags turn it on.
POLL_5XX = {
    "endpoint": "retrieve_future",
    "match": {"rate": 0.2},
    "action": {"status": 500},
    "name": "poll-5xx",
}
POLL_5XX_SESSION = {
    "endpoint": "retrieve_futures",
    "match": {"rate": 0.2},
    "action": {"status": 500},
    "name": "poll-5xx-session",
}
FAULTS = [POLL_5XX, POLL_5XX_SESSION]
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
    """asample + retrieve_future + retrieve_futures requests the simulator answered."""
    eps = stats.get("endpoints", {})
    return sum(
        sum(eps.get(name, {}).values())
        for name in ("asample", "retrieve_future", "retrieve_futures")
    )


def json_object(text: str) -> dict:
    """argparse type of --client-config: a JSON object."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", required=True)
    amount = ap.add_mutually_exclusive_group()
    amount.add_argument("--samples", type=positive(int), default=None, help="default 20000")
    amount.add_argument("--seconds", type=positive(float), default=None,
                        help="keep submitting for this long instead")
    ap.add_argument("--concurrency", type=positive(int), default=64)
    ap.add_argument("--max-tokens", type=positive(int), default=16)
    ap.add_argument("--storm-ms", type=int, default=0, help="P6: 429 storm length")
    ap.add_argument("--client-config", type=json_object, default=None,
                    help="server flags the simulator answers to client/config, as JSON")
    args = ap.parse_args()
    if args.samples is None and args.seconds is None:
        args.samples = 20000
    base = args.base_url.rstrip("/")

    if args.client_config is not None:
        admin(base, "scenario", {"client_config": args.client_config})

    service = tinker.ServiceClient(base_url=base, api_key=os.environ["TINKER_API_KEY"])
    sc = service.create_sampling_client(base_model="Qwen/Qwen3-8B")
    if hasattr(sc, "result"):
        sc = sc.result()
    prompt = types.ModelInput.from_ints([1, 2, 3])
    params = types.SamplingParams(max_tokens=args.max_tokens, temperature=0.7)

    # Warm-up, untimed: session set-up and one sample per window slot (so the
    # connections exist), as the other clients do.
    warm = [sc.sample(prompt=prompt, num_samples=1, sampling_params=params)
            for _ in range(args.concurrency)]
    for f in warm:
        f.result()

    storm = args.storm_ms > 0
    if storm:
        admin(base, "scenario", {"rules": [STORM_429, *FAULTS]})
        before = admin(base, "stats")
        timer = threading.Timer(
            args.storm_ms / 1000, lambda: admin(base, "scenario", {"rules": FAULTS})
        )

    window = threading.Semaphore(args.concurrency)
    lock = threading.Lock()
    counts = {"ok": 0, "errors": 0, "first_error": None}

    def on_done(f) -> None:
        exc = f.exception()
        with lock:
            if exc is None:
                counts["ok"] += 1
            else:
                counts["errors"] += 1
                counts["first_error"] = counts["first_error"] or repr(exc)
        window.release()

    sim_pid = os.environ.get("SIM_PID")
    sim_cpu0 = cpu_seconds(sim_pid) if sim_pid else None
    cpu0 = time.process_time()
    started = time.monotonic()
    deadline = None if args.seconds is None else started + args.seconds
    if storm:
        timer.start()
    submitted = 0
    while deadline is not None or submitted < args.samples:
        window.acquire()
        # A run by time must not start a sample after its end, however long
        # the slot took to free.
        if deadline is not None and time.monotonic() >= deadline:
            window.release()
            break
        fut = sc.sample(prompt=prompt, num_samples=1, sampling_params=params)
        fut.future().add_done_callback(on_done)
        submitted += 1
    # Every slot back means every sample has finished.
    for _ in range(args.concurrency):
        window.acquire()
    seconds = time.monotonic() - started
    client_cpu_s = time.process_time() - cpu0
    sim_cpu1 = cpu_seconds(sim_pid) if sim_pid else None

    out = {
        "client": "python_sdk",
        "tinker_version": tinker.__version__,
        "samples": counts["ok"],
        "errors": counts["errors"],
        "concurrency": args.concurrency,
        "client_config": args.client_config or {},
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
