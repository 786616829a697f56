"""The official SDK and tinkex_native, driven through the same cases, and
their wire logs compared.

Every case of cases.json runs once per flag setting with each client, side
by side, each against a simulator of its own: the SDK here (`run_sdk`),
this project's client through tinkex_native_driver.exs (`NativeDriver`). Each run's `/_sim/log` and
outcomes become a flat *view* (`view`): path -> value, with what
legitimately varies normalised away. The two views must be equal path by
path, except the paths a documented difference of cases.json names: those
must show the expected value on each side (`compare`). README.md in this
folder describes the views and the differences.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import os
import queue
import re
import subprocess
import threading
import time
from pathlib import Path

import tinker
from tinker import types
from tinker.lib.retry_handler import RetryConfig
from tinker.lib.retryable_exception import RetryableException

HERE = Path(__file__).resolve().parent
KEY = "tml-conformance"
MODEL = "Qwen/Qwen3-8B"
PROMPT = [11, 12, 13, 14]
BILLION = 1_000_000_000

# Requests the comparison attributes to the step during which they arrived.
FOREGROUND = {
    "client/config",
    "client/dynamic_config",
    "create_session",
    "create_sampling_session",
    "samplers",
    "join_sampling_session",
    "asample",
    "retrieve_future",
    "sessions/finish",
}
# retrieve_futures and cancel_future are compared as summaries, not per
# step: background tasks send them, at times relative to the step marks
# that vary (README.md, "What is compared").
# Not compared at all: telemetry (the SDK's own event upload), heartbeats
# (every 10 s, so timing-dependent), and the step marks themselves.
IGNORED = {"telemetry", "session_heartbeat", "healthz"}

# Headers not compared (README.md, "What is compared"). Everything else a request
# carries is compared by name and value.
IGNORED_HEADERS = {
    "host",
    "content-length",
    "connection",
    "accept-encoding",
    "user-agent",
    "x-stainless-arch",
    "x-stainless-async",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-read-timeout",
    "x-stainless-raw-response",
    "x-tinker-create-promise-roundtrip-time",
}
# Compared for presence only: their values are versions or random ids.
PRESENCE_HEADERS = {"x-sdk-version", "x-idempotency-key"}

GAP_AT_ONCE_S = 0.25

# SDK futures a case stopped waiting for but did not cancel.
PENDING: list = []

SDK_STATUS_ERRORS = {
    "BadRequestError": 400,
    "AuthenticationError": 401,
    "PermissionDeniedError": 403,
    "NotFoundError": 404,
    "ConflictError": 409,
    "UnprocessableEntityError": 422,
    "RateLimitError": 429,
}


def load_table() -> dict:
    with open(HERE / "cases.json") as f:
        return json.load(f)


def check_table(table: dict) -> list[str]:
    """The table's own faults: a difference no case asserts, or one the
    READMEs do not list (test/conformance/README.md lists every one, the
    top-level README.md the ones on purpose)."""
    problems = []
    used = {d for c in table["cases"] for d, checks in c.get("differences", {}).items() if checks}
    readme = (HERE / "README.md").read_text()
    top = (HERE.parents[1] / "README.md").read_text()
    for did, d in table["differences"].items():
        if did not in used and not d.get("all_cases"):
            problems.append(f"difference {did}: no case asserts it")
        if f"`{did}`" not in readme:
            problems.append(f"difference {did}: not in test/conformance/README.md")
        if d["kind"] == "on purpose" and f"`{did}`" not in top:
            problems.append(f"difference {did}: not in README.md")
    for c in table["cases"]:
        for s in c["settings"]:
            if s not in table["settings"]:
                problems.append(f"case {c['name']}: unknown setting {s!r}")
    return problems


def case_scenario(case: dict, flags: dict) -> dict:
    scenario = dict(case.get("scenario", {}))
    scenario["client_config"] = {**scenario.get("client_config", {}), **flags}
    return scenario


def mark(sim, i: int, op: str) -> None:
    """A request in the simulator's log that separates the steps."""
    sim._call_api("/api/v1/healthz", {"conformance_step": i, "op": op})


