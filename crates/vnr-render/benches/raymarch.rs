//! Forward + backward timings of the ray marchers on 64k rays × 128 samples with 3 feature
//! channels, to compare with `tools/bench/raymarch_peer.py` (the same formulas in PyTorch).
//!
//! `cargo bench -p vnr-render --bench raymarch [-- FILTER]`
//!
//! Each iteration marches, then backpropagates `sum([features, opacity, depth] · r)` for a fixed
//! `r` into the densities and features.

use candle_core::{Device, Result, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use std::hint::black_box;
use vnr_render::raymarchers::{EmissionAbsorptionRaymarcher, NerfRaymarcher, RayMarcher};

const RAYS: usize = 65_536;
const SAMPLES: usize = 128;
const FEATURES: usize = 3;

/// Deterministic values in [-1, 1) times `scale` plus `shift` (same sequence as the peer's
/// `filled`).
fn filled(dims: &[usize], scale: f32, shift: f32) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|i| (((i * 7919) % 2001) as f32 / 1000.0 - 1.0) * scale + shift)
        .collect();
    Tensor::from_vec(values, dims, &Device::Cpu)
}

/// Sample depths `2 + 0.01 k` on every ray, `[RAYS, SAMPLES]`.
fn lengths() -> Result<Tensor> {
    let row = Tensor::arange(0f32, SAMPLES as f32, &Device::Cpu)?.affine(0.01, 2.0)?;
    row.unsqueeze(0)?
        .broadcast_as((RAYS, SAMPLES))?
        .contiguous()
}

fn forward_backward(
    marcher: &dyn RayMarcher,
    d: &Var,
    f: &Var,
    t: &Tensor,
    r: &Tensor,
) -> Result<()> {
    let out = marcher.march(d.as_tensor(), f.as_tensor(), t)?;
    let y = Tensor::cat(&[&out.features, &out.opacity, &out.depth], 1)?;
    black_box(y.mul(r)?.sum_all()?.backward()?);
    Ok(())
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("raymarch_fwd_bwd_64k_x128_f3");
    // One iteration per sample: an iteration takes a large fraction of a second.
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    let ea = EmissionAbsorptionRaymarcher::default();
    let nerf = NerfRaymarcher::default();
    // EA opacities in [0, 1); NeRF densities σ in [0, 4).
    let cases: [(&str, &dyn RayMarcher, f32, f32); 2] = [
        ("emission_absorption", &ea, 0.5, 0.5),
        ("nerf", &nerf, 2.0, 2.0),
    ];
    for (name, marcher, scale, shift) in cases {
        let setup = || -> Result<(Var, Var, Tensor, Tensor)> {
            let d = Var::from_tensor(&filled(&[RAYS, SAMPLES, 1], scale, shift)?)?;
            let f = Var::from_tensor(&filled(&[RAYS, SAMPLES, FEATURES], 1.0, 0.0)?)?;
            let r = filled(&[RAYS, FEATURES + 2], 1.0, 0.0)?;
            Ok((d, f, lengths()?, r))
        };
        let (d, f, t, r) = setup().unwrap_or_else(|e| panic!("{name}: setup failed: {e}"));
        group.bench_function(name, |b| {
            b.iter(|| {
                if let Err(e) = forward_backward(marcher, &d, &f, &t, &r) {
                    panic!("{name}: {e}");
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
