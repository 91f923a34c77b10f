//! Image metrics: L1, MSE (differentiable, usable as losses), PSNR and SSIM.

use candle_core::{DType, Tensor};

use crate::error::{Result, TrainError};

fn same_shape(a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(TrainError::Config(format!(
            "metric inputs differ in shape: {:?} vs {:?}",
            a.dims(),
            b.dims()
        )));
    }
    Ok(())
}

/// Mean absolute difference over all elements, as a scalar tensor (differentiable).
pub fn l1(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_shape(a, b)?;
    Ok((a - b)?.abs()?.mean_all()?)
}

/// Mean squared difference over all elements, as a scalar tensor (differentiable).
pub fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_shape(a, b)?;
    Ok((a - b)?.sqr()?.mean_all()?)
}

/// Peak signal-to-noise ratio `10·log10(data_range² / MSE)` in dB over all elements, computed
/// in `f64` (skimage's `peak_signal_noise_ratio`); `+∞` for identical inputs.
pub fn psnr(a: &Tensor, b: &Tensor, data_range: f64) -> Result<f64> {
    if !(data_range.is_finite() && data_range > 0.0) {
        return Err(TrainError::Config(format!(
            "PSNR data range must be > 0, got {data_range}"
        )));
    }
    let error = mse(&a.to_dtype(DType::F64)?, &b.to_dtype(DType::F64)?)?.to_scalar::<f64>()?;
    Ok(10.0 * (data_range * data_range / error).log10())
}

/// SSIM settings. `Default` is Wang et al. (2004): Gaussian window σ = 1.5 (11×11, truncated at
/// 3.5σ as scipy does), K1 = 0.01, K2 = 0.03, data range 1, population covariances.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SsimConfig {
    /// Standard deviation of the Gaussian window.
    pub sigma: f64,
    /// Window radius in units of `sigma` (radius = ⌊truncate·σ + 0.5⌋).
    pub truncate: f64,
    /// Luminance stabiliser `C1 = (K1·L)²`.
    pub k1: f64,
    /// Contrast stabiliser `C2 = (K2·L)²`.
    pub k2: f64,
    /// `L`, the span of valid values (1 for `[0, 1]` images, 255 for 8-bit).
    pub data_range: f64,
    /// Scale (co)variances by `N/(N−1)`, `N` = window pixel count: skimage's default
    /// (`use_sample_covariance=True`); Wang et al. do not.
    pub sample_covariance: bool,
}

impl Default for SsimConfig {
    fn default() -> Self {
        Self {
            sigma: 1.5,
            truncate: 3.5,
            k1: 0.01,
            k2: 0.03,
            data_range: 1.0,
            sample_covariance: false,
        }
    }
}

/// Mean structural similarity of two images `[H, W]`, `[C, H, W]` or `[B, C, H, W]`: the SSIM
/// map of every plane, averaged over the pixels whose window lies inside the image (skimage
/// crops the same border), then over planes. Matches skimage's
/// `structural_similarity(gaussian_weights=True, sigma, data_range, channel_axis=0,
/// use_sample_covariance)` per image. Both sides must be at least the window size
/// `2·⌊truncate·σ + 0.5⌋ + 1`; a window that does not fit is [`TrainError::Config`], found
/// before the window is built.
pub fn ssim(a: &Tensor, b: &Tensor, config: &SsimConfig) -> Result<f64> {
    same_shape(a, b)?;
    let dims = a.dims();
    let (height, width) = match dims {
        [.., h, w] if (2..=4).contains(&dims.len()) => (*h, *w),
        _ => {
            return Err(TrainError::Config(format!(
                "SSIM takes [H, W], [C, H, W] or [B, C, H, W], got {dims:?}"
            )))
        }
    };
    if !(config.sigma.is_finite()
        && config.sigma > 0.0
        && config.truncate.is_finite()
        && config.truncate >= 0.0
        && config.data_range.is_finite()
        && config.data_range > 0.0)
    {
        return Err(TrainError::Config(format!("bad SSIM window {config:?}")));
    }
    // The window's size in f64 first: a huge sigma or truncate must be refused here, not
    // met as a window of billions of taps.
    let radius = window_radius(config.sigma, config.truncate);
    let window = 2.0 * radius + 1.0;
    if !(window.is_finite() && window <= height.min(width) as f64) {
        // Debug formatting keeps a huge window short (1e300, not 301 digits).
        return Err(TrainError::Config(format!(
            "SSIM window {window:?}×{window:?} (sigma {:?}, truncate {:?}) does not fit a \
             {height}×{width} image",
            config.sigma, config.truncate
        )));
    }
    let weights = gaussian_window(config.sigma, radius as usize);
    let flat = |t: &Tensor| -> Result<Vec<f64>> {
        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
    };
    let (xs, ys) = (flat(a)?, flat(b)?);
    let plane = height * width;
    let planes = xs.len() / plane;
    let mut total = 0.0;
    for (x, y) in xs.chunks_exact(plane).zip(ys.chunks_exact(plane)) {
        total += plane_ssim(x, y, height, width, &weights, config);
    }
    Ok(total / planes as f64)
}