# ------------------------------------------------------------------ the SDK


def sdk_error(e: BaseException) -> dict:
    """The SDK's exception in the kinds both drivers report."""
    out = {"message": str(e), "category": None, "status": None, "type": type(e).__name__}
    if isinstance(e, tinker.RequestFailedError):
        out.update(kind="request_failed", category=e.category.value)
    elif isinstance(e, tinker.APIConnectionError) and "No progress made" in str(e):
        out["kind"] = "stuck"
    elif isinstance(e, tinker.APITimeoutError):
        out["kind"] = "timeout"
    elif isinstance(e, tinker.APIConnectionError):
        out["kind"] = "transport"
    elif isinstance(e, tinker.APIStatusError):
        out.update(kind="http", status=e.status_code)
    elif isinstance(e, RetryableException):
        out["kind"] = "expired"
    elif isinstance(e, json.JSONDecodeError):
        out["kind"] = "decode"
    elif isinstance(e, ValueError) and (m := re.search(r"^Error retrieving result: .* with status (\d+) ", str(e))):
        # A poll status the SDK gives up on, wrapped in a ValueError.
        out.update(kind="http", status=int(m.group(1)))
    elif isinstance(e, tinker.TinkerError) and "retrieve_futures polling failed" in str(e):
        # The SDK's poller wraps the status error it stopped on in a
        # message; this client reports that status error itself.
        status = next((s for name, s in SDK_STATUS_ERRORS.items() if f": {name}:" in str(e)), None)
        out.update(kind="http" if status else "poller_failed", status=status)
    elif isinstance(e, (TimeoutError, concurrent.futures.TimeoutError)):
        out["kind"] = "timeout"
    elif isinstance(e, (asyncio.CancelledError, concurrent.futures.CancelledError)):
        out["kind"] = "cancelled"
    else:
        out["kind"] = "other:" + type(e).__name__
    return out


def sdk_retry_config(case: dict):
    rc = case.get("retry_config")
    if rc is None:
        return None
    kw = {}
    for k, v in rc.items():
        if k == "progress_timeout_ms":
            kw["progress_timeout"] = v / 1000.0
        elif k == "max_connections":
            kw["max_connections"] = v
        else:
            raise ValueError(f"retry_config key {k!r} has no SDK equivalent here")
    return RetryConfig(**kw)


def sdk_response(r) -> dict:
    return {
        "sequences": [
            {
                "tokens": s.tokens,
                "logprobs": s.logprobs,
                "stop_reason": str(getattr(s.stop_reason, "value", s.stop_reason)),
                "sequence_id": s.sequence_id,
            }
            for s in r.sequences
        ],
        "prompt_logprobs": r.prompt_logprobs,
        "topk_prompt_logprobs": None
        if r.topk_prompt_logprobs is None
        else [None if row is None else [list(x) for x in row] for row in r.topk_prompt_logprobs],
    }


def run_sdk(sim, case: dict, flags: dict) -> dict:
    """Runs one case with the official SDK, as tinkex_native_driver.exs runs
    it with this client; returns the same shape of outcome."""
    sim.reset()
    sim.scenario(case_scenario(case, flags))
    clients: dict = {}
    service = None
    results = []

    def timed(op, fn):
        t0 = time.monotonic()
        try:
            out = {"op": op, "ok": fn()}
        except (Exception, asyncio.CancelledError) as e:  # every outcome is data here
            out = {"op": op, "error": sdk_error(e)}
        out["elapsed_s"] = time.monotonic() - t0
        return out

    def start():
        nonlocal service
        service = tinker.ServiceClient(base_url=sim.base, api_key=KEY)
        clients["main"] = service.create_sampling_client(
            base_model=MODEL, retry_config=sdk_retry_config(case)
        ).result(timeout=60)
        return {"sampling_session_id": clients["main"]._sampling_session_id}

    mark(sim, 0, "start")
    results.append(timed("start_main", start))
    steps = case.get("steps", [])
    for i, step in enumerate(steps, 1):
        mark(sim, i, step["op"])
        results.append(timed(step["op"], lambda: sdk_step(sim, step, clients, service)))
    mark(sim, len(steps) + 1, "end")
    cancel_pending()
    if service is not None and "closed" not in clients:
        try:
            service.close("success").result(timeout=30)
        except Exception:
            pass
    return {"steps": results}


