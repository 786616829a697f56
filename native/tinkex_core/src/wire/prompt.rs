//! Prompts: a list of chunks, each token ids or an image.
//!
//! The chunk shapes are the official Python SDK's (`tinker.types`
//! `EncodedTextChunk`, `ImageChunk`, `ImageAssetPointerChunk`): tagged by
//! `type`, image bytes as standard base64 with padding, and an absent
//! `expected_tokens` left out rather than sent as `null` (the SDK dumps
//! requests with `exclude_none`). Key order inside a chunk differs from the
//! SDK's (serde writes the tag first); JSON objects are unordered, so the
//! server reads the same value.
//!
//! ```
//! use tinkex_core::wire::{Chunk, ImageData, ImageFormat, ModelInput};
//! let prompt = ModelInput {
//!     chunks: vec![
//!         Chunk::EncodedText { tokens: vec![1, 2] },
//!         Chunk::Image {
//!             data: ImageData::from(&b"\x89PNG"[..]),
//!             format: ImageFormat::Png,
//!             expected_tokens: Some(4),
//!         },
//!         Chunk::ImageAssetPointer {
//!             format: ImageFormat::Jpeg,
//!             location: "s3://bucket/cat.jpg".into(),
//!             expected_tokens: None,
//!         },
//!     ],
//! };
//! assert_eq!(
//!     serde_json::to_string(&prompt).unwrap(),
//!     concat!(
//!         r#"{"chunks":[{"type":"encoded_text","tokens":[1,2]},"#,
//!         r#"{"type":"image","data":"iVBORw==","format":"png","expected_tokens":4},"#,
//!         r#"{"type":"image_asset_pointer","format":"jpeg","location":"s3://bucket/cat.jpg"}]}"#
//!     )
//! );
//! // The SDK's size estimate: 10 bytes per token, the image's bytes, the
//! // location's length.
//! assert_eq!(prompt.estimated_bytes(), 20 + 4 + 19);
//! ```

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Estimated wire bytes per prompt token (the Python SDK's estimate).
pub const BYTES_PER_TOKEN: u64 = 10;

/// A prompt: a sequence of chunks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ModelInput {
    /// The chunks, in order.
    pub chunks: Vec<Chunk>,
}

impl ModelInput {
    /// A prompt of one encoded-text chunk.
    pub fn from_tokens(tokens: Vec<i32>) -> ModelInput {
        ModelInput {
            chunks: vec![Chunk::EncodedText { tokens }],
        }
    }

    /// The number of prompt tokens in encoded-text chunks (images are not
    /// counted: their size in tokens is only the caller's advisory guess).
    pub fn token_count(&self) -> usize {
        self.chunks.iter().map(Chunk::token_count).sum()
    }

    /// The Python SDK's size estimate, which picks the 429 fallback backoff
    /// and charges the dispatch bytes budget: 10 bytes per token, the raw
    /// bytes of an image, the length of an asset pointer's location.
    pub fn estimated_bytes(&self) -> u64 {
        self.chunks.iter().map(Chunk::estimated_bytes).sum()
    }
}

/// One chunk of a prompt, internally tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Chunk {
    /// Token ids: `{"type":"encoded_text","tokens":[...]}`.
    EncodedText {
        /// The token ids.
        tokens: Vec<i32>,
    },
    /// An image sent inline:
    /// `{"type":"image","data":"<base64>","format":"png","expected_tokens":N}`.
    Image {
        /// The encoded image file (PNG or JPEG bytes), base64 on the wire.
        data: ImageData,
        /// The file's format.
        format: ImageFormat,
        /// Tokens the caller expects the image to take; advisory (the
        /// server computes the real count and may fail a request early
        /// when they differ). Left out of the JSON when `None`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_tokens: Option<u32>,
    },
    /// An image the server fetches itself:
    /// `{"type":"image_asset_pointer","format":"jpeg","location":"...","expected_tokens":N}`.
    ImageAssetPointer {
        /// The file's format.
        format: ImageFormat,
        /// Path or URL of the image asset.
        location: String,
        /// As for [`Chunk::Image`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_tokens: Option<u32>,
    },
}

