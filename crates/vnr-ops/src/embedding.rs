//! Harmonic (NeRF positional) embedding with PyTorch3D's `HarmonicEmbedding` layout.
//!
//! For `x` `[..., dim]` and frequencies `f` `[n]`: `embed = (x[..., None] * f)` reshaped to
//! `[..., dim * n]` (dimension-major: all frequencies of `x_0`, then of `x_1`, ...), and the
//! output is `[sin(embed), cos(embed), x]` along the last axis (`x` only with `append_input`).
//! Composed of candle ops, so it is differentiable in `x`.

use crate::dispatch::{checked_elements, kernel_dtype};
use candle_core::{bail, Result, Tensor, D};

/// Parameters of [`harmonic_embedding`]; the defaults are PyTorch3D's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HarmonicEmbeddingParams {
    /// Number of frequencies `n`.
    pub n_harmonic_functions: usize,
    /// Base frequency that all frequencies are multiplied by.
    pub omega_0: f64,
    /// `omega_0 · 2^k` for `k < n` when true; `omega_0 · linspace(1, 2^(n−1), n)` when false.
    pub logspace: bool,
    /// Whether the input is appended after the sines and cosines.
    pub append_input: bool,
}

impl Default for HarmonicEmbeddingParams {
    fn default() -> Self {
        Self {
            n_harmonic_functions: 6,
            omega_0: 1.0,
            logspace: true,
            append_input: true,
        }
    }
}

impl HarmonicEmbeddingParams {
    /// The frequencies, computed in f32 as PyTorch3D's float32 buffer is (including
    /// `torch.linspace`'s rounding: the first half counts up from the start, the second half
    /// down from the end).
    pub fn frequencies(&self) -> Vec<f32> {
        let n = self.n_harmonic_functions;
        let omega = self.omega_0 as f32;
        let base: Vec<f32> = if self.logspace {
            (0..n).map(|k| 2f32.powi(k as i32)).collect()
        } else if n == 1 {
            vec![1.0]
        } else {
            let (start, end) = (1f32, 2f32.powi(n as i32 - 1));
            let step = (end - start) / (n - 1) as f32;
            (0..n)
                .map(|k| {
                    if k < n / 2 {
                        start + step * k as f32
                    } else {
                        end - step * (n - 1 - k) as f32
                    }
                })
                .collect()
        };
        base.into_iter().map(|f| f * omega).collect()
    }

    /// Size of the embedding's last axis for inputs with `input_dims` values per point:
    /// `input_dims · (2n + append_input)`, or an error when that overflows.
    pub fn get_output_dim(&self, input_dims: usize) -> Result<usize> {
        match self
            .n_harmonic_functions
            .checked_mul(2)
            .and_then(|v| v.checked_add(usize::from(self.append_input)))
            .and_then(|v| v.checked_mul(input_dims))
        {
            Some(dim) => Ok(dim),
            None => bail!(
                "harmonic_embedding: {} frequencies make the output too large to allocate",
                self.n_harmonic_functions
            ),
        }
    }
}

/// Harmonic embedding of `x` `[..., dim]` → `[..., dim · (2n + append_input)]` (see the module
/// docs for the layout). f16/bf16 inputs are computed in f32 and converted back.
pub fn harmonic_embedding(x: &Tensor, p: &HarmonicEmbeddingParams) -> Result<Tensor> {
    if x.rank() == 0 {
        bail!("harmonic_embedding: input must have a last (feature) dim, got a scalar");
    }
    if !p.omega_0.is_finite() {
        bail!(
            "harmonic_embedding: omega_0 must be finite, got {}",
            p.omega_0
        );
    }
    let dtype = kernel_dtype("harmonic_embedding", x.dtype())?;
    // Checked before the frequencies are made: the count comes from a parameter.
    let mut embedded = x.dims().to_vec();
    if let Some(last) = embedded.last_mut() {
        *last = p.get_output_dim(*last)?;
    }
    checked_elements("harmonic_embedding", "output", &embedded)?;
    let xc = x.to_dtype(dtype)?;
    let freqs = p.frequencies();
    let n = freqs.len();
    let freqs = Tensor::from_vec(freqs, n, x.device())?.to_dtype(dtype)?;
    let mut out_dims = x.dims().to_vec();
    if let Some(last) = out_dims.last_mut() {
        *last *= n;
    }
    let embed = xc
        .unsqueeze(D::Minus1)?
        .broadcast_mul(&freqs)?
        .reshape(out_dims)?;
    let mut parts = vec![embed.sin()?, embed.cos()?];
    if p.append_input {
        parts.push(xc);
    }
    Tensor::cat(&parts, D::Minus1)?.to_dtype(x.dtype())
}
