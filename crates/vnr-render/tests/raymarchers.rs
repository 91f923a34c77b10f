//! Ray marchers against PyTorch3D's formulas (golden files), finite differences and limits.

use crate::volume_golden::Golden;
use candle_core::{DType, Device, Result, Tensor, Var};
use vnr_ops::gradcheck::{check_gradients, deterministic_values, GradCheckConfig};
use vnr_render::raymarchers::{
    AbsorptionOnlyRaymarcher, EmissionAbsorptionRaymarcher, NerfLastStep, NerfRaymarcher,
    RayMarcher, RenderedRays,
};

const TOL: f64 = 1e-5;

fn check_golden(name: &str, marcher: &dyn RayMarcher) -> Result<()> {
    let g = Golden::load(name);
    let densities = Var::from_tensor(&g.get("densities"))?;
    let features = Var::from_tensor(&g.get("point_features"))?;
    let out = marcher.march(
        densities.as_tensor(),
        features.as_tensor(),
        &g.get("lengths"),
    )?;
    g.check("features", &out.features, TOL, TOL);
    g.check("opacity", &out.opacity, TOL, TOL);
    g.check("depth", &out.depth, TOL, TOL);
    g.check("weights", &out.weights, TOL, TOL);
    let mut loss = Tensor::zeros((), DType::F32, &Device::Cpu)?;
    for (key, t) in [
        ("features", &out.features),
        ("opacity", &out.opacity),
        ("depth", &out.depth),
        ("weights", &out.weights),
    ] {
        loss = (loss + (t * g.get(&format!("grad_{key}")))?.sum_all()?)?;
    }
    let grads = loss.backward()?;
    g.check(
        "grad_densities_in",
        grads.get(densities.as_tensor()).expect("density gradient"),
        1e-4,
        1e-4,
    );
    let zeros = features.as_tensor().zeros_like()?;
    g.check(
        "grad_point_features",
        grads.get(features.as_tensor()).unwrap_or(&zeros),
        TOL,
        TOL,
    );
    Ok(())
}

#[test]
fn golden_emission_absorption() -> Result<()> {
    check_golden("march_ea_s1", &EmissionAbsorptionRaymarcher::default())
}

#[test]
fn golden_emission_absorption_thick_surface_and_eps() -> Result<()> {
    let m = EmissionAbsorptionRaymarcher {
        surface_thickness: 2,
        eps: 1e-3,
        background: None,
    };
    check_golden("march_ea_s2_eps", &m)
}

#[test]
fn golden_emission_absorption_background() -> Result<()> {
    let m = EmissionAbsorptionRaymarcher {
        background: Some(vec![0.2, 0.5, 1.0]),
        ..Default::default()
    };
    check_golden("march_ea_background", &m)
}

#[test]
fn golden_absorption_only() -> Result<()> {
    check_golden("march_ao", &AbsorptionOnlyRaymarcher)
}

#[test]
fn golden_nerf_far_last_step() -> Result<()> {
    check_golden("march_nerf_far", &NerfRaymarcher::default())
}

#[test]
fn golden_nerf_bin_width_last_step_with_background() -> Result<()> {
    let m = NerfRaymarcher {
        last_step: NerfLastStep::PreviousStep,
        background: Some(vec![1.0; 3]),
        ..Default::default()
    };
    check_golden("march_nerf_bin", &m)
}

/// Inputs of `rays` rays of `p` samples in f64: densities in `[lo, hi)`, features, increasing
/// lengths.
fn inputs(rays: usize, p: usize, lo: f64, hi: f64) -> Result<[Tensor; 3]> {
    let dev = Device::Cpu;
    let d = Tensor::from_vec(
        deterministic_values(rays * p, 21, lo, hi),
        (rays, p, 1),
        &dev,
    )?;
    let f = Tensor::from_vec(
        deterministic_values(rays * p * 2, 22, -1.0, 1.0),
        (rays, p, 2),
        &dev,
    )?;
    let steps = Tensor::from_vec(
        deterministic_values(rays * p, 23, 0.1, 0.5),
        (rays, p),
        &dev,
    )?;
    let t = (vnr_ops::cumulative::cumsum(&steps, 1, false)? + 1.0)?;
    Ok([d, f, t])
}