/// scipy's window radius `⌊truncate·σ + 0.5⌋`, in `f64` so that it can be checked before use.
fn window_radius(sigma: f64, truncate: f64) -> f64 {
    (truncate * sigma + 0.5).floor()
}

/// scipy's `_gaussian_kernel1d`: `exp(−x²/2σ²)` for `x` in `−r..=r`, normalised to sum 1.
fn gaussian_window(sigma: f64, radius: usize) -> Vec<f64> {
    let radius = radius as i64;
    let raw: Vec<f64> = (-radius..=radius)
        .map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp())
        .collect();
    let sum: f64 = raw.iter().sum();
    raw.into_iter().map(|w| w / sum).collect()
}

/// Separable "valid" filtering of a `height × width` plane by `w` along both axes.
fn filter_valid(plane: &[f64], height: usize, width: usize, w: &[f64]) -> Vec<f64> {
    let n = w.len();
    let (out_h, out_w) = (height + 1 - n, width + 1 - n);
    let mut rows = vec![0.0; height * out_w];
    for r in 0..height {
        let src = &plane[r * width..(r + 1) * width];
        for c in 0..out_w {
            rows[r * out_w + c] = src[c..c + n].iter().zip(w).map(|(v, k)| v * k).sum();
        }
    }
    let mut out = vec![0.0; out_h * out_w];
    for r in 0..out_h {
        for c in 0..out_w {
            out[r * out_w + c] = (0..n).map(|k| rows[(r + k) * out_w + c] * w[k]).sum();
        }
    }
    out
}

fn plane_ssim(
    x: &[f64],
    y: &[f64],
    height: usize,
    width: usize,
    w: &[f64],
    config: &SsimConfig,
) -> f64 {
    let product =
        |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(p, q)| p * q).collect() };
    let ux = filter_valid(x, height, width, w);
    let uy = filter_valid(y, height, width, w);
    let uxx = filter_valid(&product(x, x), height, width, w);
    let uyy = filter_valid(&product(y, y), height, width, w);
    let uxy = filter_valid(&product(x, y), height, width, w);
    let count = (w.len() * w.len()) as f64;
    let cov_norm = if config.sample_covariance {
        count / (count - 1.0)
    } else {
        1.0
    };
    let c1 = (config.k1 * config.data_range).powi(2);
    let c2 = (config.k2 * config.data_range).powi(2);
    let mut sum = 0.0;
    for i in 0..ux.len() {
        let vx = cov_norm * (uxx[i] - ux[i] * ux[i]);
        let vy = cov_norm * (uyy[i] - uy[i] * uy[i]);
        let vxy = cov_norm * (uxy[i] - ux[i] * uy[i]);
        let a1 = 2.0 * ux[i] * uy[i] + c1;
        let a2 = 2.0 * vxy + c2;
        let b1 = ux[i] * ux[i] + uy[i] * uy[i] + c1;
        let b2 = vx + vy + c2;
        sum += (a1 * a2) / (b1 * b2);
    }
    sum / ux.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn identical_images_score_one_and_psnr_infinity() {
        let a = Tensor::arange(0f32, 256.0, &Device::Cpu)
            .unwrap()
            .reshape((16, 16))
            .unwrap()
            .affine(1.0 / 255.0, 0.0)
            .unwrap();
        assert!((ssim(&a, &a, &SsimConfig::default()).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(psnr(&a, &a, 1.0).unwrap(), f64::INFINITY);
        let b = (&a + 0.1).unwrap();
        assert!((psnr(&a, &b, 1.0).unwrap() - 20.0).abs() < 1e-5);
        assert!((l1(&a, &b).unwrap().to_scalar::<f32>().unwrap() - 0.1).abs() < 1e-6);
        let small = Tensor::zeros((8, 8), DType::F32, &Device::Cpu).unwrap();
        assert!(ssim(&small, &small, &SsimConfig::default()).is_err());
    }

    #[test]
    fn huge_ssim_windows_are_errors_not_overflows() {
        let a = Tensor::zeros((16, 16), DType::F32, &Device::Cpu).unwrap();
        for (sigma, truncate) in [
            (1e300, 3.5),
            (1.5, 1e300),
            (f64::MAX, f64::MAX),
            (1e10, 3.5),
            // 2·⌊3.5·2.5 + 0.5⌋ + 1 = 19 taps: one past the 16-pixel side.
            (2.5, 3.5),
        ] {
            let config = SsimConfig {
                sigma,
                truncate,
                ..SsimConfig::default()
            };
            match ssim(&a, &a, &config) {
                Err(TrainError::Config(m)) => assert!(m.contains("window"), "{m}"),
                other => panic!("sigma {sigma}, truncate {truncate}: {other:?}"),
            }
        }
        // 2·⌊3.5·2 + 0.5⌋ + 1 = 15 taps fit.
        let fits = SsimConfig {
            sigma: 2.0,
            ..SsimConfig::default()
        };
        assert!((ssim(&a, &a, &fits).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn window_is_scipys_eleven_taps() {
        let w = gaussian_window(1.5, window_radius(1.5, 3.5) as usize);
        assert_eq!(w.len(), 11);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-15);
    }
}
