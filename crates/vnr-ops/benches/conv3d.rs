//! Forward + backward timings of the conv3d / conv_transpose3d / max_pool3d layers (and the
//! fused bias + LeakyReLU + max pool) that ConvDeconv and RenderNet run, to compare with
//! `tools/bench/conv3d_peer.py` (PyTorch).
//!
//! `cargo bench -p vnr-ops --bench conv3d [-- FILTER]`

use candle_core::{DType, Device, Result, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use vnr_ops::conv::{conv3d, conv_transpose3d, Conv3dParams, ConvTranspose3dParams};
use vnr_ops::pool::{bias_leaky_relu_max_pool3d, max_pool3d, Pool3dParams};

/// Runs one layer on an input and an optional weight.
type LayerFn = Box<dyn Fn(&Tensor, Option<&Tensor>) -> Result<Tensor>>;

/// One benchmarked layer: its name, input and parameter shapes, and how to run it.
struct Case {
    name: &'static str,
    input: Vec<usize>,
    weight: Option<Vec<usize>>,
    run: LayerFn,
}

fn conv(
    name: &'static str,
    input: [usize; 5],
    weight: [usize; 5],
    stride: usize,
    pad: usize,
) -> Case {
    let p = Conv3dParams {
        stride: [stride; 3],
        ..Conv3dParams::symmetric(pad)
    };
    Case {
        name,
        input: input.to_vec(),
        weight: Some(weight.to_vec()),
        run: Box::new(move |x, w| match w {
            Some(w) => conv3d(x, w, None, &p),
            None => candle_core::bail!("conv3d needs a weight"),
        }),
    }
}

fn cases() -> Vec<Case> {
    let convt = ConvTranspose3dParams {
        stride: [2; 3],
        padding: [1; 3],
        ..Default::default()
    };
    vec![
        // ConvDeconv encoder, first layers at 64³ and 128³ input.
        conv(
            "convdeconv_1to64_k4s2p1_64",
            [1, 1, 64, 64, 64],
            [64, 1, 4, 4, 4],
            2,
            1,
        ),
        conv(
            "convdeconv_1to64_k4s2p1_128",
            [1, 1, 128, 128, 128],
            [64, 1, 4, 4, 4],
            2,
            1,
        ),
        conv(
            "convdeconv_64to64_1x1_32",
            [1, 64, 32, 32, 32],
            [64, 64, 1, 1, 1],
            1,
            0,
        ),
        conv(
            "convdeconv_64to64_1x1_64",
            [1, 64, 64, 64, 64],
            [64, 64, 1, 1, 1],
            1,
            0,
        ),
        Case {
            name: "convdeconv_maxpool_3s1p1_32",
            input: vec![1, 64, 32, 32, 32],
            weight: None,
            run: Box::new(|x, _| max_pool3d(x, &Pool3dParams::cubic(3, 1, 1))),
        },
        Case {
            name: "convdeconv_maxpool_3s1p1_64",
            input: vec![1, 64, 64, 64, 64],
            weight: None,
            run: Box::new(|x, _| max_pool3d(x, &Pool3dParams::cubic(3, 1, 1))),
        },
        // ConvDeconv's encoder after its k4 s2 conv: bias, LeakyReLU(0.01) and MaxPool3d(3, 1, 1)
        // as one fused op; the "weight" is the bias [64].
        Case {
            name: "convdeconv_bias_leaky_maxpool_32",
            input: vec![1, 64, 32, 32, 32],
            weight: Some(vec![64]),
            run: Box::new(|x, b| match b {
                Some(b) => bias_leaky_relu_max_pool3d(x, b, 0.01, &Pool3dParams::cubic(3, 1, 1)),
                None => candle_core::bail!("the fused pool needs a bias"),
            }),
        },
        // RenderNet residual block conv: 32 channels, 3³, on 64×64×32.
        conv(
            "rendernet_res_32ch_k3",
            [1, 32, 64, 64, 32],
            [32, 32, 3, 3, 3],
            1,
            1,
        ),
        // The same block in RenderNet's small config (`RenderNetConfig::small()`): 8 channels
        // on 32×32×16.
        conv(
            "rendernet_small_res_8ch_k3",
            [1, 8, 32, 32, 16],
            [8, 8, 3, 3, 3],
            1,
            1,
        ),
        // Large-channel 4³ stride-2 encoder layer and its decoder twin.
        conv(
            "large_256to512_k4s2p1_16",
            [1, 256, 16, 16, 16],
            [512, 256, 4, 4, 4],
            2,
            1,
        ),
        Case {
            name: "large_convT_512to256_k4s2p1_8",
            input: vec![1, 512, 8, 8, 8],
            weight: Some(vec![512, 256, 4, 4, 4]),
            run: Box::new(move |x, w| match w {
                Some(w) => conv_transpose3d(x, w, None, &convt),
                None => candle_core::bail!("conv_transpose3d needs a weight"),
            }),
        },
    ]
}

/// Deterministic values in [-1, 1), so runs are comparable.
fn filled(dims: &[usize]) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    Tensor::from_vec(values, dims, &Device::Cpu)
}

/// Forward, then backward of `sum(y · r)` for a fixed `r`.
fn forward_backward(case: &Case, x: &Var, w: Option<&Var>, r: &Tensor) -> Result<()> {
    let y = (case.run)(x.as_tensor(), w.map(Var::as_tensor))?;
    let grads = y.mul(r)?.sum_all()?.backward()?;
    black_box(grads);
    Ok(())
}

fn bench(c: &mut Criterion) {
    // As vnr's programs run: candle's element-wise ops on the calling thread, freed tensors kept.
    vnr_ops::configure_process_for_training();
    let mut group = c.benchmark_group("conv3d_fwd_bwd");
    group.sample_size(10);
    for case in cases() {
        let setup = || -> Result<(Var, Option<Var>, Tensor)> {
            let x = Var::from_tensor(&filled(&case.input)?)?;
            let w = match &case.weight {
                Some(dims) => Some(Var::from_tensor(&filled(dims)?.affine(0.05, 0.0)?)?),
                None => None,
            };
            let y = (case.run)(x.as_tensor(), w.as_ref().map(Var::as_tensor))?;
            let r = filled(y.dims())?.to_dtype(DType::F32)?;
            Ok((x, w, r))
        };
        let (x, w, r) = match setup() {
            Ok(v) => v,
            Err(e) => panic!("{}: setup failed: {e}", case.name),
        };
        group.bench_function(case.name, |b| {
            b.iter(|| {
                if let Err(e) = forward_backward(&case, &x, w.as_ref(), &r) {
                    panic!("{}: {e}", case.name);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
