//! Session set-up and the small endpoints: client/config, dynamic_config,
//! create_session, session_heartbeat, create_sampling_session,
//! join_sampling_session, samplers/{id}, telemetry, sessions/{id}/finish,
//! auth/token, healthz, get_server_capabilities.

use super::{Call, Scripted, JWT_HEADER};
use crate::endpoint::Endpoint;
use crate::http::Reply;
use crate::matcher::MatchCtx;
use crate::request::{FieldError, Fields};
use crate::state::SamplerInfo;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

/// Base model reported for sampling sessions the simulator did not create.
pub const DEFAULT_BASE_MODEL: &str = "Qwen/Qwen3-8B";

/// The 400/422 answer for a bad body.
pub fn field_error(e: &FieldError) -> Reply {
    let mut extra = json!({"field": e.field});
    if e.field.is_empty() {
        extra = json!({});
    }
    Reply::error(e.status, &e.to_string(), extra)
}

/// Handles the endpoints of this module.
pub async fn handle(endpoint: Endpoint, call: &mut Call<'_>) -> Reply {
    let seq_id = call
        .json()
        .and_then(|b| b.get("seq_id"))
        .and_then(Value::as_i64);
    let ssid = call
        .json()
        .and_then(|b| b.get("sampling_session_id"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            (endpoint == Endpoint::GetSampler).then(|| call.param.unwrap_or("").to_string())
        });
    let ctx = MatchCtx {
        seq_id,
        sampling_session_id: ssid.as_deref(),
        poll: None,
    };
    match call.scripted(endpoint, &ctx).await {
        Scripted::Reply(r) => return r,
        Scripted::Continue | Scripted::Poll(_) => {}
    }
    match answer(endpoint, call) {
        Ok(r) => r,
        Err(e) => field_error(&e),
    }
}

fn answer(endpoint: Endpoint, call: &mut Call<'_>) -> Result<Reply, FieldError> {
    let sim = call.sim;
    Ok(match endpoint {
        Endpoint::ClientConfig => {
            Fields::of(call.json())?.opt_string("sdk_version")?;
            Reply::ok(call.settings.client_config.clone())
        }
        Endpoint::DynamicConfig => Reply::ok(call.settings.dynamic_config.clone()),
        Endpoint::CreateSession => {
            let f = Fields::of(call.json())?;
            f.opt_string("sdk_version")?;
            let n = sim.next_session.fetch_add(1, Ordering::Relaxed) + 1;
            Reply::ok(json!({"type": "create_session", "session_id": format!("sim-session-{n}")}))
        }
        Endpoint::SessionHeartbeat => {
            Fields::of(call.json())?.string("session_id")?;
            Reply::ok(json!({"type": "session_heartbeat"}))
        }
        Endpoint::CreateSamplingSession => create_sampling_session(call)?,
        Endpoint::JoinSamplingSession => {
            let ssid = Fields::of(call.json())?.string("sampling_session_id")?;
            let mut samplers = sim.samplers.lock().unwrap_or_else(|e| e.into_inner());
            let info = samplers.entry(ssid.to_string()).or_default();
            info.joined += 1;
            Reply::ok(json!({"type": "join_sampling_session", "client_counter": info.joined}))
        }
        Endpoint::GetSampler => {
            let id = call.param.unwrap_or_default();
            let info = sim
                .samplers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(id)
                .cloned()
                .unwrap_or_default();
            Reply::ok(json!({
                "sampler_id": id,
                "base_model": info.base_model.as_deref().unwrap_or(DEFAULT_BASE_MODEL),
                "model_path": info.model_path,
            }))
        }
        Endpoint::Telemetry => Reply::ok(json!({"status": "accepted"})),
        Endpoint::FinishSession => {
            let f = Fields::of(call.json())?;
            if let Some(reason) = f.opt_object("reason")? {
                reason.opt_string("type")?;
            }
            sim.stats.bump(&sim.stats.sessions_finished);
            Reply::ok(json!({"type": "finish_session", "session_id": call.param}))
        }
        Endpoint::AuthToken => {
            let exp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                + 3600;
            let payload = base64url(format!("{{\"exp\":{exp},\"sub\":\"tinker_sim\"}}").as_bytes());
            Reply::ok(json!({"jwt": format!("{JWT_HEADER}.{payload}.sim")}))
        }
        Endpoint::Healthz => Reply::ok(json!({"status": "ok"})),
        Endpoint::ServerCapabilities => Reply::ok(json!({"supported_models": [
            {"model_name": DEFAULT_BASE_MODEL, "max_context_length": 32768, "trainable": false, "sampleable": true}
        ]})),
        Endpoint::Asample
        | Endpoint::RetrieveFuture
        | Endpoint::RetrieveFutures
        | Endpoint::CancelFuture => {
            unreachable!("dispatched elsewhere")
        }
    })
}

fn create_sampling_session(call: &mut Call<'_>) -> Result<Reply, FieldError> {
    let f = Fields::of(call.json())?;
    if let Some(t) = f.opt_string("type")? {
        if t != "create_sampling_session" {
            return Err(FieldError::new(
                "type",
                "must be \"create_sampling_session\"",
            ));
        }
    }
    let session_id = f.string("session_id")?;
    let base_model = f.opt_string("base_model")?;
    let model_path = f.opt_string("model_path")?;
    if base_model.is_none() && model_path.is_none() {
        return Err(FieldError::new(
            "base_model",
            "one of base_model or model_path is required",
        ));
    }
    if let Some(p) = model_path {
        if !p.starts_with("tinker://") {
            return Err(FieldError::new("model_path", "must start with tinker://"));
        }
    }
    let sim = call.sim;
    let mut samplers = sim.samplers.lock().unwrap_or_else(|e| e.into_inner());
    let seq = match f.opt_int("sampling_session_seq_id")? {
        Some(n) => n,
        None => samplers
            .keys()
            .filter(|k| k.starts_with(&format!("{session_id}:sample:")))
            .count() as i64,
    };
    let ssid = format!("{session_id}:sample:{seq}");
    samplers.insert(
        ssid.clone(),
        SamplerInfo {
            base_model: base_model.map(str::to_string),
            model_path: model_path.map(str::to_string),
            joined: 0,
        },
    );
    Ok(Reply::ok(
        json!({"type": "create_sampling_session", "sampling_session_id": ssid}),
    ))
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64url_without_padding() {
        assert_eq!(
            super::base64url(b"{\"alg\":\"none\",\"typ\":\"JWT\"}"),
            super::JWT_HEADER
        );
        assert_eq!(super::base64url(b"ab"), "YWI");
        assert_eq!(super::base64url(b"a"), "YQ");
    }
}
