//! Seeded weight initialisation: a [`VarBuilder`] backend over a [`VarMap`] that draws every new
//! variable from a ChaCha8 generator, following the variable's [`Init`] hint.
//!
//! candle's own initialisers draw from an unseedable generator on the CPU, so two runs of the
//! same training differ from the first step. Models that build their parameters through
//! `vb.get_with_hints(shape, name, init)` keep their distributions (Xavier, PyTorch's
//! defaults, constants) and become reproducible by building from [`seeded_var_builder`]
//! instead of `VarBuilder::from_varmap`: the draws happen in the order the model requests its
//! variables, which a model's constructor fixes.

use std::sync::Mutex;

use candle_core::{bail, DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A [`VarMap`] whose missing variables are drawn from a seeded generator (see the module
/// docs). Variables already in the map are returned as they are, as `VarMap` does.
pub struct SeededVarMap {
    vars: VarMap,
    rng: Mutex<ChaCha8Rng>,
}

impl SeededVarMap {
    /// A backend that adds its variables to `vars` (shared: `VarMap` clones share storage),
    /// drawing them from a ChaCha8 generator seeded with `seed`.
    pub fn new(vars: &VarMap, seed: u64) -> Self {
        Self {
            vars: vars.clone(),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        }
    }
}

/// A [`VarBuilder`] that creates its variables in `vars`, drawn from `seed` (see
/// [`SeededVarMap`]).
pub fn seeded_var_builder(
    vars: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    VarBuilder::from_backend(
        Box::new(SeededVarMap::new(vars, seed)),
        dtype,
        device.clone(),
    )
}

/// One draw of N(0, 1) by the Box–Muller transform (the crate has no distributions
/// dependency; two uniforms per draw keeps it simple and reproducible).
pub fn standard_normal(rng: &mut impl Rng) -> f64 {
    // 1 − u is in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The per-element distribution an [`Init`] describes for a variable of `shape`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Distribution {
    Const(f64),
    Uniform(f64, f64),
    Normal(f64, f64),
}

impl Distribution {
    fn of(init: Init, shape: &Shape) -> Result<Self> {
        Ok(match init {
            Init::Const(v) => Self::Const(v),
            Init::Uniform { lo, up } if lo == up => Self::Const(lo),
            Init::Uniform { lo, up } if lo < up => Self::Uniform(lo, up),
            Init::Uniform { lo, up } => bail!("uniform init: empty range [{lo}, {up})"),
            Init::Randn { mean, stdev } if stdev >= 0.0 => Self::Normal(mean, stdev),
            Init::Randn { stdev, .. } => bail!("normal init: negative deviation {stdev}"),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let std = non_linearity.gain() / (fan.for_shape(shape).max(1) as f64).sqrt();
                match dist {
                    NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * std;
                        Self::Uniform(-bound, bound)
                    }
                    NormalOrUniform::Normal => Self::Normal(0.0, std),
                }
            }
        })
    }

    fn sample(self, rng: &mut impl Rng) -> f64 {
        match self {
            Self::Const(v) => v,
            Self::Uniform(lo, up) => rng.random_range(lo..up),
            Self::Normal(mean, std) => mean + std * standard_normal(rng),
        }
    }
}

