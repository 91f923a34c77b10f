//! ea_raymarch: known values, fused == tensor-op reference (values and gradients), finite
//! differences, errors.

use candle_core::{DType, Device, Result, Tensor, Var};
use vnr_ops::gradcheck::deterministic_values as values;
use vnr_ops::gradcheck::{check_gradients, GradCheckConfig};
use vnr_ops::raymarch::{ea_raymarch, reference, EaRaymarchParams};

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{what}: index {i}: {a} vs {b}"
        );
    }
}

fn params(surface_thickness: usize) -> EaRaymarchParams {
    EaRaymarchParams {
        surface_thickness,
        ..Default::default()
    }
}

#[test]
fn known_single_ray() -> Result<()> {
    let d = Tensor::new(&[[0.5f64], [0.5], [1.0]], &Device::Cpu)?;
    let f = Tensor::new(&[[1f64, 10.], [2., 20.], [4., 40.]], &Device::Cpu)?;
    let p = EaRaymarchParams {
        surface_thickness: 1,
        eps: 0.0,
    };
    // Absorption [1, 0.5, 0.25], weights [0.5, 0.25, 0.25], opacity 1 - 0.5·0.5·0 = 1.
    let out: Vec<f64> = ea_raymarch(&d, &f, &p)?.to_vec1()?;
    assert_close(
        &out,
        &[0.5 + 0.5 + 1.0, 5.0 + 5.0 + 10.0, 1.0],
        1e-15,
        "s=1",
    );
    // Thickness 2: absorption [1, 1, 0.5], weights [0.5, 0.5, 0.5].
    let p2 = EaRaymarchParams {
        surface_thickness: 2,
        ..p
    };
    let out: Vec<f64> = ea_raymarch(&d, &f, &p2)?.to_vec1()?;
    assert_close(&out, &[0.5 + 1.0 + 2.0, 35.0, 1.0], 1e-15, "s=2");
    // Thickness beyond the ray: absorption is 1 everywhere.
    let p9 = EaRaymarchParams {
        surface_thickness: 9,
        ..p
    };
    let out: Vec<f64> = ea_raymarch(&d, &f, &p9)?.to_vec1()?;
    assert_close(&out, &[0.5 + 1.0 + 4.0, 55.0, 1.0], 1e-15, "s=9");
    Ok(())
}

#[test]
fn fused_matches_reference_values_and_gradients() -> Result<()> {
    let (rays, points, features) = ((2usize, 3usize), 37usize, 4usize);
    let n = rays.0 * rays.1 * points;
    let mut dens = values(n, 1, 0.0, 1.0);
    // Exact 0 and 1 densities are valid and must not break the division-free backward.
    dens[3] = 0.0;
    dens[10] = 1.0;
    dens[40] = 1.0;
    dens[41] = 1.0;
    dens[77] = 0.0;
    let feats = values(n * features, 2, -1.0, 1.0);
    let shape_d = (rays.0, rays.1, points, 1);
    let shape_f = (rays.0, rays.1, points, features);
    // Thicknesses beyond the ray (usize::MAX overflowed an index once) act as the ray length.
    for s in [1usize, 2, 3, 40, usize::MAX] {
        let p = params(s);
        let mut results = Vec::new();
        for fused in [true, false] {
            let vd = Var::from_vec(dens.clone(), shape_d, &Device::Cpu)?;
            let vf = Var::from_vec(feats.clone(), shape_f, &Device::Cpu)?;
            let out = if fused {
                ea_raymarch(vd.as_tensor(), vf.as_tensor(), &p)?
            } else {
                reference::ea_raymarch(vd.as_tensor(), vf.as_tensor(), &p)?
            };
            assert_eq!(out.dims(), [rays.0, rays.1, features + 1]);
            let weights = Tensor::from_vec(
                values(out.elem_count(), 3, -1.0, 1.0),
                out.shape(),
                &Device::Cpu,
            )?;
            let grads = (&out * weights)?.sum_all()?.backward()?;
            let gd: Vec<f64> = grads
                .get(vd.as_tensor())
                .expect("density grad")
                .flatten_all()?
                .to_vec1()?;
            let gf: Vec<f64> = grads
                .get(vf.as_tensor())
                .expect("feature grad")
                .flatten_all()?
                .to_vec1()?;
            results.push((out.flatten_all()?.to_vec1::<f64>()?, gd, gf));
        }
        assert_close(&results[0].0, &results[1].0, 1e-12, "forward");
        assert_close(&results[0].1, &results[1].1, 1e-10, "density gradient");
        assert_close(&results[0].2, &results[1].2, 1e-12, "feature gradient");
    }
    Ok(())
}

