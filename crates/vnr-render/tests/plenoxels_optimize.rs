//! Plenoxel optimisation: total variation, learning-rate schedule, resampling and pruning,
//! checkpoint export, a step's cost following the rows it touches, and a short deterministic
//! fit of a toy scene.

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vnr_render::multiview::{orbit_camera_to_world, Intrinsics, MultiViewDataset, RayBatch, Split};
use vnr_render::plenoxels::optimize::{evaluate_psnr, render_view};
use vnr_render::plenoxels::sh::num_bases;
use vnr_render::plenoxels::{
    fit, LrSchedule, OptimizeConfig, PlenoxelError, PlenoxelGrid, PlenoxelOptimizer, PruneOptions,
    RenderOptions, TvTarget,
};

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// A 3×4×5 grid with every third voxel empty and random data.
fn tiny_grid(rng: &mut ChaCha8Rng) -> PlenoxelGrid {
    let dims = [3, 4, 5];
    let mut links = Vec::new();
    let mut n = 0;
    for i in 0..60 {
        if i % 3 == 1 {
            links.push(-1);
        } else {
            links.push(n);
            n += 1;
        }
    }
    let n = n as usize;
    let density: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..3.0)).collect();
    let sh: Vec<f32> = (0..n * 12).map(|_| rng.random_range(-1.0..1.0)).collect();
    PlenoxelGrid::new(
        dims,
        links,
        Tensor::from_vec(density, (n, 1), &Device::Cpu).unwrap(),
        Tensor::from_vec(sh, (n, 12), &Device::Cpu).unwrap(),
        [1.0; 3],
        [0.0; 3],
    )
    .unwrap()
}

/// The TV formula written out per cell and channel, on f64 data rows.
fn brute_force_tv(grid: &PlenoxelGrid, data: &[f64], width: usize, cells: &[usize]) -> f64 {
    let dims = grid.dims();
    let links = grid.links();
    let value = |x: usize, y: usize, z: usize, ch: usize| {
        let l = links[(x * dims[1] + y) * dims[2] + z];
        if l < 0 {
            0.0
        } else {
            data[l as usize * width + ch]
        }
    };
    let mut total = 0.0;
    for &cell in cells {
        let (x, y, z) = (
            cell / (dims[1] * dims[2]),
            (cell / dims[2]) % dims[1],
            cell % dims[2],
        );
        for ch in 0..width {
            let v = value(x, y, z, ch);
            let s = |a: usize| dims[a] as f64 / 256.0;
            let dx = if x + 1 < dims[0] {
                s(0) * (value(x + 1, y, z, ch) - v)
            } else {
                0.0
            };
            let dy = if y + 1 < dims[1] {
                s(1) * (value(x, y + 1, z, ch) - v)
            } else {
                0.0
            };
            let dz = if z + 1 < dims[2] {
                s(2) * (value(x, y, z + 1, ch) - v)
            } else {
                0.0
            };
            total += (1e-9 + dx * dx + dy * dy + dz * dz).sqrt();
        }
    }
    total
}

#[test]
fn total_variation_value_and_gradient_match_brute_force() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let grid = tiny_grid(&mut rng);
    for (target, width, cells) in [(TvTarget::Density, 1, 0..60), (TvTarget::Sh, 12, 7..41)] {
        let data = match target {
            TvTarget::Density => values(grid.density()),
            TvTarget::Sh => values(grid.sh()),
        };
        let cell_list: Vec<usize> = cells.clone().collect();
        let (value, grad) = grid.total_variation(target, cells).unwrap();
        let want = brute_force_tv(&grid, &data, width, &cell_list);
        assert!(
            (value - want).abs() < 1e-9 * want.max(1.0),
            "{value} vs {want}"
        );
        let grad = values(&grad);
        assert_eq!(grad.len(), data.len());
        let h = 1e-4;
        let mut nonzero = 0;
        for i in 0..data.len() {
            let mut plus = data.clone();
            plus[i] += h;
            let mut minus = data.clone();
            minus[i] -= h;
            let numeric = (brute_force_tv(&grid, &plus, width, &cell_list)
                - brute_force_tv(&grid, &minus, width, &cell_list))
                / (2.0 * h);
            assert!(
                (grad[i] - numeric).abs() < 1e-4 * numeric.abs().max(1e-2),
                "{target:?} element {i}: analytic {} numeric {numeric}",
                grad[i]
            );
            nonzero += usize::from(grad[i] != 0.0);
        }
        assert!(nonzero > data.len() / 2);
    }
}