/// A tensor of `shape` drawn from `init` with `rng` (constants draw nothing), as `dtype`.
pub fn draw_init(
    init: Init,
    shape: &Shape,
    dtype: DType,
    device: &Device,
    rng: &mut impl Rng,
) -> Result<Tensor> {
    let dist = Distribution::of(init, shape)?;
    if let Distribution::Const(v) = dist {
        return Tensor::full(v, shape.clone(), device)?.to_dtype(dtype);
    }
    let n = shape.elem_count();
    if dtype == DType::F64 {
        let values: Vec<f64> = (0..n).map(|_| dist.sample(rng)).collect();
        return Tensor::from_vec(values, shape.clone(), device);
    }
    let values: Vec<f32> = (0..n).map(|_| dist.sample(rng) as f32).collect();
    Tensor::from_vec(values, shape.clone(), device)?.to_dtype(dtype)
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.vars.data().lock().map_err(|_| {
            candle_core::Error::Msg("seeded init: the VarMap lock is poisoned".into())
        })?;
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                bail!("shape mismatch on {name}: {s:?} <> {:?}", var.shape());
            }
            return Ok(var.as_tensor().clone());
        }
        let value = {
            let mut rng = self.rng.lock().map_err(|_| {
                candle_core::Error::Msg("seeded init: generator lock poisoned".into())
            })?;
            draw_init(h, &s, dtype, dev, &mut *rng)?
        };
        let var = Var::from_tensor(&value)?;
        let tensor = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        bail!("seeded init: `{name}` needs a shape and an init (use `get`)")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.vars
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::init::{FanInOut, NonLinearity};

    fn stats(t: &Tensor) -> (f64, f64) {
        let v: Vec<f64> = t
            .flatten_all()
            .and_then(|t| t.to_dtype(DType::F64))
            .and_then(|t| t.to_vec1())
            .expect("values");
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn draws_follow_each_init_and_repeat_per_seed() -> Result<()> {
        let shape = Shape::from((64, 32, 3, 3));
        let fan_in = 32.0 * 9.0;
        let cases = [
            (Init::Uniform { lo: -0.5, up: 1.5 }, 0.5, 2.0 / 12f64.sqrt()),
            (
                Init::Randn {
                    mean: 1.0,
                    stdev: 0.2,
                },
                1.0,
                0.2,
            ),
            (
                Init::Kaiming {
                    dist: NormalOrUniform::Uniform,
                    fan: FanInOut::FanIn,
                    non_linearity: NonLinearity::ReLU,
                },
                0.0,
                2f64.sqrt() / f64::sqrt(fan_in),
            ),
            (
                Init::Kaiming {
                    dist: NormalOrUniform::Normal,
                    fan: FanInOut::FanIn,
                    non_linearity: NonLinearity::Linear,
                },
                0.0,
                1.0 / f64::sqrt(fan_in),
            ),
        ];
        for (init, mean, std) in cases {
            for dtype in [DType::F32, DType::F64] {
                let draw = |seed| {
                    draw_init(
                        init,
                        &shape,
                        dtype,
                        &Device::Cpu,
                        &mut ChaCha8Rng::seed_from_u64(seed),
                    )
                };
                let t = draw(3)?;
                assert_eq!((t.dims(), t.dtype()), (shape.dims(), dtype));
                let (m, s) = stats(&t);
                assert!((m - mean).abs() < 0.05 * std.max(0.1), "{init:?}: mean {m}");
                assert!((s / std - 1.0).abs() < 0.03, "{init:?}: std {s} vs {std}");
                let same = (&t - draw(3)?)?.abs()?.sum_all()?.to_dtype(DType::F64)?;
                assert_eq!(same.to_scalar::<f64>()?, 0.0, "{init:?}");
                let other = (&t - draw(4)?)?.abs()?.sum_all()?.to_dtype(DType::F64)?;
                assert!(other.to_scalar::<f64>()? > 0.0, "{init:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn constants_draw_nothing_and_bad_ranges_are_errors() -> Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let before = rng.clone();
        let c = draw_init(
            Init::Const(0.25),
            &Shape::from(5),
            DType::F32,
            &Device::Cpu,
            &mut rng,
        )?;
        assert_eq!(c.to_vec1::<f32>()?, vec![0.25; 5]);
        assert_eq!(rng, before, "a constant consumed draws");
        let empty = Init::Uniform { lo: 1.0, up: 0.0 };
        assert!(draw_init(empty, &Shape::from(2), DType::F32, &Device::Cpu, &mut rng).is_err());
        let negative = Init::Randn {
            mean: 0.0,
            stdev: -1.0,
        };
        assert!(draw_init(
            negative,
            &Shape::from(2),
            DType::F32,
            &Device::Cpu,
            &mut rng
        )
        .is_err());
        Ok(())
    }

    #[test]
    fn existing_variables_are_kept_and_new_ones_follow_the_seed() -> Result<()> {
        let vars = VarMap::new();
        let vb = seeded_var_builder(&vars, 5, DType::F32, &Device::Cpu);
        let a = vb.get_with_hints(4, "a", Init::Uniform { lo: 0.0, up: 1.0 })?;
        let again = vb.get_with_hints(4, "a", Init::Const(9.0))?;
        assert_eq!(a.to_vec1::<f32>()?, again.to_vec1::<f32>()?);
        assert!(
            vb.get_with_hints(5, "a", Init::Const(0.0)).is_err(),
            "shape mismatch"
        );
        assert!(vb.contains_tensor("a") && !vb.contains_tensor("b"));
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let want: Vec<f32> = (0..4).map(|_| rng.random_range(0.0..1.0) as f32).collect();
        assert_eq!(a.to_vec1::<f32>()?, want);
        assert_eq!(vars.all_vars().len(), 1);
        Ok(())
    }
}
