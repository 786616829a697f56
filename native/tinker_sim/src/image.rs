//! Validation of image prompt chunks, the shapes of the Python SDK's
//! `ImageChunk` and `ImageAssetPointerChunk`:
//!
//! ```text
//! {"type":"image","data":"<standard base64, padded>","format":"png"|"jpeg","expected_tokens"?:N}
//! {"type":"image_asset_pointer","location":"<non-empty>","format":"png"|"jpeg","expected_tokens"?:N}
//! ```
//!
//! Unknown keys are rejected (the SDK's models forbid extra fields), so a
//! client that names a field differently fails loudly here. The image
//! itself is never decoded: its prompt positions are its `expected_tokens`
//! (0 when absent).

use crate::request::FieldError;
use serde_json::{Map, Value};

/// Checks an image chunk of type `ty` named `name` (e.g. `prompt.chunks[1]`);
/// returns the prompt positions it takes.
pub fn check(obj: &Map<String, Value>, ty: &str, name: &str) -> Result<u32, FieldError> {
    let (payload, allowed): (&str, [&str; 4]) = if ty == "image" {
        ("data", ["type", "data", "format", "expected_tokens"])
    } else {
        (
            "location",
            ["type", "location", "format", "expected_tokens"],
        )
    };
    if let Some(extra) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(FieldError::new(
            &format!("{name}.{extra}"),
            format!("is not a field of an {ty} chunk (fields: {allowed:?})"),
        ));
    }
    let field = |key: &str| format!("{name}.{key}");
    match obj.get(payload) {
        Some(Value::String(s)) if payload == "data" => {
            if !is_padded_base64(s) {
                return Err(FieldError::new(
                    &field("data"),
                    "must be standard base64 with padding",
                ));
            }
        }
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(_) => {
            return Err(FieldError::new(
                &field(payload),
                "must be a non-empty string",
            ))
        }
        None => return Err(FieldError::new(&field(payload), "is required")),
    }
    match obj.get("format") {
        Some(Value::String(f)) if f == "png" || f == "jpeg" => {}
        Some(other) => {
            return Err(FieldError::new(
                &field("format"),
                format!("must be \"png\" or \"jpeg\", got {other}"),
            ))
        }
        None => return Err(FieldError::new(&field("format"), "is required")),
    }
    match obj.get("expected_tokens") {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                FieldError::new(
                    &field("expected_tokens"),
                    format!("must be a non-negative 32-bit integer, got {v}"),
                )
            }),
    }
}

/// True for non-empty standard-alphabet base64 whose length is a multiple
/// of 4, with at most two `=` and only at the end.
pub fn is_padded_base64(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(4) {
        return false;
    }
    let body = b
        .strip_suffix(b"==")
        .or_else(|| b.strip_suffix(b"="))
        .unwrap_or(b);
    body.iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(v: Value) -> Result<u32, FieldError> {
        let obj = v.as_object().unwrap().clone();
        let ty = obj["type"].as_str().unwrap().to_string();
        check(&obj, &ty, "prompt.chunks[0]")
    }

    #[test]
    fn images_and_pointers() {
        assert_eq!(
            run(json!({"type":"image","data":"iVBORw==","format":"png","expected_tokens":7})),
            Ok(7)
        );
        assert_eq!(
            run(json!({"type":"image","data":"AAAA","format":"jpeg"})),
            Ok(0)
        );
        assert_eq!(
            run(
                json!({"type":"image_asset_pointer","location":"s3://x","format":"png","expected_tokens":null})
            ),
            Ok(0)
        );
        let field = |v: Value| run(v).unwrap_err().field;
        assert_eq!(
            field(json!({"type":"image","data":"iVBORw","format":"png"})),
            "prompt.chunks[0].data"
        );
        assert_eq!(
            field(json!({"type":"image","data":"iV-_","format":"png"})),
            "prompt.chunks[0].data"
        );
        assert_eq!(
            field(json!({"type":"image","data":"AAAA","format":"gif"})),
            "prompt.chunks[0].format"
        );
        assert_eq!(
            field(json!({"type":"image","format":"png"})),
            "prompt.chunks[0].data"
        );
        assert_eq!(
            field(json!({"type":"image","data":"AAAA","format":"png","expected_tokens":-1})),
            "prompt.chunks[0].expected_tokens"
        );
        assert_eq!(
            field(json!({"type":"image","image_data":"AAAA","data":"AAAA","format":"png"})),
            "prompt.chunks[0].image_data"
        );
        assert_eq!(
            field(json!({"type":"image_asset_pointer","location":"","format":"png"})),
            "prompt.chunks[0].location"
        );
    }

    #[test]
    fn base64_shapes() {
        for ok in ["AAAA", "AA==", "AAA=", "+/9a"] {
            assert!(is_padded_base64(ok), "{ok}");
        }
        for bad in ["", "A", "AAA", "A===", "AA=A", "AA A", "AA-_"] {
            assert!(!is_padded_base64(bad), "{bad}");
        }
    }
}