def cancel_pending() -> None:
    while PENDING:
        PENDING.pop().future().cancel()


def sdk_prompt(step: dict):
    """A list of token ids, or of chunks in the SDK's JSON form."""
    prompt = step.get("prompt", PROMPT)
    if all(isinstance(t, int) for t in prompt):
        return types.ModelInput.from_ints(prompt)
    chunks = []
    for c in prompt:
        if c["type"] == "encoded_text":
            chunks.append(types.EncodedTextChunk(tokens=c["tokens"]))
        elif c["type"] == "image":
            chunks.append(
                types.ImageChunk(
                    data=base64.b64decode(c["data"]), format=c["format"], expected_tokens=c.get("expected_tokens")
                )
            )
        elif c["type"] == "image_asset_pointer":
            chunks.append(
                types.ImageAssetPointerChunk(
                    location=c["location"], format=c["format"], expected_tokens=c.get("expected_tokens")
                )
            )
        else:
            raise ValueError(f"unknown chunk type {c['type']!r}")
    return types.ModelInput(chunks=chunks)


def sdk_wait(future, step: dict):
    """`timeout_ms`: the SDK's deadline that cancels, `result_async(timeout)`;
    with `"sdk_timeout": "result"` its sync `result(timeout)`, which leaves
    the request running."""
    if "timeout_ms" not in step:
        return future.result(timeout=60)
    if step.get("sdk_timeout") == "result":
        try:
            return future.result(timeout=step["timeout_ms"] / 1000)
        except concurrent.futures.TimeoutError:
            PENDING.append(future)  # still running: cancel_pending ends it
            raise

    async def wait():
        return await future.result_async(timeout=step["timeout_ms"] / 1000)

    return asyncio.run(wait())


def sdk_step(sim, step: dict, clients: dict, service):
    op = step["op"]
    client = clients.get(step.get("on", "main"))
    if op in ("sample", "sample_then_cancel"):
        params = types.SamplingParams(
            max_tokens=step.get("max_tokens", 5),
            temperature=step.get("temperature", 1.0),
            top_k=step.get("top_k", -1),
            top_p=step.get("top_p", 1.0),
            seed=step.get("seed"),
            stop=step.get("stop"),
        )
        future = client.sample(
            prompt=sdk_prompt(step),
            num_samples=step.get("num_samples", 2),
            sampling_params=params,
            include_prompt_logprobs=step.get("include_prompt_logprobs", False),
            topk_prompt_logprobs=step.get("topk_prompt_logprobs", 0),
        )
        if op == "sample_then_cancel":
            time.sleep(step["after_ms"] / 1000)
            future.future().cancel()
        return sdk_response(sdk_wait(future, step))
    if op == "compute_logprobs":
        return {"prompt_logprobs": sdk_wait(client.compute_logprobs(sdk_prompt(step)), step)}
    if op == "clone":
        clients["clone"] = tinker.SamplingClient.from_sampler_handle(
            clients["main"].get_sampler_handle(), api_key=KEY
        )
        return {}
    if op == "close":
        service.close("success").result(timeout=30)
        clients["closed"] = True
        return {}
    if op == "sleep":
        time.sleep(step["ms"] / 1000)
        return {}
    if op == "cancel_pending":
        n = len(PENDING)
        cancel_pending()
        return {"cancelled": n}
    if op == "scenario":
        sim.scenario(step["patch"])
        return {}
    if op == "wait_stat":
        deadline = time.monotonic() + step.get("timeout_ms", 5000) / 1000
        while sim.stats()[step["stat"]] < step["at_least"] and time.monotonic() < deadline:
            time.sleep(0.02)
        return {step["stat"]: sim.stats()[step["stat"]]}
    raise ValueError(f"unknown step op {op!r}")


# ----------------------------------------------------------- this client


