//! End-to-end tests: the simulator in-process, driven by reqwest.

use prost::Message;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tinker_sim::proto::SampleResponse;
use tinker_sim::{expected_tokens, serve, SamplingParams, SimConfig, SimHandle};

const KEY: &str = "tml-test";

struct Sim {
    handle: SimHandle,
    http: reqwest::Client,
}

impl Sim {
    async fn start(config: SimConfig) -> Sim {
        let (_, handle) = serve(config).await.expect("serve");
        Sim {
            handle,
            http: reqwest::Client::new(),
        }
    }

    async fn default() -> Sim {
        Sim::start(SimConfig::default()).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.base_url())
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("x-api-key", KEY)
            .json(&body)
            .send()
            .await
            .expect("send")
    }

    async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.post(path, body).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn poll(&self, request_id: &str) -> (u16, Value) {
        self.post_json(
            "/api/v1/retrieve_future",
            json!({"request_id": request_id, "allow_metadata_only": true}),
        )
        .await
    }

    async fn scenario(&self, patch: Value) {
        let r = self
            .http
            .post(self.url("/_sim/scenario"))
            .json(&patch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn sample_body(seq_id: i64, max_tokens: u32) -> Value {
    json!({"type": "sample", "sampling_session_id": "sess:sample:0", "seq_id": seq_id, "num_samples": 2,
           "prompt": {"chunks": [{"type": "encoded_text", "tokens": [5, 6, 7]}]},
           "sampling_params": {"max_tokens": max_tokens, "temperature": 1.0, "top_k": -1, "top_p": 1.0},
           "prompt_logprobs": false, "topk_prompt_logprobs": 0})
}

#[tokio::test]
async fn session_setup_and_happy_path() {
    let sim = Sim::default().await;
    let (s, cfg) = sim
        .post_json("/api/v1/client/config", json!({"sdk_version": "x"}))
        .await;
    assert_eq!((s, cfg), (200, json!({})));
    let (_, sess) = sim
        .post_json(
            "/api/v1/create_session",
            json!({"type": "create_session", "tags": []}),
        )
        .await;
    let session_id = sess["session_id"].as_str().unwrap().to_string();
    let (_, ss) = sim
        .post_json(
            "/api/v1/create_sampling_session",
            json!({"session_id": session_id, "sampling_session_seq_id": 0, "base_model": "Qwen/Qwen3-8B"}),
        )
        .await;
    let ssid = ss["sampling_session_id"].as_str().unwrap().to_string();
    let sampler = sim
        .http
        .get(sim.url(&format!("/api/v1/samplers/{ssid}")))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(sampler["base_model"], "Qwen/Qwen3-8B");

    let mut body = sample_body(0, 4);
    body["sampling_session_id"] = json!(ssid);
    let (s, fut) = sim.post_json("/api/v1/asample", body).await;
    assert_eq!(s, 200);
    let rid = fut["request_id"].as_str().unwrap();
    assert_eq!(fut["sample_sequence_ids"].as_array().unwrap().len(), 2);
    let (s, result) = sim.poll(rid).await;
    assert_eq!(s, 200);
    let params = SamplingParams::with_max_tokens(4);
    for j in 0..2 {
        let want = expected_tokens(&ssid, 0, &[5, 6, 7], &params, j);
        assert_eq!(result["sequences"][j as usize]["tokens"], json!(want));
        assert_eq!(result["sequences"][j as usize]["stop_reason"], "length");
    }
    let stats = sim.handle.stats();
    assert_eq!(stats["futures_created"], 1);
    assert_eq!(stats["futures_completed"], 1);
    assert_eq!(stats["endpoints"]["asample"]["200"], 1);
}

#[tokio::test]
async fn protobuf_result_matches_json() {
    let sim = Sim::default().await;
    let mut body = sample_body(3, 5);
    body["prompt_logprobs"] = json!(true);
    let (_, fut) = sim.post_json("/api/v1/asample", body.clone()).await;
    let rid = fut["request_id"].as_str().unwrap();
    let r = sim
        .http
        .post(sim.url("/api/v1/retrieve_future"))
        .header("x-api-key", KEY)
        .header("accept", "application/x-protobuf")
        .json(&json!({"request_id": rid, "allow_metadata_only": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-protobuf");
    let decoded = SampleResponse::decode(r.bytes().await.unwrap()).unwrap();
    let expected = sim.post_json("/_sim/expected", body).await.1;
    let tokens: Vec<i32> = decoded.sequences[1]
        .tokens
        .chunks(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(json!(tokens), expected["sequences"][1]["tokens"]);
    let plp: Vec<f32> = decoded
        .prompt_logprobs
        .unwrap()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(plp[0].is_nan());
    assert_eq!(json!(plp[1]), expected["prompt_logprobs"][1]);
    assert_eq!(expected["request_id"], json!(rid));
}

#[tokio::test]
async fn asample_is_idempotent_on_seq_id() {
    let sim = Sim::default().await;
    let (_, a) = sim.post_json("/api/v1/asample", sample_body(7, 2)).await;
    let (_, b) = sim.post_json("/api/v1/asample", sample_body(7, 2)).await;
    let (_, c) = sim.post_json("/api/v1/asample", sample_body(8, 2)).await;
    assert_eq!(a, b);
    assert_ne!(a["request_id"], c["request_id"]);
    let stats = sim.handle.stats();
    assert_eq!(
        (
            stats["futures_created"].clone(),
            stats["duplicate_submissions"].clone()
        ),
        (json!(2), json!(1))
    );
    let outcomes: Vec<Value> = sim
        .handle
        .log()
        .iter()
        .map(|e| e["outcome"].clone())
        .collect();
    assert_eq!(
        outcomes,
        [json!("created"), json!("duplicate"), json!("created")]
    );
}

#[tokio::test]
async fn long_poll_holds_until_ready_then_try_again_after_hold() {
    let config = SimConfig {
        latency: tinker_sim::Latency::Fixed(300),
        hold: Duration::from_millis(150),
        ..SimConfig::default()
    };
    let sim = Sim::start(config).await;
    let (_, fut) = sim.post_json("/api/v1/asample", sample_body(0, 1)).await;
    let rid = fut["request_id"].as_str().unwrap().to_string();
    let t = Instant::now();
    let (_, first) = sim.poll(&rid).await;
    let held = t.elapsed();
    assert_eq!(first["type"], "try_again");
    assert!(
        held >= Duration::from_millis(140) && held < Duration::from_millis(280),
        "{held:?}"
    );
    let (_, second) = sim.poll(&rid).await;
    assert_eq!(second["type"], "sample");
    assert!(
        t.elapsed() >= Duration::from_millis(280),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn stuck_switch_wakes_pending_polls() {
    let config = SimConfig {
        hold: Duration::from_secs(10),
        ..SimConfig::default()
    };
    let sim = Sim::start(config).await;
    sim.scenario(json!({"stuck": true})).await;
    let (_, fut) = sim.post_json("/api/v1/asample", sample_body(0, 1)).await;
    let rid = fut["request_id"].as_str().unwrap().to_string();
    let t = Instant::now();
    let poll = sim.poll(&rid);
    let unstick = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        sim.scenario(json!({"stuck": false})).await;
    };
    let ((_, result), ()) = tokio::join!(poll, unstick);
    assert_eq!(result["type"], "sample");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test]
async fn scripted_429_then_success_keeps_headers_and_logs_rule() {
    let sim = Sim::default().await;
    sim.scenario(
        json!({"rules": [{"endpoint": "asample", "match": {"first": 2},
        "action": {"status": 429, "headers": {"retry-after-ms": "300"}}}]}),
    )
    .await;
    for _ in 0..2 {
        let r = sim.post("/api/v1/asample", sample_body(0, 1)).await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after-ms"], "300");
    }
    let (s, _) = sim.post_json("/api/v1/asample", sample_body(0, 1)).await;
    assert_eq!(s, 200);
    let log = sim.get("/_sim/log").await;
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().all(|e| e["seq_id"] == 0));
    assert_eq!(entries[0]["rule"], 0);
    assert_eq!(entries[2]["rule"], Value::Null);
    assert_eq!(sim.handle.stats()["futures_created"], 1);
}

#[tokio::test]
async fn dropped_connection_is_a_connection_error() {
    let sim = Sim::default().await;
    sim.scenario(
        json!({"rules": [{"endpoint": "asample", "match": {"nth": 1}, "action": {"drop": true}}]}),
    )
    .await;
    let err = sim
        .http
        .post(sim.url("/api/v1/asample"))
        .header("x-api-key", KEY)
        .json(&sample_body(0, 1))
        .send()
        .await
        .expect_err("the connection must close without an answer");
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    assert!(
        !err.is_status() && !err.is_decode() && !err.is_body(),
        "{err:?}"
    );
    let (s, _) = sim.post_json("/api/v1/asample", sample_body(0, 1)).await;
    assert_eq!(s, 200);
    assert_eq!(sim.handle.log()[0]["outcome"], "drop");
}

#[tokio::test]
async fn second_poll_410_expires_the_future_for_good() {
    let sim = Sim::default().await;
    sim.scenario(json!({"rules": [
        {"endpoint": "future", "match": {"seq_id": 0}, "action": {"try_again": {"count": 1}}},
        {"endpoint": "retrieve_future", "match": {"poll": 2}, "action": {"status": 410}}]}))
        .await;
    let (_, fut) = sim.post_json("/api/v1/asample", sample_body(0, 1)).await;
    let rid = fut["request_id"].as_str().unwrap().to_string();
    assert_eq!(sim.poll(&rid).await.1["type"], "try_again");
    assert_eq!(sim.poll(&rid).await.0, 410);
    assert_eq!(
        sim.poll(&rid).await.0,
        410,
        "an expired future stays expired"
    );
    let (_, again) = sim.post_json("/api/v1/asample", sample_body(0, 1)).await;
    assert_eq!(
        again["request_id"],
        json!(rid),
        "the old seq_id names the expired future"
    );
    let (_, fresh) = sim.post_json("/api/v1/asample", sample_body(1, 1)).await;
    let fresh_id = fresh["request_id"].as_str().unwrap();
    assert_eq!(sim.poll(fresh_id).await.1["type"], "sample");
    assert_eq!(sim.handle.stats()["futures_expired"], 1);
}

#[tokio::test]
async fn future_fates_fail_metadata_and_queue_state() {
    let sim = Sim::default().await;
    sim.scenario(json!({"rules": [
        {"endpoint": "future", "match": {"seq_id": 1}, "action": {"fail": {"category": "user", "error": "bad prompt"}}},
        {"endpoint": "future", "match": {"seq_id": 2},
         "action": {"try_again": {"count": 2, "queue_state": "paused_capacity", "queue_state_reason": "busy"},
                    "complete_metadata": true}}]}))
        .await;
    let (_, f1) = sim.post_json("/api/v1/asample", sample_body(1, 1)).await;
    let (_, failed) = sim.poll(f1["request_id"].as_str().unwrap()).await;
    assert_eq!(failed, json!({"error": "bad prompt", "category": "user"}));

    let (_, f2) = sim.post_json("/api/v1/asample", sample_body(2, 1)).await;
    let rid = f2["request_id"].as_str().unwrap();
    for _ in 0..2 {
        let (_, ta) = sim.poll(rid).await;
        assert_eq!(
            (ta["queue_state"].clone(), ta["queue_state_reason"].clone()),
            (json!("paused_capacity"), json!("busy"))
        );
    }
    let (_, meta) = sim.poll(rid).await;
    assert_eq!(meta["status"], "complete_metadata");
    assert!(meta["response_payload_size"].as_u64().unwrap() > 0);
    let (_, result) = sim
        .post_json(
            "/api/v1/retrieve_future",
            json!({"request_id": rid, "allow_metadata_only": false}),
        )
        .await;
    assert_eq!(result["type"], "sample");
    let stats = sim.handle.stats();
    assert_eq!(
        (
            stats["futures_failed"].clone(),
            stats["futures_completed"].clone()
        ),
        (json!(1), json!(1))
    );
}

#[tokio::test]
async fn malformed_bodies_name_the_field_and_unknown_paths_404() {
    let sim = Sim::default().await;
    let mut body = sample_body(0, 1);
    body["sampling_params"]["max_tokens"] = json!("x");
    let (s, e) = sim.post_json("/api/v1/asample", body).await;
    assert_eq!(
        (s, e["field"].clone()),
        (422, json!("sampling_params.max_tokens"))
    );
    let r = sim
        .http
        .post(sim.url("/api/v1/asample"))
        .header("x-api-key", KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (s, e) = sim.post_json("/api/v1/does_not_exist", json!({})).await;
    assert_eq!((s, e["detail"].clone()), (404, json!("Not Found")));
    let r = sim
        .http
        .post(sim.url("/api/v1/asample"))
        .header("x-api-key", "sk-nope")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    r.json::<Value>().await.expect("401 has a JSON body");
}

#[tokio::test]
async fn retrieve_futures_reports_completions_by_cursor() {
    let config = SimConfig {
        latency: tinker_sim::Latency::Fixed(100),
        ..SimConfig::default()
    };
    let sim = Sim::start(config).await;
    sim.scenario(
        json!({"client_config": {"sample_use_retrieve_futures": true},
        "rules": [{"endpoint": "future", "match": {"seq_id": 1}, "action": {"fail": {}}}]}),
    )
    .await;
    let poll = |prev: u64, timeout: Option<f64>| {
        let mut body = json!({"target": {"type": "sampling_session", "sampling_session_id": "sess:sample:0",
                                         "cloned_sampler_id": 0}, "prev_cursor": prev, "retrieved_request_ids": []});
        if let Some(t) = timeout {
            body["timeout"] = json!(t);
        }
        sim.post_json("/api/v1/retrieve_futures", body)
    };
    let (_, empty) = poll(0, Some(0.0)).await;
    assert_eq!(empty, json!({"completions": [], "cursor": 0}));
    sim.post_json("/api/v1/asample", sample_body(0, 1)).await;
    sim.post_json("/api/v1/asample", sample_body(1, 1)).await;
    let t = Instant::now();
    let (_, first) = poll(0, None).await;
    assert!(
        t.elapsed() >= Duration::from_millis(80),
        "held until ready: {:?}",
        t.elapsed()
    );
    // The poll answers as soon as something completed; on a busy machine
    // the second future may complete after that, so gather by cursor.
    let mut completions = first["completions"].as_array().unwrap().clone();
    let mut cursor = first["cursor"].as_u64().unwrap();
    while completions.len() < 2 {
        let (_, next) = poll(cursor, None).await;
        completions.extend(next["completions"].as_array().unwrap().iter().cloned());
        cursor = next["cursor"].as_u64().unwrap();
    }
    assert_eq!(completions.len(), 2, "{completions:?}");
    assert_eq!(completions[0]["state"], "finished");
    assert!(
        completions[0]["response_payload_uncompressed_size"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(completions[1]["state"], "failed");
    assert_eq!(cursor, 2);
    let (_, acked) = poll(2, Some(0.0)).await;
    assert_eq!(acked, json!({"completions": [], "cursor": 2}));
}

#[tokio::test]
async fn reset_clears_everything() {
    let sim = Sim::default().await;
    sim.scenario(json!({"stuck": true})).await;
    sim.post_json("/api/v1/asample", sample_body(0, 1)).await;
    let r = sim.http.post(sim.url("/_sim/reset")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let stats = sim.get("/_sim/stats").await;
    assert_eq!(
        (stats["requests_total"].clone(), stats["stuck"].clone()),
        (json!(0), json!(false))
    );
    assert_eq!(sim.get("/_sim/log").await["entries"], json!([]));
    let (s, _) = sim.poll("req:sess:sample:0:0").await;
    assert_eq!(s, 404);
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn outstanding_futures_count_until_ready_or_cancelled() {
    let sim = Sim::default().await;
    sim.scenario(json!({"latency_ms": 60_000})).await;
    for seq in 0..4 {
        sim.post_json("/api/v1/asample", sample_body(seq, 1)).await;
    }
    // A resend of the same seq_id is the same future: not counted twice.
    sim.post_json("/api/v1/asample", sample_body(3, 1)).await;
    let stats = sim.get("/_sim/stats").await;
    assert_eq!(
        (
            &stats["futures_outstanding"],
            &stats["max_futures_outstanding"]
        ),
        (&json!(4), &json!(4))
    );
    let (s, _) = sim
        .post_json(
            "/api/v1/cancel_future",
            json!({"request_id": "req:sess:sample:0:1"}),
        )
        .await;
    assert_eq!(s, 200);
    sim.scenario(json!({"latency_ms": 0})).await;
    sim.post_json("/api/v1/asample", sample_body(10, 1)).await;
    let stats = sim.get("/_sim/stats").await;
    assert_eq!(
        (
            &stats["futures_outstanding"],
            &stats["max_futures_outstanding"]
        ),
        (&json!(3), &json!(4)),
        "cancelled: gone; ready at once: never outstanding beside the others"
    );
    sim.handle.shutdown().await;
}