impl Chunk {
    /// Tokens of an encoded-text chunk; 0 for images.
    pub fn token_count(&self) -> usize {
        match self {
            Chunk::EncodedText { tokens } => tokens.len(),
            Chunk::Image { .. } | Chunk::ImageAssetPointer { .. } => 0,
        }
    }

    /// Estimated wire bytes of this chunk, as the SDK counts them
    /// (`InternalClientHolder.estimate_bytes_count_in_chunk`). An image
    /// counts its raw bytes, not its base64 text or `expected_tokens`.
    pub fn estimated_bytes(&self) -> u64 {
        match self {
            Chunk::EncodedText { tokens } => tokens.len() as u64 * BYTES_PER_TOKEN,
            Chunk::Image { data, .. } => data.len() as u64,
            Chunk::ImageAssetPointer { location, .. } => location.len() as u64,
        }
    }
}

/// The format of an image chunk: `"png"` or `"jpeg"` on the wire (the only
/// two the SDK allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// `"png"`.
    Png,
    /// `"jpeg"`.
    Jpeg,
}

impl ImageFormat {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpeg",
        }
    }
}

/// The bytes of an inline image, shared: cloning a prompt (or a spec built
/// from the same image) never copies them. Serialized as standard base64
/// with padding, as the SDK's `ImageChunk.data`.
#[derive(Clone, PartialEq, Eq)]
pub struct ImageData(Arc<[u8]>);

impl ImageData {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Their number.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an image of no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for ImageData {
    fn from(v: Vec<u8>) -> ImageData {
        ImageData(v.into())
    }
}

impl From<&[u8]> for ImageData {
    fn from(v: &[u8]) -> ImageData {
        ImageData(v.into())
    }
}

impl From<Arc<[u8]>> for ImageData {
    fn from(v: Arc<[u8]>) -> ImageData {
        ImageData(v)
    }
}

/// Only the size: an image's bytes are noise in a log line.
impl fmt::Debug for ImageData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageData({} bytes)", self.0.len())
    }
}

impl Serialize for ImageData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for ImageData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ImageData, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(ImageData::from)
            .map_err(|e| serde::de::Error::custom(format!("image data is not base64: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chunks_round_trip_through_json() {
        let prompt = ModelInput {
            chunks: vec![
                Chunk::Image {
                    data: ImageData::from(vec![0u8, 255, 7, 8, 9]),
                    format: ImageFormat::Jpeg,
                    expected_tokens: None,
                },
                Chunk::EncodedText { tokens: vec![-1] },
                Chunk::ImageAssetPointer {
                    format: ImageFormat::Png,
                    location: "tinker://a/b.png".into(),
                    expected_tokens: Some(0),
                },
            ],
        };
        let v = serde_json::to_value(&prompt).unwrap();
        assert_eq!(
            v,
            json!({"chunks":[
                {"type":"image","data":"AP8HCAk=","format":"jpeg"},
                {"type":"encoded_text","tokens":[-1]},
                {"type":"image_asset_pointer","format":"png","location":"tinker://a/b.png","expected_tokens":0}]})
        );
        let back: ModelInput = serde_json::from_value(v).unwrap();
        assert_eq!(back, prompt);
        assert_eq!(prompt.token_count(), 1);
        assert_eq!(prompt.estimated_bytes(), 5 + 10 + 16);
    }

    #[test]
    fn bad_image_fields_are_rejected() {
        let bad = |v: serde_json::Value| serde_json::from_value::<Chunk>(v).unwrap_err();
        assert!(bad(json!({"type":"image","data":"%%%","format":"png"}))
            .to_string()
            .contains("not base64"));
        assert!(bad(json!({"type":"image","data":"AA==","format":"gif"}))
            .to_string()
            .contains("gif"));
        bad(json!({"type":"image_asset_pointer","format":"png"}));
    }

    #[test]
    fn image_data_prints_its_size_only() {
        let d = ImageData::from(vec![1u8; 3000]);
        assert_eq!(format!("{d:?}"), "ImageData(3000 bytes)");
        assert_eq!((d.len(), d.is_empty()), (3000, false));
    }
}
