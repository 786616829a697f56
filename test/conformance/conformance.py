"""Drive the official Tinker SDK (tinker==0.38.0) against tinker_sim.

Every case resets the simulator, posts a scenario, runs
`tinker.ServiceClient(base_url=...).create_sampling_client(base_model=...)
.sample(...)` (or compute_logprobs), and asserts both the SDK's outcome and
the wire facts in the simulator's /_sim/log. Cases marked "both" run once
with per-request polling (client/config `{}`) and once with the session
poller (`sample_use_retrieve_futures: true`).

Run through `bash test/conformance/run`; see README.md in this folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
import traceback
import urllib.request

import httpx
import tinker
from tinker import types
from tinker.lib.retry_handler import RetryConfig
from tinker.proto import tinker_public_pb2 as pb
from tinker.proto.response_conv import deserialize_sample_response

KEY = "tml-conformance"
MODEL = "Qwen/Qwen3-8B"
PROMPT = [11, 12, 13, 14]


class Sim:
    """The simulator process and its control endpoints."""

    def __init__(self, binary: str, hold_ms: int) -> None:
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--hold-ms", str(hold_ms)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("listening on 127.0.0.1:"):
            raise RuntimeError(f"unexpected first line from tinker_sim: {line!r}")
        self.base = "http://" + line.split()[-1]

    def _call(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def scenario(self, patch: dict) -> dict:
        return self._call("POST", "/_sim/scenario", patch)

    def reset(self) -> None:
        self._call("POST", "/_sim/reset", {})

    def stats(self) -> dict:
        return self._call("GET", "/_sim/stats")

    def expected(self, asample_body: dict) -> dict:
        return self._call("POST", "/_sim/expected", asample_body)

    def log(self, endpoint: str | None = None) -> list[dict]:
        entries = self._call("GET", "/_sim/log")["entries"]
        entries.sort(key=lambda e: e["t_us"])
        if endpoint is None:
            return entries
        return [e for e in entries if e["endpoint"] == endpoint]

    def stop(self) -> None:
        self.proc.stdin.close()  # the simulator exits when stdin closes
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("tinker_sim did not exit when its stdin closed")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


RECORDS = Records()
logging.getLogger("tinker").addHandler(RECORDS)


def client_config(mode: str, **extra) -> dict:
    cfg = {"sample_use_retrieve_futures": mode == "futures"}
    cfg.update(extra)
    return cfg


def sampler(sim: Sim, retry_config: RetryConfig | None = None):
    service = tinker.ServiceClient(base_url=sim.base, api_key=KEY)
    client = service.create_sampling_client(base_model=MODEL, retry_config=retry_config).result(
        timeout=30
    )
    return service, client


def sample(client, num_samples: int = 2, max_tokens: int = 5, **kw):
    return client.sample(
        prompt=types.ModelInput.from_ints(PROMPT),
        num_samples=num_samples,
        sampling_params=types.SamplingParams(max_tokens=max_tokens),
        **kw,
    ).result(timeout=60)


def seq_ids(entries: list[dict]) -> list[int]:
    return [e["body"]["seq_id"] for e in entries]


def gaps_s(entries: list[dict]) -> list[float]:
    return [(b["t_us"] - a["t_us"]) / 1e6 for a, b in zip(entries, entries[1:])]


def check_belongs(sim: Sim, response, asample_entry: dict) -> None:
    """The response is the deterministic result of this exact asample body."""
    want = sim.expected(asample_entry["body"])
    assert len(response.sequences) == len(want["sequences"]), response
    for got, exp, sid in zip(response.sequences, want["sequences"], want["sample_sequence_ids"]):
        assert got.tokens == exp["tokens"], (got.tokens, exp["tokens"])
        assert got.logprobs == exp["logprobs"], (got.logprobs, exp["logprobs"])
        assert got.stop_reason == "length", got.stop_reason
        assert got.sequence_id == sid, (got.sequence_id, sid)


def finish(service) -> None:
    service.close("success").result(timeout=30)


def outcomes(entries: list[dict]) -> list:
    return [e["status"] if e["outcome"] == "rule" else e["outcome"] for e in entries]


def assert_protobuf_polls(entries: list[dict]) -> None:
    for e in entries:
        assert e["headers"].get("accept") == "application/x-protobuf", e["headers"]
        assert e["headers"].get("x-sdk-method") in (
            "SamplingClient.sample",
            "SamplingClient.compute_logprobs",
        ), e["headers"]


# ----------------------------------------------------------------- cases


def case_happy(sim: Sim, mode: str) -> None:
    sim.scenario({"client_config": client_config(mode)})
    service, client = sampler(sim)
    response = sample(client)
    finish(service)
    asamples = sim.log("asample")
    assert seq_ids(asamples) == [0], seq_ids(asamples)
    assert asamples[0]["headers"].get("x-tinker-sampling-backpressure") == "1"
    polls = sim.log("retrieve_future")
    assert outcomes(polls) == ["result"], outcomes(polls)
    assert_protobuf_polls(polls)
    check_belongs(sim, response, asamples[0])
    if mode == "futures":
        assert sim.log("retrieve_futures"), "the session poller was not used"
        assert polls[0]["body"]["allow_metadata_only"] is False, polls[0]["body"]
    else:
        assert not sim.log("retrieve_futures")
    finishes = sim.log("sessions/finish")
    assert [f["body"]["reason"]["type"] for f in finishes] == ["success"], finishes
    stats = sim.stats()
    assert stats["futures_created"] == 1 and stats["futures_completed"] == 1, stats
    assert stats["duplicate_submissions"] == 0, stats


def case_happy_httpx_transport(sim: Sim, mode: str) -> None:
    """The same happy path over the SDK's httpx transport (pyqwest off)."""
    sim.scenario({"client_config": client_config(mode, use_pyqwest_transport=False)})
    service, client = sampler(sim)
    response = sample(client)
    finish(service)
    asamples = sim.log("asample")
    assert seq_ids(asamples) == [0]
    assert outcomes(sim.log("retrieve_future")) == ["result"]
    check_belongs(sim, response, asamples[0])