fn all_outputs(r: RenderedRays) -> Result<Tensor> {
    Tensor::cat(
        &[
            &r.features.flatten_all()?,
            &r.opacity.flatten_all()?,
            &r.depth.flatten_all()?,
            &r.weights.flatten_all()?,
        ],
        0,
    )
}

#[test]
fn gradients_match_finite_differences() -> Result<()> {
    // Densities, features and ray lengths.
    let cfg = GradCheckConfig {
        atol: 1e-6,
        rtol: 1e-4,
        ..Default::default()
    };
    let [d, f, t] = inputs(3, 5, 0.05, 0.95)?;
    let marchers: Vec<Box<dyn RayMarcher>> = vec![
        Box::new(EmissionAbsorptionRaymarcher::default()),
        Box::new(EmissionAbsorptionRaymarcher {
            surface_thickness: 3,
            eps: 1e-2,
            background: Some(vec![0.3, 0.7]),
        }),
        Box::new(AbsorptionOnlyRaymarcher),
    ];
    for m in &marchers {
        check_gradients(
            |x| all_outputs(m.march(&x[0], &x[1], &x[2])?),
            &[d.clone(), f.clone(), t.clone()],
            &cfg,
        )?;
    }
    // NeRF: σ ≥ 0 over finite steps (the 1e10 step makes the last sample's gradient vanish).
    let [sigma, f, t] = inputs(3, 5, 0.0, 3.0)?;
    for last_step in [
        NerfLastStep::PreviousStep,
        NerfLastStep::Constant(0.5),
        NerfLastStep::default(),
    ] {
        let m = NerfRaymarcher {
            last_step,
            ..Default::default()
        };
        check_gradients(
            |x| all_outputs(m.march(&x[0], &x[1], &x[2])?),
            &[sigma.clone(), f.clone(), t.clone()],
            &cfg,
        )?;
    }
    Ok(())
}

/// The marchers under test, each with its composed (tensor-op) twin.
type Both = (
    Box<dyn RayMarcher>,
    Box<dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<RenderedRays>>,
);

fn marchers_with_references() -> Vec<Both> {
    let ea = EmissionAbsorptionRaymarcher {
        surface_thickness: 2,
        eps: 1e-3,
        background: Some(vec![0.5, 0.1]),
    };
    let nerf = NerfRaymarcher {
        last_step: NerfLastStep::PreviousStep,
        ..Default::default()
    };
    let far = NerfRaymarcher::default();
    // A thickness beyond the ray (usize::MAX overflowed an index once): no absorption at all.
    let thick = EmissionAbsorptionRaymarcher {
        surface_thickness: usize::MAX,
        ..Default::default()
    };
    let thick_ref = thick.clone();
    let ea_ref = ea.clone();
    let nerf_ref = nerf.clone();
    let far_ref = far.clone();
    vec![
        (
            Box::new(ea),
            Box::new(move |d: &Tensor, f: &Tensor, t: &Tensor| ea_ref.march_composed(d, f, t)),
        ),
        (
            Box::new(AbsorptionOnlyRaymarcher),
            Box::new(|d: &Tensor, f: &Tensor, t: &Tensor| {
                AbsorptionOnlyRaymarcher.march_composed(d, f, t)
            }),
        ),
        (
            Box::new(nerf),
            Box::new(move |d: &Tensor, f: &Tensor, t: &Tensor| nerf_ref.march_composed(d, f, t)),
        ),
        (
            Box::new(far),
            Box::new(move |d: &Tensor, f: &Tensor, t: &Tensor| far_ref.march_composed(d, f, t)),
        ),
        (
            Box::new(thick),
            Box::new(move |d: &Tensor, f: &Tensor, t: &Tensor| thick_ref.march_composed(d, f, t)),
        ),
    ]
}

