//! A poster's PNG: the same SVG the poster is, drawn by `resvg` (the SVG renderer of the
//! linebender project: pure Rust, no system library) at print resolution. Text needs fonts:
//! the machine's own, loaded once (Debian's `fonts-wqy-zenhei` covers Chinese; without a CJK
//! font the Chinese text has no glyphs, while the QR code, the colours and the Latin text
//! still draw).

use std::sync::{Arc, OnceLock};

use resvg::{tiny_skia, usvg};

/// Print resolution: 300 dots per inch (an A6 poster is then 1240 × 1748 pixels).
pub const POSTER_DPI: f32 = 300.0;

/// The machine's fonts, loaded on first use (a few tens of milliseconds).
fn fonts() -> Arc<usvg::fontdb::Database> {
    static FONTS: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    Arc::clone(FONTS.get_or_init(|| {
        let mut fonts = usvg::fontdb::Database::new();
        fonts.load_system_fonts();
        Arc::new(fonts)
    }))
}

/// Why an SVG did not become a PNG.
#[derive(Debug, thiserror::Error)]
pub enum RasterError {
    /// The SVG did not parse.
    #[error("svg: {0}")]
    Svg(#[from] usvg::Error),
    /// The size is zero or too large.
    #[error("the drawing's size is not drawable")]
    Size,
    /// The PNG encoder failed.
    #[error("png: {0}")]
    Png(String),
}

/// Draws `svg` at `dpi` (SVG's own unit, the CSS pixel, is 1/96 inch) as a PNG.
#[allow(clippy::float_arithmetic)] // drawing coordinates, not money
pub fn png(svg: &str, dpi: f32) -> Result<Vec<u8>, RasterError> {
    let options = usvg::Options {
        fontdb: fonts(),
        ..usvg::Options::default()
    };
    let tree = usvg::Tree::from_str(svg, &options)?;
    let scale = dpi / 96.0;
    // Rounded once, from the drawing's own size (rounding to whole CSS pixels first would
    // be off by a few print dots).
    let dots = |length: f32| {
        let dots = (length * scale).round();
        // In range, so the cast is exact.
        (1.0..=20_000.0).contains(&dots).then_some(dots as u32)
    };
    let (Some(width), Some(height)) = (dots(tree.size().width()), dots(tree.size().height()))
    else {
        return Err(RasterError::Size);
    };
    let mut pixmap = tiny_skia::Pixmap::new(width, height).ok_or(RasterError::Size)?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| RasterError::Png(e.to_string()))
}
