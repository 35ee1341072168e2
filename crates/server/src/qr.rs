//! QR codes of otpauth:// URIs, as PNG and SVG.
//!
//! An enrollment renders one on an async worker, so it has to be cheap: fast_qr builds the
//! matrix (its eight masks scored to pick one, as the standard asks) in about a tenth of the
//! time the qrcode crate took, the PNG is one bit per pixel with fast compression (the size
//! of the 8-bit image, in a twentieth of the time), and the SVG is one path of each row's
//! dark runs. A render went from 2.4 ms to 0.28-0.30 ms (`cargo bench -p server --bench qr`,
//! BENCHMARKS.md point 24); the module is public for that benchmark.
//!
//! What this module allocates is wiped when dropped (the runs, the pixels, the images, each
//! allocated once at its full size);
//! fast_qr's own copy of the URI inside its builder is not, as the qrcode crate's was not.

use std::fmt::Write as _;

use fast_qr::{ECL, Module, QRBuilder, QRCode};
use zeroize::Zeroizing;

use crate::error::ApiError;

/// Pixels per module in the PNG.
const SCALE: usize = 8;
/// The quiet zone around the code, in modules (the standard asks for 4).
const QUIET: usize = 4;
/// The SVG's smallest side in pixels, for a client that shows it at its own size.
const SVG_MIN_SIDE: usize = 240;

/// The URI as a QR code: (PNG bytes, SVG text). Both contain the secret: they are returned to
/// the user once and never logged.
pub fn render(uri: &str) -> Result<(Zeroizing<Vec<u8>>, Zeroizing<String>), ApiError> {
    let mut code = QRBuilder::new(uri.as_bytes())
        .ecl(ECL::M)
        .build()
        .map_err(|e| ApiError::Internal(format!("QR code: {e}")))?;
    let runs = dark_runs(&code);
    // The matrix encodes the secret too.
    code.data.fill(Module(0));
    std::hint::black_box(&code);
    Ok((png(code.size, &runs)?, svg(code.size, &runs)))
}

/// The dark runs of each row, as [row, first column, length], in modules.
fn dark_runs(code: &QRCode) -> Zeroizing<Vec<[usize; 3]>> {
    // Room for the most a row can hold (every other module dark), so that no reallocation
    // leaves a copy behind.
    let mut runs = Zeroizing::new(Vec::with_capacity(code.size * code.size.div_ceil(2)));
    for (y, row) in code
        .data
        .chunks_exact(code.size)
        .take(code.size)
        .enumerate()
    {
        let mut start = None;
        for (x, module) in row.iter().chain([&Module(0)]).enumerate() {
            match (module.value(), start) {
                (true, None) => start = Some(x),
                (false, Some(first)) => {
                    runs.push([y, first, x - first]);
                    start = None;
                }
                _ => {}
            }
        }
    }
    runs
}

/// Grayscale, one bit per pixel (0 dark, 1 light), `SCALE` pixels per module.
fn png(size: usize, runs: &[[usize; 3]]) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let side = (size + 2 * QUIET) * SCALE;
    let stride = side.div_ceil(8);
    let mut pixels = Zeroizing::new(vec![0xffu8; stride * side]);
    // Each module row is drawn into its first pixel row, then copied to the rest of its band.
    for &[y, x, len] in runs {
        let row = (y + QUIET) * SCALE * stride;
        for px in (x + QUIET) * SCALE..(x + len + QUIET) * SCALE {
            if let Some(byte) = pixels.get_mut(row + px / 8) {
                *byte &= !(0x80 >> (px % 8));
            }
        }
    }
    for band in pixels.chunks_exact_mut(SCALE * stride) {
        let (first, rest) = band.split_at_mut(stride);
        for row in rest.chunks_exact_mut(stride) {
            row.copy_from_slice(first);
        }
    }
    // Room for the image even if deflate saved nothing (a filter byte a row, the chunks'
    // headers), so that no reallocation leaves a copy behind.
    let mut out = Zeroizing::new(Vec::with_capacity(pixels.len() + side + 1024));
    {
        let side = u32::try_from(side).map_err(|_| ApiError::Internal("QR too large".into()))?;
        let mut encoder = png::Encoder::new(&mut *out, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::One);
        // As small as the 8-bit image at the default level, in a twentieth of the time.
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder
            .write_header()
            .map_err(|e| ApiError::Internal(format!("PNG: {e}")))?;
        writer
            .write_image_data(&pixels)
            .map_err(|e| ApiError::Internal(format!("PNG: {e}")))?;
    }
    Ok(out)
}