#[test]
fn learning_rate_schedule_follows_svox2() {
    let s = LrSchedule {
        initial: 30.0,
        last: 0.05,
        delay_steps: 100,
        delay_mult: 0.01,
        decay_steps: 1000,
    };
    assert!((s.at(0) - 0.3).abs() < 1e-12);
    let log_lerp = |t: f64| (30f64.ln() * (1.0 - t) + 0.05f64.ln() * t).exp();
    let mid = 0.01 + 0.99 * (0.5 * std::f64::consts::PI * 0.5).sin();
    assert!((s.at(50) - mid * log_lerp(0.05)).abs() < 1e-9);
    assert!((s.at(100) - log_lerp(0.1)).abs() < 1e-9);
    assert!((s.at(1000) - 0.05).abs() < 1e-12);
    assert!((s.at(5000) - 0.05).abs() < 1e-12);
}

#[test]
fn upsampling_preserves_a_linear_density_field() {
    let linear = |p: [f64; 3]| 2.0 + p[0] + 0.5 * p[1] - 0.25 * p[2];
    let coarse = PlenoxelGrid::from_fn([8, 6, 8], [1.0; 3], [0.0; 3], |p| {
        (linear(p) as f32, [0.2, 0.4, 0.6])
    })
    .unwrap();
    assert_eq!(coarse.capacity(), 8 * 6 * 8);
    let keep_all = PruneOptions {
        density_threshold: f32::NEG_INFINITY,
        dilate: 0,
    };
    let fine = coarse.resample([16, 12, 16], &keep_all).unwrap();
    assert_eq!(fine.capacity(), 16 * 12 * 16);
    let density = values(fine.density());
    let sh = values(fine.sh());
    let links = fine.links();
    let mut checked = 0;
    for x in 1..15 {
        for y in 1..11 {
            for z in 1..15 {
                let world = [
                    (x as f64 + 0.5) / 8.0 - 1.0,
                    (y as f64 + 0.5) / 6.0 - 1.0,
                    (z as f64 + 0.5) / 8.0 - 1.0,
                ];
                let l = links[(x * 12 + y) * 16 + z] as usize;
                assert!((density[l] - linear(world)).abs() < 1e-5, "{x} {y} {z}");
                let dc = (0.4 - 0.5) / vnr_render::plenoxels::sh::SH_C0;
                assert!((sh[l * 3 + 1] - dc).abs() < 1e-5);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 14 * 10 * 14);
}

/// A coloured ball of density 40 (smooth edge) with a faint haze of density 1e-4 everywhere.
fn hazy_ball(dims: [usize; 3]) -> PlenoxelGrid {
    PlenoxelGrid::from_fn(dims, [1.0; 3], [0.0; 3], |p| {
        let r = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
        let inside = (1.0 - (r - 0.5) / 0.1).clamp(0.0, 1.0);
        let colour = [0.9, (0.5 + p[1] * 0.4) as f32, 0.1];
        ((40.0 * inside + 1e-4) as f32, colour)
    })
    .unwrap()
}

fn orbit_rays(count: usize) -> (Tensor, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut origins = Vec::new();
    let mut directions = Vec::new();
    for _ in 0..count {
        let a: f32 = rng.random_range(0.0..std::f32::consts::TAU);
        let o = [2.5 * a.cos(), rng.random_range(-0.5..0.5), 2.5 * a.sin()];
        let target = [
            rng.random_range(-0.6..0.6),
            rng.random_range(-0.6..0.6),
            rng.random_range(-0.6..0.6f32),
        ];
        origins.extend(o);
        directions.extend((0..3).map(|i| target[i] - o[i]));
    }
    (
        Tensor::from_vec(origins, (count, 3), &Device::Cpu).unwrap(),
        Tensor::from_vec(directions, (count, 3), &Device::Cpu).unwrap(),
    )
}

#[test]
fn pruning_keeps_rendering_within_tolerance_and_frees_storage() {
    let grid = hazy_ball([24; 3]);
    let pruned = grid
        .resample(
            [24; 3],
            &PruneOptions {
                density_threshold: 1e-3,
                dilate: 1,
            },
        )
        .unwrap();
    assert!(
        pruned.capacity() * 5 < grid.capacity(),
        "{} of {} voxels kept",
        pruned.capacity(),
        grid.capacity()
    );
    let (o, d) = orbit_rays(300);
    let opts = RenderOptions::default();
    let before = values(&grid.render_rays(&o, &d, &opts).unwrap());
    let after = values(&pruned.render_rays(&o, &d, &opts).unwrap());
    let worst = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 2e-3, "max colour change {worst}");
    // The haze itself is gone: a voxel far from the ball is empty.
    assert!(pruned.links()[0] < 0 && grid.links()[0] >= 0);
}

#[test]
fn exported_checkpoint_renders_identically() {
    let grid = hazy_ball([16; 3])
        .resample([20; 3], &PruneOptions::default())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.npz");
    grid.write(&path, true).unwrap();
    let back = PlenoxelGrid::read(&path).unwrap();
    assert_eq!(back.dims(), [20; 3]);
    assert_eq!(back.links(), grid.links());
    // svox2 stores SH as f16: compare with the grid's SH rounded the same way.
    let rounded = grid
        .with_data(
            grid.density().clone(),
            grid.sh().to_dtype(DType::F16).unwrap(),
        )
        .unwrap();
    let (o, d) = orbit_rays(200);
    let opts = RenderOptions::default();
    assert_eq!(
        values(&back.render_rays(&o, &d, &opts).unwrap()),
        values(&rounded.render_rays(&o, &d, &opts).unwrap())
    );
}

/// A toy scene: a red ball and a blue box in a 16³ grid, seen by 8 cameras at 16×16.
fn toy_dataset() -> MultiViewDataset {
    let truth = PlenoxelGrid::from_fn([16; 3], [1.0; 3], [0.0; 3], |p| {
        let ball = ((p[0] - 0.2).powi(2) + p[1].powi(2) + p[2].powi(2)).sqrt() < 0.4;
        let cube = p.iter().all(|v| (v + 0.35).abs() < 0.25);
        match (ball, cube) {
            (true, _) => (30.0, [0.9, 0.2, 0.1]),
            (false, true) => (30.0, [0.1, 0.3, 0.9]),
            _ => (0.0, [0.0; 3]),
        }
    })
    .unwrap();
    let azimuths: Vec<f64> = (0..8).map(|i| i as f64 * 45.0).collect();
    let elevations: Vec<f64> = (0..8)
        .map(|i| if i % 2 == 0 { 20.0 } else { -15.0 })
        .collect();
    let c2w = orbit_camera_to_world(3.0, &elevations, &azimuths).unwrap();
    let intrinsics = Intrinsics::from_camera_angle_x(0.8, 16, 16);
    let black_images = Tensor::zeros((8, 16, 16, 3), DType::F32, &Device::Cpu).unwrap();
    let cameras =
        MultiViewDataset::new(Split::Train, black_images, None, c2w.clone(), intrinsics).unwrap();
    let opts = RenderOptions::default();
    let images: Vec<Tensor> = (0..8)
        .map(|i| render_view(&truth, &cameras, i, &opts).unwrap())
        .collect();
    let images = Tensor::stack(&images, 0).unwrap();
    MultiViewDataset::new(Split::Train, images, None, c2w, intrinsics).unwrap()
}

fn toy_config() -> OptimizeConfig {
    OptimizeConfig {
        resolutions: vec![[8; 3], [16; 3]],
        upsample_every: 20,
        steps: 40,
        batch_rays: 512,
        sh_degree: 1,
        lr_density: LrSchedule {
            initial: 30.0,
            last: 0.05,
            delay_steps: 10,
            delay_mult: 0.01,
            decay_steps: 2000,
        },
        lr_sh: LrSchedule {
            initial: 0.05,
            last: 5e-6,
            delay_steps: 0,
            delay_mult: 1.0,
            decay_steps: 2000,
        },
        prune: PruneOptions {
            density_threshold: 0.5,
            dilate: 1,
        },
        ..OptimizeConfig::default()
    }
}

fn run_fit(data: &MultiViewDataset, seed: u64) -> (PlenoxelGrid, Vec<f64>, Vec<usize>) {
    let mut losses = Vec::new();
    let mut capacities = Vec::new();
    let grid = fit(
        data,
        toy_config(),
        &mut ChaCha8Rng::seed_from_u64(seed),
        |s| {
            losses.push(s.mse);
            capacities.push(s.capacity);
        },
    )
    .unwrap();
    (grid, losses, capacities)
}

#[test]
fn a_short_fit_reduces_the_loss_and_is_deterministic() {
    let data = toy_dataset();
    let (grid, losses, capacities) = run_fit(&data, 5);
    assert_eq!(losses.len(), 40);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (first, last) = (mean(&losses[..5]), mean(&losses[35..]));
    assert!(last < 0.5 * first, "loss {first} → {last}: {losses:?}");
    // Coarse-to-fine: 8³ dense, then a pruned 16³.
    assert_eq!(capacities[0], 512);
    assert_eq!(grid.dims(), [16; 3]);
    assert!(capacities[39] < 16 * 16 * 16 && capacities[39] > 0);
    let psnr = evaluate_psnr(&grid, &data, &toy_config().render).unwrap();
    assert!(psnr > 14.0, "train PSNR {psnr}");

    let (again, losses_again, _) = run_fit(&data, 5);
    assert_eq!(losses, losses_again);
    assert_eq!(values(grid.density()), values(again.density()));
    assert_eq!(values(grid.sh()), values(again.sh()));
    let (_, other, _) = run_fit(&data, 6);
    assert_ne!(losses, other);
}

#[test]
fn bad_settings_are_refused() {
    let data = toy_dataset();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for config in [
        OptimizeConfig {
            resolutions: vec![],
            ..toy_config()
        },
        OptimizeConfig {
            batch_rays: 0,
            ..toy_config()
        },
        OptimizeConfig {
            rms_beta: 1.0,
            ..toy_config()
        },
        OptimizeConfig {
            tv_sh_fraction: 2.0,
            ..toy_config()
        },
    ] {
        assert!(matches!(
            fit(&data, config, &mut rng, |_| {}),
            Err(PlenoxelError::BadConfig(_))
        ));
    }
    assert!(PlenoxelGrid::dense([1, 4, 4], [1.0; 3], [0.0; 3], 0, 0.1).is_err());
    assert!(PlenoxelGrid::dense([4, 4, 4], [1.0; 3], [0.0; 3], 5, 0.1).is_err());
}

/// SH degrees and ray batches that overflowed, or asked for terabytes, are refused up front.
#[test]
fn huge_sh_degrees_and_ray_batches_are_errors_not_overflows() {
    for degree in [usize::MAX, 1 << 32] {
        // Saturates instead of overflowing; callers refuse such degrees.
        assert_eq!(num_bases(degree), usize::MAX);
        assert!(matches!(
            PlenoxelGrid::dense([4; 3], [1.0; 3], [0.0; 3], degree, 0.1),
            Err(PlenoxelError::BadShape { key: "sh_data", .. })
        ));
    }
    // Within MAX_RESAMPLE_VOXELS, but 2³⁰ voxels of degree-4 SH would be ~300 GiB.
    assert!(matches!(
        PlenoxelGrid::dense([1 << 10; 3], [1.0; 3], [0.0; 3], 4, 0.1),
        Err(PlenoxelError::Candle(_))
    ));
    let data = toy_dataset();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let configs = [usize::MAX, 1 << 32, 5]
        .map(|sh_degree| OptimizeConfig {
            sh_degree,
            ..toy_config()
        })
        .into_iter()
        .chain(
            [usize::MAX, usize::MAX / 2 + 1, 1 << 40].map(|batch_rays| OptimizeConfig {
                batch_rays,
                ..toy_config()
            }),
        );
    for config in configs {
        assert!(matches!(
            PlenoxelOptimizer::from_config(config.clone()),
            Err(PlenoxelError::BadConfig(_))
        ));
        assert!(matches!(
            fit(&data, config, &mut rng, |_| {}),
            Err(PlenoxelError::BadConfig(_))
        ));
    }
}

/// Dilating more often than the grid is long changes nothing, so a huge `dilate` ends at once
/// with every voxel kept (it looped `dilate` times).
#[test]
fn huge_dilation_ends_with_the_whole_grid() {
    let grid = PlenoxelGrid::from_fn([4; 3], [1.0; 3], [0.0; 3], |p| {
        let corner = p.iter().all(|&v| v < -0.5);
        (if corner { 10.0 } else { 0.0 }, [0.5; 3])
    })
    .unwrap();
    assert_eq!(grid.capacity(), 1);
    let prune = PruneOptions {
        density_threshold: 1.0,
        dilate: usize::MAX,
    };
    assert_eq!(grid.resample([4; 3], &prune).unwrap().capacity(), 64);
    let once = PruneOptions { dilate: 1, ..prune };
    assert_eq!(grid.resample([4; 3], &once).unwrap().capacity(), 8);
}

/// A dense 16³ grid (row = C-order voxel index) with random density and degree-1 SH.
fn noisy_dense_grid(rng: &mut ChaCha8Rng) -> PlenoxelGrid {
    let n = 16 * 16 * 16;
    let density: Vec<f32> = (0..n).map(|_| rng.random_range(0.5..8.0)).collect();
    let sh: Vec<f32> = (0..n * 12).map(|_| rng.random_range(-0.5..0.5)).collect();
    PlenoxelGrid::new(
        [16; 3],
        (0..n as i32).collect(),
        Tensor::from_vec(density, (n, 1), &Device::Cpu).unwrap(),
        Tensor::from_vec(sh, (n, 12), &Device::Cpu).unwrap(),
        [1.0; 3],
        [0.0; 3],
    )
    .unwrap()
}

fn step_config(lambda_tv: f64) -> OptimizeConfig {
    OptimizeConfig {
        resolutions: vec![[16; 3]],
        sh_degree: 1,
        lambda_tv_density: lambda_tv,
        lambda_tv_sh: lambda_tv,
        ..toy_config()
    }
}

fn ray_batch(origins: &[[f32; 3]], directions: &[[f32; 3]], colours: &[[f32; 3]]) -> RayBatch {
    let t = |v: &[[f32; 3]]| Tensor::from_vec(v.concat(), (v.len(), 3), &Device::Cpu).unwrap();
    RayBatch {
        origins: t(origins),
        directions: t(directions),
        colours: t(colours),
    }
}

/// The values of an f32 tensor (exact through [`values`]).
fn f32s(t: &Tensor) -> Vec<f32> {
    values(t).into_iter().map(|v| v as f32).collect()
}

/// svox2's first RMSProp step (`r = g²`) on the rows of `data [N, width]` with a non-zero
/// gradient, swept densely; returns the new data and how many rows changed.
fn dense_first_rmsprop(data: &[f32], grad: &[f32], width: usize, lr: f64) -> (Vec<f32>, usize) {
    let mut out = data.to_vec();
    let mut rows = 0;
    for (row, g_row) in out.chunks_exact_mut(width).zip(grad.chunks_exact(width)) {
        if g_row.iter().all(|&g| g == 0.0) {
            continue;
        }
        rows += 1;
        for (x, &g) in row.iter_mut().zip(g_row) {
            let g = f64::from(g);
            *x = (f64::from(*x) - lr * g / ((g * g).sqrt() + 1e-8)) as f32;
        }
    }
    (out, rows)
}

/// Regression: a step used to copy the grid, allocate whole-grid gradients and sweep every
/// row. It must update exactly the rows dense autograd gives a non-zero gradient, to the bit.
#[test]
fn a_step_updates_only_the_rows_its_rays_touch_as_dense_autograd_would() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let grid = noisy_dense_grid(&mut rng);
    let config = step_config(0.0);
    let batch = ray_batch(
        &[[-3.0, 0.31, 0.42], [-3.0, 0.35, 0.47], [0.2, -3.0, -0.6]],
        &[[1.0, 0.0, 0.01], [1.0, 0.02, 0.0], [0.0, 1.0, 0.03]],
        &[[0.9, 0.2, 0.1], [0.1, 0.3, 0.9], [0.5, 0.5, 0.5]],
    );

    let density = Var::from_tensor(grid.density()).unwrap();
    let sh = Var::from_tensor(grid.sh()).unwrap();
    let tracked = grid
        .with_data(density.as_tensor().clone(), sh.as_tensor().clone())
        .unwrap();
    let mse = tracked
        .render_rays(&batch.origins, &batch.directions, &config.render)
        .unwrap()
        .sub(&batch.colours)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap();
    let grads = mse.backward().unwrap();
    let grad_of = |v: &Var| f32s(grads.get(v.as_tensor()).unwrap());
    let (want_density, density_rows) = dense_first_rmsprop(
        &f32s(grid.density()),
        &grad_of(&density),
        1,
        config.lr_density.at(0),
    );
    let (want_sh, sh_rows) =
        dense_first_rmsprop(&f32s(grid.sh()), &grad_of(&sh), 12, config.lr_sh.at(0));

    let mut optimizer = PlenoxelOptimizer::new(grid, config).unwrap();
    let stats = optimizer.step(&batch, &mut rng).unwrap();
    let after = optimizer.grid().unwrap();
    assert_eq!(f32s(after.density()), want_density);
    assert_eq!(f32s(after.sh()), want_sh);
    assert_eq!(
        (stats.updated_density_rows, stats.updated_sh_rows),
        (density_rows, sh_rows)
    );
    // Three rays through a 16³ grid touch at most a few corners per voxel they cross.
    assert!(
        density_rows > 16 && density_rows < 3 * 4 * 16,
        "{density_rows}"
    );
}