class NativeDriver:
    """tinkex_native_driver.exs in `--serve` mode: one BEAM for every case."""

    def __init__(self, root: Path, timeout_s: float = 180) -> None:
        env = dict(os.environ)
        env.setdefault("MIX_ENV", "test")
        env.setdefault("TINKEX_NIF_PROFILE", "debug")
        self.timeout_s = timeout_s
        self.proc = subprocess.Popen(
            ["mix", "run", str(HERE / "tinkex_native_driver.exs"), "--serve"],
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, False), daemon=True).start()

    def _pump(self, stream, is_stdout: bool) -> None:
        for line in stream:
            if is_stdout and line.startswith("RESULT "):
                self.lines.put(json.loads(line[len("RESULT ") :]))
            else:
                # mix's own output (a compile) and the client's log lines
                self.stderr.append(line.rstrip("\n"))
        if is_stdout:
            self.lines.put(None)

    def run(self, base_url: str, case: str, setting: str) -> dict:
        self.stderr.clear()
        self.proc.stdin.write(json.dumps({"base_url": base_url, "case": case, "setting": setting}) + "\n")
        self.proc.stdin.flush()
        try:
            result = self.lines.get(timeout=self.timeout_s)
        except queue.Empty:
            raise AssertionError(f"tinkex_native_driver.exs gave no result within {self.timeout_s} s")
        if result is None:
            raise AssertionError("tinkex_native_driver.exs exited:\n" + "\n".join(self.stderr[-30:]))
        if "driver_error" in result:
            raise AssertionError("tinkex_native_driver.exs: " + result["driver_error"])
        return result

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ------------------------------------------------------------------ views


class Renamer:
    """Names the ids that differ from run to run by order of appearance:
    sessions `sim-session-N` become S1, S2, …; a clone's random seq_id base
    (flag off: 1e9·r with r in 1..1e9 for both clients) becomes R."""

    def __init__(self, join: bool) -> None:
        self.join = join
        self.sessions: dict[str, str] = {}
        self.bases: dict[int, str] = {}
        self.problems: list[str] = []

    def session(self, m: re.Match) -> str:
        return self.sessions.setdefault(m.group(0), f"S{len(self.sessions) + 1}")

    def seq(self, n):
        if not isinstance(n, int) or isinstance(n, bool) or n < BILLION or self.join:
            return n
        base, k = divmod(n, BILLION)
        if not 1 <= base <= BILLION:
            self.problems.append(f"clone seq_id {n}: base {base} is outside 1..1e9")
        if base not in self.bases:
            self.bases[base] = "R" if not self.bases else f"R{len(self.bases) + 1}"
        return f"{self.bases[base]}+{k}"

    def text(self, s: str) -> str:
        s = re.sub(r"sim-session-\d+", self.session, s)
        return re.sub(r"(?<=:)(\d{10,})(?=:|$)", lambda m: str(self.seq(int(m.group(1)))), s)

    def clone_id(self, n):
        """A poller target's `cloned_sampler_id`: the clone's seq_id base / 1e9."""
        if not isinstance(n, int) or n == 0 or self.join:
            return n
        return str(self.seq(n * BILLION)).removesuffix("+0")

    def value(self, v, key: str | None = None):
        if isinstance(v, dict):
            return {k: self.value(x, k) for k, x in v.items()}
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if isinstance(v, str):
            return self.text(v)
        if key == "seq_id":
            return self.seq(v)
        if key == "cloned_sampler_id":
            return self.clone_id(v)
        return v


def flatten(prefix: str, v, out: dict) -> None:
    if isinstance(v, dict) and v:
        for k, x in v.items():
            flatten(f"{prefix}.{k}", x, out)
    elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
        for i, x in enumerate(v):
            flatten(f"{prefix}[{i}]", x, out)
    else:
        out[prefix] = v


CONFIG_READS = ("client/config ", "client/dynamic_config ")