/// A white square with the dark modules as one path, in module units, at least
/// `SVG_MIN_SIDE` pixels wide by default.
fn svg(size: usize, runs: &[[usize; 3]]) -> Zeroizing<String> {
    let modules = size + 2 * QUIET;
    let pixels = SVG_MIN_SIDE.div_ceil(modules) * modules;
    // Room for the whole text (the header under 320 bytes, a run under 24 at up to 185
    // modules a side), so that no partial copy is left behind by a reallocation.
    let mut out = Zeroizing::new(String::with_capacity(320 + 24 * runs.len()));
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        r##"<?xml version="1.0" standalone="yes"?><svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{pixels}" height="{pixels}" viewBox="0 0 {modules} {modules}" shape-rendering="crispEdges"><rect width="{modules}" height="{modules}" fill="#fff"/><path fill="#000" d=""##
    );
    for &[y, x, len] in runs {
        let _ = write!(out, "M{} {}h{len}v1h-{len}z", x + QUIET, y + QUIET);
    }
    out.push_str(r#""/></svg>"#);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    const URI: &str = "otpauth://totp/Tollgate:ada%40example.com?secret=HXDMVJECJJWSRB3HWIZR4IFUGFTMXBOZ&issuer=Tollgate&algorithm=SHA1&digits=6&period=30";

    /// The PNG as 8-bit gray pixels: (side, pixels).
    fn decode_png(bytes: &[u8]) -> (usize, Vec<u8>) {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().unwrap();
        // As the proto says: one bit per pixel in the file.
        assert_eq!(reader.info().bit_depth, png::BitDepth::One);
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!(info.width, info.height);
        assert_eq!(info.color_type, png::ColorType::Grayscale);
        pixels.truncate(info.buffer_size());
        (info.width as usize, pixels)
    }

    /// The modules the SVG's path draws dark, by (column, row) in its own coordinates.
    fn svg_dark(svg: &str) -> std::collections::BTreeSet<(usize, usize)> {
        let d = svg
            .split(r#" d=""#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let mut dark = std::collections::BTreeSet::new();
        for run in d.split('z').filter(|r| !r.is_empty()) {
            let (x, rest) = run.strip_prefix('M').unwrap().split_once(' ').unwrap();
            let (y, rest) = rest.split_once('h').unwrap();
            let (len, back) = rest.split_once("v1h-").unwrap();
            assert_eq!(len, back, "a run closes where it started: {run}");
            let (x, y, len): (usize, usize, usize) =
                (x.parse().unwrap(), y.parse().unwrap(), len.parse().unwrap());
            for column in x..x + len {
                assert!(dark.insert((column, y)), "runs do not overlap");
            }
        }
        dark
    }

    #[test]
    fn the_png_scans_back_to_the_uri() {
        let (png, _) = render(URI).unwrap();
        let (side, pixels) = decode_png(&png);
        let mut image =
            rqrr::PreparedImage::prepare_from_greyscale(side, side, |x, y| pixels[y * side + x]);
        let grids = image.detect_grids();
        assert_eq!(grids.len(), 1);
        assert_eq!(grids[0].decode().unwrap().1, URI);
    }

    #[test]
    fn the_png_and_the_svg_draw_the_same_modules_with_their_quiet_zone() {
        let (png, svg) = render(URI).unwrap();
        let (side, pixels) = decode_png(&png);
        assert_eq!(side % SCALE, 0);
        let modules = side / SCALE;
        // Every pixel of a module has the module's colour, black or white.
        let mut from_png = std::collections::BTreeSet::new();
        for my in 0..modules {
            for mx in 0..modules {
                let colour = pixels[my * SCALE * side + mx * SCALE];
                assert!(colour == 0 || colour == 255, "{colour}");
                for dy in 0..SCALE {
                    for dx in 0..SCALE {
                        assert_eq!(pixels[(my * SCALE + dy) * side + mx * SCALE + dx], colour);
                    }
                }
                if colour == 0 {
                    from_png.insert((mx, my));
                }
            }
        }
        // The quiet zone is white all round, and the code inside it has its finder patterns'
        // dark corners.
        assert!(from_png.iter().all(|&(x, y)| {
            (QUIET..modules - QUIET).contains(&x) && (QUIET..modules - QUIET).contains(&y)
        }));
        for corner in [
            (QUIET, QUIET),
            (modules - QUIET - 1, QUIET),
            (QUIET, modules - QUIET - 1),
        ] {
            assert!(from_png.contains(&corner), "{corner:?}");
        }
        // Both draw the matrix itself, each dark module where it is.
        let code = QRBuilder::new(URI).ecl(ECL::M).build().unwrap();
        assert_eq!(modules, code.size + 2 * QUIET);
        let matrix: std::collections::BTreeSet<_> = (0..code.size)
            .flat_map(|y| (0..code.size).map(move |x| (x, y)))
            .filter(|&(x, y)| code[y][x].value())
            .map(|(x, y)| (x + QUIET, y + QUIET))
            .collect();
        assert_eq!(from_png, matrix);
        assert_eq!(svg_dark(&svg), matrix);
        assert!(svg.contains(&format!(r#"viewBox="0 0 {modules} {modules}""#)));
    }

    #[test]
    fn the_svg_has_a_size_of_its_own() {
        let (_, svg) = render(URI).unwrap();
        let width: usize = svg
            .split(r#" width=""#)
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .parse()
            .unwrap();
        let (_, modules) = svg.split_once(r#"viewBox="0 0 "#).unwrap();
        let modules: usize = modules.split(' ').next().unwrap().parse().unwrap();
        // Whole pixels per module, so that its edges stay crisp.
        assert!(
            width >= SVG_MIN_SIDE && width.is_multiple_of(modules),
            "{width}"
        );
        assert!(svg.contains(&format!(r#"height="{width}""#)));
        assert!(svg.starts_with("<?xml") && svg.ends_with("</svg>"));
    }

    #[test]
    fn a_uri_too_long_for_any_qr_code_is_an_internal_error() {
        let uri = format!("otpauth://totp/x?secret={}", "A".repeat(8_000));
        assert!(matches!(render(&uri), Err(ApiError::Internal(_))));
    }
}
