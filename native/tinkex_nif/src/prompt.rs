//! Prompt chunks as `TinkexNative.Types.ModelInput.encode/1` hands them
//! over: a binary of little-endian int32 token ids per text chunk, and
//! tagged tuples for images:
//!
//! - `{:image, image_resource, :png | :jpeg, expected_tokens | nil}`
//! - `{:image_asset_pointer, location, :png | :jpeg, expected_tokens | nil}`
//!
//! An inline image's bytes are copied once, by [`prompt_image`] on a dirty
//! scheduler (a multi-megabyte copy would overrun a normal scheduler's
//! 1 ms), into a resource that every sample of it then shares.

use rustler::{Binary, NifTaggedEnum, NifUnitEnum, ResourceArc, Term};
use tinkex_core::wire::{Chunk, ImageData, ImageFormat};

/// An inline image's bytes, owned by the native side.
pub struct ImageRes(ImageData);

#[rustler::resource_impl]
impl rustler::Resource for ImageRes {}

/// Copies an image's bytes into a resource for prompt chunks. Dirty: the
/// copy is proportional to the image.
#[rustler::nif(schedule = "DirtyCpu")]
fn prompt_image(data: Binary<'_>) -> ResourceArc<ImageRes> {
    ResourceArc::new(ImageRes(ImageData::from(data.as_slice())))
}

/// `:png` or `:jpeg`.
#[derive(NifUnitEnum, Clone, Copy)]
enum FormatArg {
    Png,
    Jpeg,
}

impl From<FormatArg> for ImageFormat {
    fn from(f: FormatArg) -> ImageFormat {
        match f {
            FormatArg::Png => ImageFormat::Png,
            FormatArg::Jpeg => ImageFormat::Jpeg,
        }
    }
}

/// An image chunk's tuple.
#[derive(NifTaggedEnum)]
enum ImageArg {
    Image(ResourceArc<ImageRes>, FormatArg, Option<u32>),
    ImageAssetPointer(String, FormatArg, Option<u32>),
}

/// Decodes the chunk list; `BadArg` for anything of another shape (the
/// Elixir side has validated it, so only a direct NIF call gets here).
pub fn decode_chunks(terms: &[Term<'_>]) -> rustler::NifResult<Vec<Chunk>> {
    terms.iter().map(|t| decode_chunk(*t)).collect()
}

fn decode_chunk(term: Term<'_>) -> rustler::NifResult<Chunk> {
    if let Ok(b) = term.decode::<Binary<'_>>() {
        if !b.len().is_multiple_of(4) {
            return Err(rustler::Error::BadArg);
        }
        let tokens = b
            .as_slice()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        return Ok(Chunk::EncodedText { tokens });
    }
    Ok(match crate::error::decode_arg::<ImageArg>(term)? {
        ImageArg::Image(res, format, expected_tokens) => Chunk::Image {
            data: res.0.clone(),
            format: format.into(),
            expected_tokens,
        },
        ImageArg::ImageAssetPointer(location, format, expected_tokens) => {
            Chunk::ImageAssetPointer {
                format: format.into(),
                location,
                expected_tokens,
            }
        }
    })
}
