//! harmonic_embedding: PyTorch3D's layout and frequencies, output dim, gradients.

use candle_core::{DType, Device, Result, Tensor};
use vnr_ops::embedding::{harmonic_embedding, HarmonicEmbeddingParams};
use vnr_ops::gradcheck::{check_gradients, GradCheckConfig};

#[test]
fn layout_is_dimension_major_sin_then_cos_then_input() -> Result<()> {
    let (a, b) = (0.3f64, -1.1f64);
    let x = Tensor::new(&[[a, b]], &Device::Cpu)?;
    let p = HarmonicEmbeddingParams {
        n_harmonic_functions: 2,
        omega_0: 0.5,
        ..Default::default()
    };
    let out: Vec<Vec<f64>> = harmonic_embedding(&x, &p)?.to_vec2()?;
    let e = [0.5 * a, a, 0.5 * b, b];
    let mut want: Vec<f64> = e.iter().map(|v| v.sin()).collect();
    want.extend(e.iter().map(|v| v.cos()));
    want.extend([a, b]);
    assert_eq!(out[0].len(), p.get_output_dim(2)?);
    for (g, w) in out[0].iter().zip(&want) {
        assert!((g - w).abs() < 1e-15, "{out:?} vs {want:?}");
    }
    Ok(())
}

#[test]
fn frequencies_and_output_dim() -> Result<()> {
    let p = HarmonicEmbeddingParams::default();
    assert_eq!(p.frequencies(), [1., 2., 4., 8., 16., 32.]);
    assert_eq!(p.get_output_dim(3)?, 39);
    let lin = HarmonicEmbeddingParams {
        logspace: false,
        omega_0: 2.0,
        append_input: false,
        ..p
    };
    // torch.linspace(1, 32, 6) * 2 in float32.
    let want = [1.0f32, 7.2, 13.4, 19.6, 25.8, 32.0].map(|v| v * 2.0);
    for (g, w) in lin.frequencies().iter().zip(want) {
        assert!((g - w).abs() <= 1e-5, "{g} vs {w}");
    }
    assert_eq!(lin.get_output_dim(3)?, 36);
    let one = HarmonicEmbeddingParams {
        n_harmonic_functions: 1,
        logspace: false,
        ..p
    };
    assert_eq!(one.frequencies(), [1.0]);
    Ok(())
}

#[test]
fn shapes_dtypes_and_gradients() -> Result<()> {
    let x = Tensor::arange(0f64, 30., &Device::Cpu)?
        .affine(0.07, -1.0)?
        .reshape((2, 5, 3))?;
    let p = HarmonicEmbeddingParams::default();
    assert_eq!(harmonic_embedding(&x, &p)?.dims(), [2, 5, 39]);
    let no_input = HarmonicEmbeddingParams {
        append_input: false,
        n_harmonic_functions: 3,
        ..p
    };
    assert_eq!(harmonic_embedding(&x, &no_input)?.dims(), [2, 5, 18]);
    let only_input = HarmonicEmbeddingParams {
        n_harmonic_functions: 0,
        ..p
    };
    assert_eq!(
        harmonic_embedding(&x, &only_input)?
            .flatten_all()?
            .to_vec1::<f64>()?,
        x.flatten_all()?.to_vec1::<f64>()?
    );
    let h = harmonic_embedding(&x.to_dtype(DType::F16)?, &p)?;
    assert_eq!(h.dtype(), DType::F16);
    check_gradients(
        |v| harmonic_embedding(&v[0], &p),
        std::slice::from_ref(&x),
        &GradCheckConfig::default(),
    )?;
    check_gradients(
        |v| harmonic_embedding(&v[0].t()?, &no_input),
        &[x.get(1)?],
        &GradCheckConfig::default(),
    )?;
    assert!(harmonic_embedding(&Tensor::new(1f64, &Device::Cpu)?, &p).is_err());
    Ok(())
}

#[test]
fn huge_frequency_counts_are_errors_not_aborted_allocations() -> Result<()> {
    let x = Tensor::zeros((4, 3), DType::F32, &Device::Cpu)?;
    for n in [usize::MAX, usize::MAX / 8, 1 << 60] {
        let p = HarmonicEmbeddingParams {
            n_harmonic_functions: n,
            ..Default::default()
        };
        let e = harmonic_embedding(&x, &p).unwrap_err().to_string();
        assert!(e.contains("too large"), "{n}: {e}");
    }
    Ok(())
}