def config_reads_sorted(calls: list[str]) -> list[str]:
    """The two config reads in one order: which goes first is not part of
    the protocol (the SDK reads client/config first, this client
    client/dynamic_config)."""
    out = list(calls)
    i = 0
    while i < len(out):
        j = i
        while j < len(out) and out[j].startswith(CONFIG_READS):
            j += 1
        out[i:j] = sorted(out[i:j])
        i = j + 1
    return out


def entry_outcome(e: dict):
    if e["outcome"] in ("rule", "error") or e["status"] not in (200, 0):
        return e["status"]
    return e["outcome"]


def describe(e: dict, rn: Renamer) -> str:
    d = e["endpoint"]
    if e.get("seq_id") is not None:
        d += f" {rn.seq(e['seq_id'])}"
    return f"{d} -> {entry_outcome(e)}"


def view(sim, log: list[dict], raw: dict, case: dict, flags: dict) -> tuple[dict, list[str]]:
    """The run as path -> value, and the problems found in it on its own
    (a result that belongs to no logged asample, a bad clone base)."""
    rn = Renamer(join=bool(flags.get("sample_join_sampling_session")))
    log = sorted(log, key=lambda e: e["t_us"])
    out: dict = {}
    problems: list[str] = []

    # Steps: each request belongs to the last mark before it. What arrives
    # before the first mark or after the last (cleanup) is not compared, nor
    # what names another session than this run's (an earlier case's SDK
    # futures may still be polling).
    n_steps = len(case.get("steps", [])) + 1
    own = own_session(raw)
    step_of, step, entries = {}, None, []
    for e in log:
        if e["endpoint"] == "healthz" and isinstance(e["body"], dict) and "conformance_step" in e["body"]:
            step = e["body"]["conformance_step"]
            continue
        if e["endpoint"] in IGNORED or step is None or step >= n_steps:
            continue
        named = set(re.findall(r"sim-session-\d+", json.dumps(e["body"])))
        if own is not None and named - {own}:
            continue
        step_of[e["seq"]] = step
        entries.append(e)
    for e in entries:  # name the sessions in order of appearance
        rn.value(e["body"])
    sessions = set(rn.sessions)

    def ours(e: dict) -> bool:
        target = (e["body"] or {}).get("target", {}) if isinstance(e["body"], dict) else {}
        ssid = target.get("sampling_session_id", "")
        return any(ssid.startswith(s + ":") for s in sessions)

    calls = {i: [] for i in range(n_steps)}
    per_endpoint: dict[str, int] = {}
    times: dict[str, list[float]] = {}
    collapse = case.get("collapse_held_polls", False)
    for e in entries:
        ep = e["endpoint"]
        if ep not in FOREGROUND:
            continue
        d = describe(e, rn)
        lst = calls[step_of[e["seq"]]]
        if collapse and ep == "retrieve_future" and e["outcome"] in ("try_again", "client_gone"):
            # (a poll the client gave up on is logged without its seq_id)
            d = f"{ep} -> held polls"
            if lst and lst[-1] == d:
                continue
        lst.append(d)
        k = per_endpoint.get(ep, 0)
        per_endpoint[ep] = k + 1
        if not (collapse and ep == "retrieve_future"):
            body = rn.value(e["body"])
            if isinstance(body, dict) and "sdk_version" in body:
                body["sdk_version"] = "<version>"
            flatten(f"{ep}[{k}].body", body, out)
            for h, v in e["headers"].items():
                if h in IGNORED_HEADERS or (h == "accept" and ep != "retrieve_future"):
                    continue
                out[f"{ep}[{k}].headers.{h}"] = "<present>" if h in PRESENCE_HEADERS else v
            times.setdefault(ep, []).append(e["t_us"] / 1e6)
    for i in range(n_steps):
        out[f"step[{i}].calls"] = config_reads_sorted(calls[i])
        out[f"step[{i}].op"] = "start" if i == 0 else case["steps"][i - 1]["op"]
    for ep in ("asample", "retrieve_future"):
        for k, (a, b) in enumerate(zip(times.get(ep, []), times.get(ep, [])[1:])):
            out[f"gaps.{ep}[{k}]"] = round(b - a, 3)

    asamples = [e for e in entries if e["endpoint"] == "asample"]
    keys = [e["headers"].get("x-idempotency-key") for e in asamples]
    out["asample.idempotency_keys_distinct"] = len(set(keys)) == len(keys)

    # The session poller, as a summary.
    futs = [e for e in entries if e["endpoint"] == "retrieve_futures" and ours(e)]
    out["retrieve_futures.used"] = bool(futs)
    if futs:
        errors = [i for i, e in enumerate(futs) if entry_outcome(e) not in ("result", "try_again")]
        out["retrieve_futures.errors"] = [entry_outcome(futs[i]) for i in errors]
        if errors:
            out["retrieve_futures.polled_after_last_error"] = errors[-1] < len(futs) - 1
        for n, i in enumerate(errors):
            if i + 1 < len(futs):
                out[f"gaps.retrieve_futures_retry[{n}]"] = round(
                    (futs[i + 1]["t_us"] - futs[i]["t_us"]) / 1e6, 3
                )
        bodies = [rn.value(e["body"]) for e in futs]
        out["retrieve_futures.targets"] = sorted({json.dumps(b["target"], sort_keys=True) for b in bodies})
        out["retrieve_futures.acked"] = sorted({r for b in bodies for r in b.get("retrieved_request_ids", [])})
        flatten("retrieve_futures[0].body", bodies[0], out)
        for h, v in futs[0]["headers"].items():
            if h not in IGNORED_HEADERS and h != "accept":
                out[f"retrieve_futures[0].headers.{h}"] = "<present>" if h in PRESENCE_HEADERS else v
    cancels = [e for e in entries if e["endpoint"] == "cancel_future"]
    out["cancel_future.seqs"] = sorted(str(rn.seq(e["seq_id"])) for e in cancels)
    out["cancel_future.outcomes"] = sorted(str(entry_outcome(e)) for e in cancels)
    if cancels:
        flatten("cancel_future[0].body", rn.value(cancels[0]["body"]), out)
        for h, v in cancels[0]["headers"].items():
            if h not in IGNORED_HEADERS and h != "accept":
                out[f"cancel_future[0].headers.{h}"] = "<present>" if h in PRESENCE_HEADERS else v

    # Outcomes, each checked against the simulator's deterministic results.
    expected_cache: dict[int, dict] = {}

    def expected(e: dict) -> dict:
        if e["seq"] not in expected_cache:
            expected_cache[e["seq"]] = sim.expected(e["body"])
        return expected_cache[e["seq"]]

    created = [e for e in asamples if e["status"] == 200]
    for i, r in enumerate(raw["steps"]):
        if r["op"] in ("sample", "sample_then_cancel", "compute_logprobs"):
            # how long the caller waited: compared like a gap
            out[f"gaps.step[{i}].elapsed"] = round(r["elapsed_s"], 3)
        if "error" in r:
            err = r["error"]
            desc = f"error {err['kind']}"
            if err.get("category"):
                desc += f" {err['category']}"
            if err["kind"] == "http":
                desc += f" {err.get('status')}"
            out[f"step[{i}].outcome"] = desc
            if i > 0 and "error_text" in case["steps"][i - 1]:
                out[f"step[{i}].error_mentions_server_text"] = (
                    case["steps"][i - 1]["error_text"] in (err.get("message") or "")
                )
            continue
        ok = r["ok"]
        if "sequences" in ok:
            src = [e for e in created if matches_sample(ok, expected(e))]
            if len(src) != 1:
                problems.append(f"step {i}: the result matches {len(src)} logged asamples, not 1")
            out[f"step[{i}].outcome"] = "ok from " + ", ".join(str(rn.seq(e["seq_id"])) for e in src)
            out[f"step[{i}].sequences"] = len(ok["sequences"])
        elif "prompt_logprobs" in ok:
            src = [e for e in created if ok["prompt_logprobs"] == expected(e)["prompt_logprobs"]]
            if not src:
                problems.append(f"step {i}: the logprobs match no logged asample")
            out[f"step[{i}].outcome"] = "ok from " + ", ".join(str(rn.seq(e["seq_id"])) for e in src)
        else:
            out[f"step[{i}].outcome"] = "ok"
    problems.extend(rn.problems)
    return out, problems