def case_try_again_queue_states(sim: Sim, mode: str) -> None:
    sim.scenario(
        {
            "client_config": client_config(mode),
            "rules": [
                {
                    "endpoint": "future",
                    "action": {
                        "try_again": {
                            "count": 2,
                            "queue_state": "paused_capacity",
                            "queue_state_reason": "sim says wait",
                        }
                    },
                },
                {
                    "endpoint": "retrieve_future",
                    "match": {"poll": 3},
                    "action": {"status": 408, "queue_state": "paused_rate_limit"},
                },
            ],
        }
    )
    RECORDS.messages.clear()
    service, client = sampler(sim)
    response = sample(client)
    finish(service)
    polls = sim.log("retrieve_future")
    assert outcomes(polls) == ["try_again", "try_again", 408, "result"], outcomes(polls)
    assert [p["headers"]["x-tinker-request-iteration"] for p in polls] == ["0", "1", "2", "3"]
    assert all(g < 0.5 for g in gaps_s(polls)), gaps_s(polls)  # re-polled at once
    assert seq_ids(sim.log("asample")) == [0]
    check_belongs(sim, response, sim.log("asample")[0])
    paused = [m for m in RECORDS.messages if "Sampling is paused" in m]
    assert paused and "sim says wait" in paused[0], RECORDS.messages


def case_complete_metadata(sim: Sim, mode: str) -> None:
    sim.scenario(
        {
            "client_config": client_config(mode),
            "rules": [{"endpoint": "future", "action": {"complete_metadata": True}}],
        }
    )
    service, client = sampler(sim)
    response = sample(client)
    finish(service)
    polls = sim.log("retrieve_future")
    assert outcomes(polls) == ["complete_metadata", "result"], outcomes(polls)
    assert [p["body"]["allow_metadata_only"] for p in polls] == [True, False]
    check_belongs(sim, response, sim.log("asample")[0])


def case_submit_429(sim: Sim, mode: str) -> None:
    sim.scenario(
        {
            "client_config": client_config(mode),
            "rules": [
                {
                    "endpoint": "asample",
                    "match": {"first": 1},
                    "action": {"status": 429, "headers": {"retry-after-ms": "300"}},
                }
            ],
        }
    )
    service, client = sampler(sim)
    response = sample(client)
    finish(service)
    asamples = sim.log("asample")
    assert [a["status"] for a in asamples] == [429, 200], asamples
    assert seq_ids(asamples) == [0, 0], "a 429 resend must reuse the seq_id"
    gap = gaps_s(asamples)[0]
    assert 0.9 <= gap < 3.0, f"SDK waits its own 1 s after a 429 (retry-after ignored), gap {gap}"
    assert asamples[0]["headers"]["x-idempotency-key"] != asamples[1]["headers"]["x-idempotency-key"]
    check_belongs(sim, response, asamples[1])