#[test]
fn fused_kernels_match_the_composed_ops_with_gradients() -> Result<()> {
    let [d, f, t] = inputs(8, 33, 0.0, 0.9)?;
    let (d, f, t) = (
        d.to_dtype(DType::F32)?,
        f.to_dtype(DType::F32)?,
        t.to_dtype(DType::F32)?,
    );
    let r = Tensor::from_vec(
        deterministic_values(8 * (2 + 2 + 33), 24, -1.0, 1.0),
        (8, 37),
        &Device::Cpu,
    )?
    .to_dtype(DType::F32)?;
    for (fused, composed) in marchers_with_references() {
        let run = |march: &dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<RenderedRays>| -> Result<Vec<Tensor>> {
            let (dv, fv, tv) = (Var::from_tensor(&d)?, Var::from_tensor(&f)?, Var::from_tensor(&t)?);
            let out = march(dv.as_tensor(), fv.as_tensor(), tv.as_tensor())?;
            let flat = Tensor::cat(&[&out.features, &out.opacity, &out.depth, &out.weights], 1)?;
            let width = flat.dim(1)?;
            let grads = (&flat * r.narrow(1, 0, width)?)?.sum_all()?.backward()?;
            let zeros = |v: &Var| v.as_tensor().zeros_like();
            let g = |v: &Var| -> Result<Tensor> { grads.get(v.as_tensor()).cloned().map_or_else(|| zeros(v), Ok) };
            Ok(vec![flat, g(&dv)?, g(&fv)?, g(&tv)?])
        };
        let a = run(&|d: &Tensor, f: &Tensor, t: &Tensor| fused.march(d, f, t))?;
        let b = run(&*composed)?;
        for (what, x, y) in [
            ("outputs", &a[0], &b[0]),
            ("grad d", &a[1], &b[1]),
            ("grad f", &a[2], &b[2]),
            ("grad t", &a[3], &b[3]),
        ] {
            let scale = y.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
            let diff = (x - y)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(
                diff <= 2e-5 * scale,
                "{what}: fused and composed differ by {diff} (scale {scale})"
            );
        }
    }
    Ok(())
}

/// The fused ops take their inputs without reshaping them: a ray batch of several axes and
/// strided (transposed) features must give the outputs and gradients of the flat batch.
#[test]
fn fused_marchers_keep_multi_axis_batches_and_strided_inputs() -> Result<()> {
    let [d, f, t] = inputs(6, 9, 0.0, 0.9)?;
    // Features stored [6, 2, 9] and viewed as [6, 9, 2]: not contiguous.
    let f_strided = f.transpose(1, 2)?.contiguous()?.transpose(1, 2)?;
    assert!(!f_strided.is_contiguous());
    for (marcher, _) in marchers_with_references() {
        let run = |d: &Tensor, f: &Tensor, t: &Tensor| -> Result<[Tensor; 3]> {
            let (dv, fv) = (Var::from_tensor(d)?, Var::from_tensor(f)?);
            let out = marcher.march(dv.as_tensor(), fv.as_tensor(), t)?;
            let flat = all_outputs(out)?;
            let grads = flat.sqr()?.sum_all()?.backward()?;
            let grad = |v: &Var| -> Result<Tensor> {
                match grads.get(v.as_tensor()) {
                    Some(g) => g.flatten_all(),
                    None => v.as_tensor().zeros_like()?.flatten_all(),
                }
            };
            Ok([flat, grad(&dv)?, grad(&fv)?])
        };
        let flat = run(&d, &f_strided, &t)?;
        let batched = run(
            &d.reshape((2, 3, 9, 1))?,
            &f.reshape((2, 3, 9, 2))?,
            &t.reshape((2, 3, 9))?,
        )?;
        for (what, a, b) in [
            ("outputs", &flat[0], &batched[0]),
            ("grad d", &flat[1], &batched[1]),
            ("grad f", &flat[2], &batched[2]),
        ] {
            let diff = (a - b)?.abs()?.max(0)?.to_scalar::<f64>()?;
            assert!(diff <= 1e-12, "{what}: the [2, 3] batch differs by {diff}");
        }
    }
    Ok(())
}