/// Regression: with every ray missing the grid, only the TV slab (its cells and their `+1`
/// neighbours) may change.
#[test]
fn a_step_with_no_ray_hits_updates_only_the_tv_slab() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let grid = noisy_dense_grid(&mut rng);
    let config = step_config(1e-3);
    let cells = (16.0 * 16.0 * 16.0 * config.tv_density_fraction) as usize;
    let batch = ray_batch(&[[-3.0, 5.0, 5.0]], &[[-1.0, 0.0, 0.0]], &[[0.5; 3]]);
    let before = (f32s(grid.density()), f32s(grid.sh()));
    let mut optimizer = PlenoxelOptimizer::new(grid, config).unwrap();
    let stats = optimizer.step(&batch, &mut rng).unwrap();
    let after = optimizer.grid().unwrap();
    for (old, new, width, updated) in [
        (
            &before.0,
            f32s(after.density()),
            1,
            stats.updated_density_rows,
        ),
        (&before.1, f32s(after.sh()), 12, stats.updated_sh_rows),
    ] {
        let changed: Vec<usize> = (0..16 * 16 * 16)
            .filter(|&r| old[r * width..(r + 1) * width] != new[r * width..(r + 1) * width])
            .collect();
        assert_eq!(changed.len(), updated);
        assert!(updated >= cells && updated <= 4 * cells, "{updated} rows");
        let span = changed[changed.len() - 1] - changed[0];
        assert!(span < cells + 16 * 16, "rows {changed:?}");
    }
}