#[test]
fn gradients_match_finite_differences() -> Result<()> {
    // Densities kept away from 0 and 1 so the finite-difference steps stay in bounds.
    let d = Tensor::from_vec(values(2 * 3 * 5, 4, 0.05, 0.95), (2, 3, 5, 1), &Device::Cpu)?;
    let f = Tensor::from_vec(
        values(2 * 3 * 5 * 3, 5, -1.0, 1.0),
        (2, 3, 5, 3),
        &Device::Cpu,
    )?;
    for s in [1usize, 2] {
        let p = params(s);
        check_gradients(
            |v| ea_raymarch(&v[0], &v[1], &p),
            &[d.clone(), f.clone()],
            &GradCheckConfig::default(),
        )?;
    }
    // Non-contiguous features (a transposed copy transposed back) and a single ray [P, 1].
    let ft = f.get(0)?.get(0)?.t()?.contiguous()?;
    check_gradients(
        |v| ea_raymarch(&v[0], &v[1].t()?, &params(2)),
        &[d.get(1)?.get(2)?, ft],
        &GradCheckConfig::default(),
    )?;
    Ok(())
}

#[test]
fn dtypes() -> Result<()> {
    let d = Tensor::from_vec(values(6, 6, 0.0, 1.0), (2, 3, 1), &Device::Cpu)?;
    let f = Tensor::from_vec(values(12, 7, -1.0, 1.0), (2, 3, 2), &Device::Cpu)?;
    let want: Vec<f64> = ea_raymarch(&d, &f, &params(1))?.flatten_all()?.to_vec1()?;
    let got = ea_raymarch(
        &d.to_dtype(DType::F32)?,
        &f.to_dtype(DType::F32)?,
        &params(1),
    )?;
    assert_eq!(got.dtype(), DType::F32);
    assert_close(
        &got.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?,
        &want,
        1e-6,
        "f32",
    );
    let got = ea_raymarch(
        &d.to_dtype(DType::BF16)?,
        &f.to_dtype(DType::BF16)?,
        &params(1),
    )?;
    assert_eq!(got.dtype(), DType::BF16);
    Ok(())
}

#[test]
fn bad_inputs_are_errors() -> Result<()> {
    let dev = Device::Cpu;
    let f = Tensor::zeros((2, 4, 3), DType::F32, &dev)?;
    let p = EaRaymarchParams::default();
    let above = Tensor::new(&[[[0.5f32], [1.01], [0.], [0.]], [[0.; 1]; 4]], &dev)?;
    let err = ea_raymarch(&above, &f, &p).unwrap_err().to_string();
    assert!(err.contains("outside [0, 1]"), "{err}");
    let below = above.affine(-1.0, 0.0)?;
    assert!(ea_raymarch(&below, &f, &p).is_err());
    let nan = Tensor::new(&[[[f32::NAN], [0.], [0.], [0.]], [[0.; 1]; 4]], &dev)?;
    assert!(ea_raymarch(&nan, &f, &p).is_err());
    let ok = Tensor::zeros((2, 4, 1), DType::F32, &dev)?;
    assert!(ea_raymarch(&ok, &f, &p).is_ok());
    // Last dim of densities ≠ 1, mismatched rays, mismatched points, rank 1.
    assert!(ea_raymarch(&Tensor::zeros((2, 4, 2), DType::F32, &dev)?, &f, &p).is_err());
    assert!(ea_raymarch(&Tensor::zeros((3, 4, 1), DType::F32, &dev)?, &f, &p).is_err());
    assert!(ea_raymarch(&Tensor::zeros((2, 5, 1), DType::F32, &dev)?, &f, &p).is_err());
    assert!(ea_raymarch(&Tensor::zeros(1, DType::F32, &dev)?, &f, &p).is_err());
    assert!(ea_raymarch(&ok, &f.to_dtype(DType::F64)?, &p).is_err());
    let zero_thickness = EaRaymarchParams {
        surface_thickness: 0,
        ..p
    };
    assert!(ea_raymarch(&ok, &f, &zero_thickness).is_err());
    // No features: only the opacity.
    let none = Tensor::zeros((2, 4, 0), DType::F32, &dev)?;
    let half = Tensor::full(0.5f32, (2, 4, 1), &dev)?;
    let out: Vec<Vec<f32>> = ea_raymarch(&half, &none, &p)?.to_vec2()?;
    assert_eq!(out, [[1.0 - 0.0625], [1.0 - 0.0625]]);
    Ok(())
}