#[test]
fn an_opaque_sample_takes_all_the_weight() -> Result<()> {
    let dev = Device::Cpu;
    let d = Tensor::new(&[[[0f32], [1.0], [0.5]]], &dev)?;
    let f = Tensor::new(&[[[1f32, 0.], [0.2, 0.8], [0., 1.]]], &dev)?;
    let t = Tensor::new(&[[1f32, 2., 3.]], &dev)?;
    let r = EmissionAbsorptionRaymarcher::default().march(&d, &f, &t)?;
    let close = |a: Vec<f32>, b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
    assert!(close(r.features.flatten_all()?.to_vec1()?, &[0.2, 0.8]));
    assert!(close(r.weights.flatten_all()?.to_vec1()?, &[0.0, 1.0, 0.0]));
    assert!(close(r.opacity.flatten_all()?.to_vec1()?, &[1.0]));
    assert!(close(r.depth.flatten_all()?.to_vec1()?, &[2.0]));
    // Absorption only: the weights are the light absorbed at each sample and sum to the opacity.
    let ao = AbsorptionOnlyRaymarcher.march(
        &Tensor::new(&[[[0.25f32], [0.5], [0.5]]], &dev)?,
        &f,
        &t,
    )?;
    assert!(close(
        ao.weights.flatten_all()?.to_vec1()?,
        &[0.25, 0.375, 0.1875]
    ));
    assert!(close(ao.opacity.flatten_all()?.to_vec1()?, &[0.8125]));
    assert_eq!(ao.features.dims(), &[1, 0]);
    Ok(())
}

#[test]
fn nerf_empty_space_shows_the_background() -> Result<()> {
    let dev = Device::Cpu;
    let sigma = Tensor::zeros((2, 4, 1), DType::F32, &dev)?;
    let f = Tensor::ones((2, 4, 3), DType::F32, &dev)?;
    let t = Tensor::new(&[[1f32, 2., 3., 4.], [1., 1.5, 2., 2.5]], &dev)?;
    let m = NerfRaymarcher {
        background: Some(vec![0.1, 0.2, 0.3]),
        ..Default::default()
    };
    let r = m.march(&sigma, &f, &t)?;
    assert_eq!(r.features.to_vec2::<f32>()?, vec![vec![0.1, 0.2, 0.3]; 2]);
    assert_eq!(r.opacity.flatten_all()?.to_vec1::<f32>()?, vec![0.0, 0.0]);
    let steps = NerfRaymarcher {
        last_step: NerfLastStep::PreviousStep,
        ..Default::default()
    }
    .steps(&t)?;
    assert_eq!(steps.to_vec2::<f32>()?, vec![vec![1.0; 4], vec![0.5; 4]]);
    Ok(())
}

#[test]
fn bad_inputs_are_errors() -> Result<()> {
    let dev = Device::Cpu;
    let d = Tensor::full(0.5f32, (2, 4, 1), &dev)?;
    let f = Tensor::ones((2, 4, 3), DType::F32, &dev)?;
    let t = Tensor::ones((2, 4), DType::F32, &dev)?;
    let ea = EmissionAbsorptionRaymarcher::default();
    assert!(ea
        .march(&d, &f, &Tensor::ones((2, 5), DType::F32, &dev)?)
        .is_err());
    assert!(ea
        .march(&d, &Tensor::ones((2, 3, 3), DType::F32, &dev)?, &t)
        .is_err());
    assert!(ea
        .march(&Tensor::full(1.5f32, (2, 4, 1), &dev)?, &f, &t)
        .is_err());
    assert!(ea
        .march(
            &d.narrow(1, 0, 0)?,
            &f.narrow(1, 0, 0)?,
            &t.narrow(1, 0, 0)?
        )
        .is_err());
    let bg = EmissionAbsorptionRaymarcher {
        background: Some(vec![1.0, 2.0]),
        ..Default::default()
    };
    assert!(bg.march(&d, &f, &t).is_err());
    let nerf = NerfRaymarcher::default();
    assert!(nerf
        .march(&Tensor::full(-1f32, (2, 4, 1), &dev)?, &f, &t)
        .is_err());
    let bin = NerfRaymarcher {
        last_step: NerfLastStep::PreviousStep,
        ..Default::default()
    };
    assert!(bin
        .march(
            &d.narrow(1, 0, 1)?,
            &f.narrow(1, 0, 1)?,
            &t.narrow(1, 0, 1)?
        )
        .is_err());
    Ok(())
}
