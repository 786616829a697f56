//! Prompts mixing text and images against the real simulator: the wire
//! shape of each chunk, the result the simulator derives from it, and the
//! SDK's size estimate behind the 429 fallback backoff.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tinkex_core::http::Endpoint;
use tinkex_core::rate_limiter::RateLimiter;
use tinkex_core::sampling::{run_attempt, SampleContext, SampleSpec, Timings};
use tinkex_core::wire::{Chunk, ImageData, ImageFormat, ModelInput, SamplingParams};

const SSID: &str = "image-test:sample:0";

async fn start() -> (tinker_sim::SimHandle, Endpoint) {
    let (_, sim) = tinker_sim::serve(tinker_sim::SimConfig {
        exit_on_stdin_eof: false,
        ..tinker_sim::SimConfig::default()
    })
    .await
    .unwrap();
    let ep = Endpoint::new(&sim.base_url(), "tml-image-prompt").unwrap();
    (sim, ep)
}

fn ctx(ep: &Endpoint) -> SampleContext {
    let t = Timings {
        rate_limit_small: Duration::from_millis(50),
        rate_limit_large: Duration::from_millis(600),
        ..Timings::default()
    };
    SampleContext::new(ep.clone(), SSID)
        .with_timings(t)
        .with_limiter(Arc::new(RateLimiter::new()))
}

fn asamples(sim: &tinker_sim::SimHandle) -> Vec<Value> {
    let mut v: Vec<Value> = sim
        .log()
        .into_iter()
        .filter(|e| e["endpoint"] == "asample")
        .collect();
    v.sort_by_key(|e| e["t_us"].as_u64());
    v
}

fn image(bytes: Vec<u8>, format: ImageFormat, expected_tokens: Option<u32>) -> Chunk {
    Chunk::Image {
        data: ImageData::from(bytes),
        format,
        expected_tokens,
    }
}

#[tokio::test]
async fn mixed_prompt_goes_out_as_the_sdk_sends_it() {
    let (sim, ep) = start().await;
    let prompt = ModelInput {
        chunks: vec![
            Chunk::EncodedText {
                tokens: vec![11, 12],
            },
            image(vec![0xfb, 0xff, 0xfe, 0x3e], ImageFormat::Png, Some(5)),
            Chunk::ImageAssetPointer {
                format: ImageFormat::Jpeg,
                location: "s3://bucket/cat.jpg".into(),
                expected_tokens: Some(3),
            },
            image(b"jpeg".to_vec(), ImageFormat::Jpeg, None),
            Chunk::EncodedText { tokens: vec![13] },
        ],
    };
    let params = SamplingParams {
        max_tokens: Some(4),
        ..SamplingParams::default()
    };
    let mut spec = SampleSpec::new(prompt, params, 2);
    spec.prompt_logprobs = true;
    let out = run_attempt(&ctx(&ep), &spec, 3).await.unwrap();

    let logged = asamples(&sim);
    assert_eq!(logged.len(), 1);
    let body = &logged[0]["body"];
    assert_eq!(
        body["prompt"],
        json!({"chunks": [
            {"type": "encoded_text", "tokens": [11, 12]},
            {"type": "image", "data": "+//+Pg==", "format": "png", "expected_tokens": 5},
            {"type": "image_asset_pointer", "location": "s3://bucket/cat.jpg", "format": "jpeg",
             "expected_tokens": 3},
            {"type": "image", "data": "anBlZw==", "format": "jpeg"},
            {"type": "encoded_text", "tokens": [13]}
        ]})
    );
    let want = tinker_sim::SampleSpec::from_json(Some(body))
        .unwrap()
        .expected();
    for (got, exp) in out.sequences.iter().zip(&want.sequences) {
        assert_eq!(got.tokens, exp.tokens);
    }
    // Positions: 3 text tokens, 5 + 3 + 0 image tokens.
    let lp = out.prompt_logprobs.unwrap();
    assert_eq!(lp.len(), 11);
    assert_eq!(Some(lp), want.prompt_logprobs);
    sim.shutdown().await;
}

/// Gap between a 429'd asample and its resend.
async fn fallback_after_429(prompt: ModelInput) -> Duration {
    let (sim, ep) = start().await;
    sim.set_scenario(&json!({"rules": [
        {"endpoint": "asample", "match": {"first": 1}, "action": {"status": 429}}
    ]}))
    .unwrap();
    let spec = SampleSpec::new(prompt, SamplingParams::default(), 1);
    run_attempt(&ctx(&ep), &spec, 0).await.unwrap();
    let logged = asamples(&sim);
    assert_eq!(logged.len(), 2);
    let us = logged[1]["t_us"].as_u64().unwrap() - logged[0]["t_us"].as_u64().unwrap();
    sim.shutdown().await;
    Duration::from_micros(us)
}

#[tokio::test]
async fn images_count_their_raw_bytes_for_the_429_fallback() {
    // 100 KiB of image: its base64 (133 KiB) is over 128 KiB, its raw
    // size is not, and the SDK counts the raw size: the short fallback.
    let small = ModelInput {
        chunks: vec![image(vec![7; 100 * 1024], ImageFormat::Png, Some(10))],
    };
    assert_eq!(small.estimated_bytes(), 100 * 1024);
    let g = fallback_after_429(small).await;
    assert!(g < Duration::from_millis(500), "{g:?}");

    // Text and image add up past 128 KiB: the long fallback.
    let large = ModelInput {
        chunks: vec![
            Chunk::EncodedText {
                tokens: vec![1; 1000],
            },
            image(vec![7; 120 * 1024], ImageFormat::Jpeg, None),
        ],
    };
    assert_eq!(large.estimated_bytes(), 10_000 + 120 * 1024);
    let g = fallback_after_429(large).await;
    assert!(g >= Duration::from_millis(590), "{g:?}");
}