def own_session(raw: dict) -> str | None:
    """The session of the run's first client (`sim-session-N`)."""
    start = raw["steps"][0].get("ok") or {}
    m = re.match(r"sim-session-\d+", start.get("sampling_session_id") or "")
    return m.group(0) if m else None


def matches_sample(got: dict, want: dict) -> bool:
    if len(got["sequences"]) != len(want["sequences"]):
        return False
    for g, w, sid in zip(got["sequences"], want["sequences"], want["sample_sequence_ids"]):
        if g["tokens"] != w["tokens"] or g["logprobs"] != w["logprobs"] or g["sequence_id"] != sid:
            return False
        if g["stop_reason"].lower().removeprefix("stopreason.") != w["stop_reason"]:
            return False
    if want.get("prompt_logprobs") is not None and got.get("prompt_logprobs") != want["prompt_logprobs"]:
        return False
    if want.get("topk_prompt_logprobs") is not None and got.get("topk_prompt_logprobs") != want["topk_prompt_logprobs"]:
        return False
    return True


# ------------------------------------------------------------- comparison

MISSING = "<absent>"


def gaps_agree(a, b) -> bool:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return a == b
    if a < GAP_AT_ONCE_S and b < GAP_AT_ONCE_S:
        return True
    return abs(a - b) <= max(0.35, 0.3 * max(a, b))