def case_submit_5xx(sim: Sim, mode: str) -> None:
    sim.scenario(
        {
            "client_config": client_config(mode),
            "rules": [{"endpoint": "asample", "match": {"first": 2}, "action": {"status": 503}}],
        }
    )
    service, client = sampler(sim)
    response = sample(client)
    finish(service)
    asamples = sim.log("asample")
    assert [a["status"] for a in asamples] == [503, 503, 200], asamples
    assert seq_ids(asamples) == [0, 0, 0]
    g = gaps_s(asamples)
    assert 0.9 <= g[0] < 1.8 and 1.8 <= g[1] < 3.5, f"backoff 1 s then 2 s, got {g}"
    check_belongs(sim, response, asamples[-1])


def case_submit_connection_drop(sim: Sim, mode: str) -> None:
    sim.scenario(
        {
            "client_config": client_config(mode),
            "rules": [{"endpoint": "asample", "match": {"nth": 1}, "action": {"drop": True}}],
        }
    )
    service, client = sampler(sim)
    response = sample(client)
    finish(service)
    asamples = sim.log("asample")
    assert [a["outcome"] for a in asamples] == ["drop", "created"], asamples
    assert seq_ids(asamples) == [0, 0]
    assert 0.9 <= gaps_s(asamples)[0] < 3.0, gaps_s(asamples)
    check_belongs(sim, response, asamples[-1])


def case_poll_5xx(sim: Sim, mode: str) -> None:
    sim.scenario(
        {
            "client_config": client_config(mode),
            "rules": [
                {"endpoint": "retrieve_future", "match": {"first": 2}, "action": {"status": 503}}
            ],
        }
    )
    service, client = sampler(sim)
    response = sample(client)
    finish(service)
    polls = sim.log("retrieve_future")
    assert outcomes(polls) == [503, 503, "result"], outcomes(polls)
    assert all(g < 0.5 for g in gaps_s(polls)), f"5xx on poll re-polls at once: {gaps_s(polls)}"
    assert seq_ids(sim.log("asample")) == [0]
    check_belongs(sim, response, sim.log("asample")[0])


def case_poll_429(sim: Sim, mode: str) -> None:
    sim.scenario(
        {
            "client_config": client_config(mode),
            "rules": [
                {"endpoint": "retrieve_future", "match": {"first": 2}, "action": {"status": 429}}
            ],
        }
    )
    service, client = sampler(sim)
    response = sample(client)
    finish(service)
    polls = sim.log("retrieve_future")
    assert outcomes(polls) == [429, 429, "result"], outcomes(polls)
    g = gaps_s(polls)
    assert 0.9 <= g[0] < 1.8 and 1.8 <= g[1] < 3.5, f"poll 429 backoff 1 s, 2 s: {g}"
    check_belongs(sim, response, sim.log("asample")[0])


def case_poll_410_resubmits(sim: Sim, mode: str) -> None:
    sim.scenario(
        {
            "client_config": client_config(mode),
            "rules": [
                {"endpoint": "retrieve_future", "match": {"seq_id": 0}, "action": {"status": 410}}
            ],
        }
    )
    service, client = sampler(sim)
    response = sample(client)
    finish(service)
    asamples = sim.log("asample")
    assert seq_ids(asamples) == [0, 1], f"410 -> new attempt with a new seq_id: {seq_ids(asamples)}"
    gap = gaps_s(asamples)[0]
    assert 0.3 <= gap < 2.0, f"L1 retry after ~0.5 s, got {gap}"
    polls = sim.log("retrieve_future")
    assert [(p["seq_id"], p["status"]) for p in polls] == [(0, 410), (1, 200)], polls
    check_belongs(sim, response, asamples[1])
    assert sim.stats()["futures_expired"] == 1


