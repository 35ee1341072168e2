//! QR codes of otpauth:// URIs, as PNG and SVG.

use qrcode::{Color, EcLevel, QrCode};
use zeroize::Zeroizing;

use crate::error::ApiError;

/// Pixels per module in the PNG.
const SCALE: usize = 8;
/// The quiet zone around the code, in modules (the standard asks for 4).
const QUIET: usize = 4;

/// The URI as a QR code: (PNG bytes, SVG text). Both contain the secret: they are returned to
/// the user once and never logged.
pub(crate) fn render(uri: &str) -> Result<(Zeroizing<Vec<u8>>, Zeroizing<String>), ApiError> {
    let code = QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::M)
        .map_err(|e| ApiError::Internal(format!("QR code: {e}")))?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .build();
    Ok((png(&code)?, Zeroizing::new(svg)))
}

fn png(code: &QrCode) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET) * SCALE;
    let mut pixels = Zeroizing::new(vec![255u8; side * side]);
    for (i, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (mx, my) = (i % modules + QUIET, i / modules + QUIET);
        for dy in 0..SCALE {
            let row = (my * SCALE + dy) * side;
            let start = row + mx * SCALE;
            if let Some(span) = pixels.get_mut(start..start + SCALE) {
                span.fill(0);
            }
        }
    }
    let mut out = Zeroizing::new(Vec::new());
    {
        let side = u32::try_from(side).map_err(|_| ApiError::Internal("QR too large".into()))?;
        let mut encoder = png::Encoder::new(&mut *out, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .map_err(|e| ApiError::Internal(format!("PNG: {e}")))?;
        writer
            .write_image_data(&pixels)
            .map_err(|e| ApiError::Internal(format!("PNG: {e}")))?;
    }
    Ok(out)
}