def meets(value, expect: dict) -> bool:
    if "eq" in expect:
        return value == expect["eq"]
    if "range" in expect:
        lo, hi = expect["range"]
        return isinstance(value, (int, float)) and lo <= value <= hi
    if "absent" in expect:
        return value == MISSING
    if "present" in expect:
        return value != MISSING
    if "one_of" in expect:
        return value in expect["one_of"]
    raise ValueError(f"unknown expectation {expect}")


def differences_for(table: dict, case: dict, setting: str) -> list[tuple[str, dict]]:
    """(difference id, check) pairs that apply to this case and setting."""
    out = []
    for did, d in table["differences"].items():
        for check in d.get("all_cases", []):
            out.append((did, check))
    for did, checks in case.get("differences", {}).items():
        if did not in table["differences"]:
            raise ValueError(f"case {case['name']}: unknown difference {did!r}")
        for check in checks:
            if setting in check.get("settings", [setting]):
                out.append((did, check))
    return out


def check_for(path: str, checks: list[tuple[str, dict]]):
    """The documented difference at this path: an exact path, else the
    longest `prefix*` that covers it."""
    best = None
    for did, check in checks:
        p = check["path"]
        if p == path:
            return did, check
        if p.endswith("*") and path.startswith(p[:-1]) and (best is None or len(p) > len(best[1]["path"])):
            best = (did, check)
    return best


def compare(table: dict, case: dict, setting: str, sdk: dict, native: dict) -> list[str]:
    """Failures: a path where the two differ without a documented difference,
    or a documented difference that did not show as documented."""
    failures = []
    checks = differences_for(table, case, setting)
    paths = set(sdk) | set(native)
    used = set()
    for path in sorted(paths | {c["path"] for _, c in checks if not c["path"].endswith("*")}):
        a, b = sdk.get(path, MISSING), native.get(path, MISSING)
        found = check_for(path, checks)
        if found:
            did, check = found
            used.add(id(check))
            if not meets(a, check["sdk"]):
                failures.append(f"difference {did} at {path}: the SDK has {a!r}, documented {check['sdk']}")
            if not meets(b, check["native"]):
                failures.append(
                    f"difference {did} at {path}: tinkex_native has {b!r}, documented {check['native']}"
                )
        elif path.startswith("gaps."):
            if not gaps_agree(a, b):
                failures.append(f"{path}: SDK {a!r} s, tinkex_native {b!r} s")
        elif a != b:
            failures.append(f"{path}: SDK {a!r}, tinkex_native {b!r}")
    for did, check in checks:
        if id(check) not in used:
            failures.append(f"difference {did} at {check['path']}: no such path on either side")
    return failures