def case_failed_future(sim: Sim, mode: str) -> None:
    for category in ("user", "server"):
        sim.reset()
        sim.scenario(
            {
                "client_config": client_config(mode),
                "rules": [
                    {
                        "endpoint": "future",
                        "match": {"seq_id": 0},
                        "action": {"fail": {"category": category, "error": f"sim {category} error"}},
                    }
                ],
            }
        )
        service, client = sampler(sim)
        try:
            sample(client)
        except tinker.RequestFailedError as e:
            assert e.category.value == category, (e.category, category)
            assert f"sim {category} error" in str(e), str(e)
        else:
            raise AssertionError("a failed future must raise RequestFailedError")
        time.sleep(1.0)  # would any retry happen (L1 retries after ~0.5 s)?
        finish(service)
        assert seq_ids(sim.log("asample")) == [0], "a failed future is never resubmitted"
        polls = sim.log("retrieve_future")
        assert outcomes(polls) == ["failed"], outcomes(polls)
        assert sim.stats()["futures_failed"] == 1


def case_stuck_progress_timeout(sim: Sim, mode: str) -> None:
    sim.scenario(
        {
            "client_config": client_config(mode),
            "dynamic_config": {"refresh_interval_sec": 300, "sample_cancel_enabled": True},
            "stuck": True,
        }
    )
    service, client = sampler(sim, RetryConfig(progress_timeout=2.0))
    t0 = time.monotonic()
    try:
        sample(client)
    except tinker.APIConnectionError as e:
        took = time.monotonic() - t0
        assert "No progress made in 2.0s. Requests appear to be stuck." in str(e), str(e)
        assert 1.9 <= took < 6.0, took
    else:
        raise AssertionError("a stuck sample must fail with the stuck error")
    deadline = time.monotonic() + 5
    while sim.stats()["futures_cancelled"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    sim.scenario({"stuck": False})
    finish(service)
    assert seq_ids(sim.log("asample")) == [0], "the stuck error is not retried"
    cancels = sim.log("cancel_future")
    assert len(cancels) == 1 and cancels[0]["seq_id"] == 0, cancels
    if mode == "poll":
        polls = sim.log("retrieve_future")
        assert polls and all(p["outcome"] in ("try_again", "client_gone") for p in polls), outcomes(polls)


def case_malformed_poll_body(sim: Sim, mode: str) -> None:
    sim.scenario(
        {
            "client_config": client_config(mode),
            "rules": [{"endpoint": "retrieve_future", "action": {"malformed": True}}],
        }
    )
    service, client = sampler(sim)
    try:
        sample(client)
    except Exception as e:  # the SDK raises a JSON decode error
        assert "Expecting" in str(e) or "JSON" in type(e).__name__ or "json" in str(e).lower(), repr(e)
    else:
        raise AssertionError("a malformed poll answer must raise")
    time.sleep(1.0)
    finish(service)
    assert seq_ids(sim.log("asample")) == [0], "a decode error is not retried"
    assert len(sim.log("retrieve_future")) == 1


def case_compute_logprobs(sim: Sim, mode: str) -> None:
    sim.scenario({"client_config": client_config(mode)})
    service, client = sampler(sim)
    logprobs = client.compute_logprobs(types.ModelInput.from_ints(PROMPT)).result(timeout=60)
    finish(service)
    asample = sim.log("asample")[0]
    body = asample["body"]
    assert body["prompt_logprobs"] is True and body["num_samples"] == 1, body
    assert body["sampling_params"]["max_tokens"] == 1, body
    assert asample["headers"]["x-sdk-method"] == "SamplingClient.compute_logprobs"
    want = sim.expected(body)["prompt_logprobs"]
    assert logprobs[0] is None and logprobs == want, (logprobs, want)


def case_extras_topk_alt_last_n(sim: Sim, mode: str) -> None:
    sim.scenario({"client_config": client_config(mode)})
    service, client = sampler(sim)
    response = sample(
        client,
        num_samples=1,
        max_tokens=3,
        include_prompt_logprobs=True,
        topk_prompt_logprobs=2,
        topk_sample_logprobs=2,
        prompt_alt_tokens_k=2,
        prompt_logprobs_last_n=2,
    )
    finish(service)
    want = sim.expected(sim.log("asample")[0]["body"])
    assert response.prompt_logprobs == want["prompt_logprobs"], (response.prompt_logprobs, want)
    assert response.prompt_logprobs[:2] == [None, None]
    got_topk = [None if r is None else [list(x) for x in r] for r in response.topk_prompt_logprobs]
    assert got_topk == want["topk_prompt_logprobs"], (got_topk, want["topk_prompt_logprobs"])
    alt = response.prompt_alt_tokens
    assert alt.tokens.shape == [len(PROMPT) - 1, 2], alt.tokens.shape
    assert list(alt.tokens.data) == want["prompt_alt_tokens"]["tokens"]["data"]
    seq_topk = [[list(x) for x in row] for row in response.sequences[0].topk_logprobs]
    assert seq_topk == want["sequences"][0]["topk_logprobs"], seq_topk


def case_join_clone(sim: Sim, mode: str) -> None:
    sim.scenario({"client_config": client_config(mode, sample_join_sampling_session=True)})
    service, client = sampler(sim)
    clone = tinker.SamplingClient.from_sampler_handle(client.get_sampler_handle(), api_key=KEY)
    response = sample(clone)
    finish(service)
    joins = sim.log("join_sampling_session")
    assert len(joins) == 1, joins
    asamples = sim.log("asample")
    assert seq_ids(asamples) == [1_000_000_000], seq_ids(asamples)
    check_belongs(sim, response, asamples[0])
    if mode == "futures":
        targets = {e["body"]["target"]["cloned_sampler_id"] for e in sim.log("retrieve_futures")}
        assert targets == {1}, targets


def case_protobuf_bytes(sim: Sim, mode: str) -> None:
    """The simulator's protobuf decodes with the SDK's own generated module and
    re-serialises to the same bytes; the values equal the JSON result."""
    body = {
        "type": "sample",
        "sampling_session_id": "conformance:sample:0",
        "seq_id": 42,
        "num_samples": 2,
        "prompt": {"chunks": [{"type": "encoded_text", "tokens": PROMPT}]},
        "sampling_params": {"max_tokens": 4, "temperature": 0.7, "top_k": -1, "top_p": 1.0},
        "prompt_logprobs": True,
        "topk_prompt_logprobs": 3,
        "topk_sample_logprobs": 2,
        "prompt_alt_tokens_k": 2,
    }
    headers = {"x-api-key": KEY}
    with httpx.Client(base_url=sim.base, headers=headers) as http:
        fut = http.post("/api/v1/asample", json=body).json()
        poll = {"request_id": fut["request_id"], "allow_metadata_only": True}
        raw = http.post(
            "/api/v1/retrieve_future", json=poll, headers={"accept": "application/x-protobuf"}
        )
        as_json = http.post("/api/v1/retrieve_future", json=poll).json()
    assert raw.headers["content-type"] == "application/x-protobuf", raw.headers
    msg = pb.SampleResponse()
    msg.ParseFromString(raw.content)
    assert msg.SerializeToString(deterministic=True) == raw.content, "not canonical protobuf"
    assert len(msg.sequences) == 2 and msg.sequences[0].stop_reason == pb.STOP_REASON_LENGTH
    assert msg.HasField("prompt_logprobs") and msg.HasField("topk_prompt_logprobs")
    assert msg.topk_prompt_logprobs.k == 3 and msg.topk_prompt_logprobs.length == len(PROMPT)
    assert msg.prompt_alt_tokens.tokens.dtype == pb.DTYPE_INT64
    decoded = deserialize_sample_response(raw.content)
    for got, exp in zip(decoded.sequences, as_json["sequences"]):
        assert got.tokens == exp["tokens"] and got.logprobs == exp["logprobs"]
    assert decoded.prompt_logprobs == as_json["prompt_logprobs"]
    want = sim.expected(body)
    assert as_json["sequences"] == want["sequences"]
    assert as_json["prompt_logprobs"] == want["prompt_logprobs"]


def case_poller_retryable_errors(sim: Sim, mode: str) -> None:
    """Transient retrieve_futures failures: a fixed 1 s sleep, no backoff."""
    sim.scenario(
        {
            "client_config": client_config(mode),
            "rules": [
                {"endpoint": "retrieve_futures", "match": {"first": 2}, "action": {"status": 503}}
            ],
        }
    )
    service, client = sampler(sim)
    response = sample(client)
    finish(service)
    polls = sim.log("retrieve_futures")
    assert outcomes(polls)[:3] == [503, 503, "result"], outcomes(polls)
    g = gaps_s(polls[:3])
    assert all(0.9 <= x < 1.6 for x in g), f"fixed 1 s between poller retries: {g}"
    assert outcomes(sim.log("retrieve_future")) == ["result"]
    check_belongs(sim, response, sim.log("asample")[0])


def case_poller_terminal(sim: Sim, mode: str) -> None:
    """A non-retryable retrieve_futures status ends the SDK's poller for good:
    the waiting sample and every later one fail (after their asample)."""
    sim.scenario(
        {
            "client_config": client_config(mode),
            "rules": [
                {"endpoint": "retrieve_futures", "match": {"first": 1}, "action": {"status": 404}}
            ],
        }
    )
    service, client = sampler(sim)
    for _ in range(2):
        try:
            sample(client)
        except tinker.TinkerError as e:
            assert "retrieve_futures polling failed for sampling session" in str(e), str(e)
            assert "(clone 0)" in str(e), str(e)
        else:
            raise AssertionError("a terminal poller status must fail the sample")
    finish(service)
    assert seq_ids(sim.log("asample")) == [0, 1], "not retried, each sample submitted once"
    assert outcomes(sim.log("retrieve_futures")) == [404], "the failed poller never polls again"
    assert not sim.log("retrieve_future")


CASES = [
    # (name, function, modes)
    ("happy", case_happy, ("poll", "futures")),
    ("happy_httpx_transport", case_happy_httpx_transport, ("poll", "futures")),
    ("try_again_queue_states", case_try_again_queue_states, ("poll", "futures")),
    ("complete_metadata", case_complete_metadata, ("poll",)),
    ("submit_429", case_submit_429, ("poll",)),
    ("submit_5xx", case_submit_5xx, ("poll",)),
    ("submit_connection_drop", case_submit_connection_drop, ("poll",)),
    ("poll_5xx", case_poll_5xx, ("poll", "futures")),
    ("poll_429", case_poll_429, ("poll",)),
    ("poll_410_resubmits", case_poll_410_resubmits, ("poll", "futures")),
    ("failed_future", case_failed_future, ("poll", "futures")),
    ("stuck_progress_timeout", case_stuck_progress_timeout, ("poll", "futures")),
    ("malformed_poll_body", case_malformed_poll_body, ("poll",)),
    ("compute_logprobs", case_compute_logprobs, ("poll", "futures")),
    ("extras_topk_alt_last_n", case_extras_topk_alt_last_n, ("poll",)),
    ("join_clone", case_join_clone, ("poll", "futures")),
    ("protobuf_bytes", case_protobuf_bytes, ("poll",)),
    ("poller_retryable_errors", case_poller_retryable_errors, ("futures",)),
    ("poller_terminal", case_poller_terminal, ("futures",)),
]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True, help="path of the tinker_sim binary")
    parser.add_argument("-k", default="", help="run only cases whose name contains this")
    parser.add_argument("--mode", choices=("poll", "futures"), help="run only this mode")
    args = parser.parse_args()

    print(f"tinker {tinker.__version__}, simulator {args.bin}", flush=True)
    sim = Sim(args.bin, hold_ms=500)
    passed = failed = 0
    try:
        for name, fn, modes in CASES:
            if args.k not in name:
                continue
            for mode in modes:
                if args.mode and mode != args.mode:
                    continue
                sim.reset()
                t0 = time.monotonic()
                try:
                    fn(sim, mode)
                except Exception:
                    failed += 1
                    print(f"FAIL {name} [{mode}] ({time.monotonic() - t0:.1f}s)", flush=True)
                    traceback.print_exc()
                    for e in sim.log():
                        if e["endpoint"] != "telemetry":
                            print(
                                "   ",
                                e["t_us"],
                                e["method"],
                                e["path"],
                                e["status"],
                                e["outcome"],
                                json.dumps(e["body"])[:160],
                            )
                else:
                    passed += 1
                    print(f"ok   {name} [{mode}] ({time.monotonic() - t0:.1f}s)", flush=True)
    finally:
        sim.stop()
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
