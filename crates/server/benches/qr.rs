//! The QR code of an enrollment's otpauth:// URI (BeginTotpEnrollment), as PNG and SVG.
//!
//! Run with `cargo bench -p server --bench qr`; the figures are written down in
//! BENCHMARKS.md (point 24). `qr/render` is what an enrollment pays on its async worker:
//! the matrix (its eight masks scored to pick one), the PNG and the SVG.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

/// A URI as long as the server's: a SHA-1 seed of 20 bytes, the default issuer, an email.
const URI: &str = "otpauth://totp/Tollgate:ada.lovelace%40example.com?secret=\
                   HXDMVJECJJWSRB3HWIZR4IFUGFTMXBOZ&issuer=Tollgate&algorithm=SHA1&digits=6&period=30";

fn bench_qr(c: &mut Criterion) {
    let (png, svg) = server::qr::render(URI).unwrap();
    println!("PNG {} bytes, SVG {} bytes", png.len(), svg.len());
    c.bench_function("qr/render", |b| {
        b.iter(|| server::qr::render(black_box(URI)).unwrap());
    });
}

criterion_group!(benches, bench_qr);
criterion_main!(benches);
