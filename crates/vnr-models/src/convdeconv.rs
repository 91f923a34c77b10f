//! VoxelNeuralRender's ConvDeconv: a 3D convolutional encoder over a camera-space voxel grid,
//! a row-major reshape of the 3D bottleneck into a 2D feature map, and a 2D transposed
//! convolutional decoder to the rendered image.
//!
//! # v001 (the original, `models/cnn.py`)
//! Per encoder scale `i = 1..L`: zero pad 1 → `conv3d_s2_i` (k4, s2) → LeakyReLU(0.01) →
//! MaxPool3d(3, 1, 1) → `conv3d_s1_i` (1×1×1) → LeakyReLU; channels 64/128/512/1024. The
//! bottleneck `[B, C, N, N, N]` is reshaped row-major to `[B, C, M, M]` with `M² = N³`
//! (`[1024, 16, 16, 16]` → `[1024, 64, 64]`): the flat index `d·N² + h·N + w` becomes
//! `row·M + col`, which mixes depth and height into rows — kept exactly, as trained weights
//! expect it. Decoder: `deconv2d_s2_1` (k4, s2, p1) → LeakyReLU → `deconv2d_s1_1` (1×1) →
//! LeakyReLU → `deconv2d_s2_2` (k4, s2, p1) to one channel, no final activation. At 256³:
//! 48,271,745 parameters and a 256×256 image. Parameter names are the PyTorch module's
//! `state_dict` keys (`conv3d_s2_1.weight`, …, `deconv2d_s2_2.bias`).
//!
//! # v002 (U-Net-style skips, the original README's stated next step)
//! A decoder stage whose resolution `R` (`M` before `deconv2d_s2_1`, `2M` before
//! `deconv2d_s1_1`) equals an encoder scale's side `N_i` receives that scale's features: a
//! 1×1×1 convolution `skip_i` reduces them to `skip_channels`, depth (axis D, the view axis of
//! the camera-space grid) is folded into channels (`[B, k, N, N, N]` → `[B, N·k, N, N]`,
//! index `d·k + c`, as RenderNet's projection unit) and the result is concatenated after the
//! decoder's channels. Image rows and columns are the grid's H and W. At 256³ the skips come
//! from scale 2 (64³ → 64×64, before `deconv2d_s2_1`) and scale 1 (128³ → 128×128, before
//! `deconv2d_s1_1`). Scales whose side matches no stage get no skip.

use candle_core::{bail, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use vnr_ops::nn::conv::MaxPool3d;

use crate::layers::{
    fold_into_channels, folded_dims, Conv, ConvTranspose, Crop, Padding, ParamSpec,
};
use crate::limits::{at_most, MAX_CHANNELS, MAX_GRID_SIDE, MAX_IMAGE_SIDE};
use crate::summary::Summary;
use crate::ConfigError;

/// The axis of `[B, C, D, H, W]` a v002 skip folds into channels (D: the view axis).
const DEPTH_AXIS: usize = 2;

/// Which ConvDeconv architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConvDeconvVersion {
    /// The original, no skips.
    #[default]
    V001,
    /// With U-Net-style skips from encoder scales to decoder stages of the same resolution.
    V002,
}

/// ConvDeconv hyper-parameters. `Default` is the original v001 at 256³.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConvDeconvConfig {
    /// Architecture version.
    pub version: ConvDeconvVersion,
    /// Side `S` of the input grid `[B, 1, S, S, S]`.
    pub input_size: usize,
    /// Output channels of each encoder scale (one stride-2 step each).
    pub encoder_channels: Vec<usize>,
    /// Output channels of `deconv2d_s2_1` and `deconv2d_s1_1`.
    pub decoder_channels: [usize; 2],
    /// LeakyReLU slope for negative inputs (PyTorch's default 0.01).
    pub negative_slope: f64,
    /// v002: channels each skip is reduced to before depth is folded into channels.
    pub skip_channels: usize,
}

impl Default for ConvDeconvConfig {
    fn default() -> Self {
        Self {
            version: ConvDeconvVersion::V001,
            input_size: 256,
            encoder_channels: vec![64, 128, 512, 1024],
            decoder_channels: [512, 512],
            negative_slope: 0.01,
            skip_channels: 4,
        }
    }
}

impl ConvDeconvConfig {
    /// The original v001 at 256³ (same as `Default`).
    pub fn v001() -> Self {
        Self::default()
    }

    /// v002 at 256³: v001's widths plus skips.
    pub fn v002() -> Self {
        Self {
            version: ConvDeconvVersion::V002,
            ..Self::default()
        }
    }

    /// 32³ input, 3 scales of 8/16/32 channels (bottleneck 4³ → 8×8), decoder 16/16, a 32×32
    /// image: trains on a laptop CPU.
    pub fn small32() -> Self {
        Self {
            input_size: 32,
            encoder_channels: vec![8, 16, 32],
            decoder_channels: [16, 16],
            ..Self::default()
        }
    }

    /// [`Self::small32`] at twice the width: encoder 16/32/64, decoder 32/32. With v002's skips
    /// (`small32-wide-v002`) and the MSE loss it is the example's model: the one small config
    /// here that clears the mean-image baseline by 3 dB in a few CPU-minutes (see
    /// `examples/convdeconv.rs`).
    pub fn small32_wide() -> Self {
        Self {
            encoder_channels: vec![16, 32, 64],
            decoder_channels: [32, 32],
            ..Self::small32()
        }
    }

    /// 64³ input, 2 scales of 16/32 channels (bottleneck 16³ → 64×64, as the original's),
    /// decoder 32/16, a 256×256 image.
    pub fn small64() -> Self {
        Self {
            input_size: 64,
            encoder_channels: vec![16, 32],
            decoder_channels: [32, 16],
            ..Self::default()
        }
    }

    /// A named preset: `v001`, `v002`, `small32`, `small32-wide`, `small64`, and each small one
    /// with `-v002` (`small32-v002`, `small32-wide-v002`, `small64-v002`).
    pub fn preset(name: &str) -> Option<Self> {
        let (base, version) = match name.strip_suffix("-v002") {
            Some(base) => (base, ConvDeconvVersion::V002),
            None => (name, ConvDeconvVersion::V001),
        };
        let cfg = match base {
            "v001" | "default" => Self::v001(),
            "v002" => Self::v002(),
            "small32" => Self::small32(),
            "small32-wide" => Self::small32_wide(),
            "small64" => Self::small64(),
            _ => return None,
        };
        Some(if version == ConvDeconvVersion::V002 {
            Self { version, ..cfg }
        } else {
            cfg
        })
    }

    /// Side of the encoder's output grid, `S / 2^L`.
    pub fn bottleneck_size(&self) -> usize {
        u32::try_from(self.encoder_channels.len())
            .ok()
            .and_then(|levels| self.input_size.checked_shr(levels))
            .unwrap_or(0)
    }

    /// Side `M` of the reshaped 2D bottleneck (`M² = N³`); saturates for sizes that
    /// [`Self::validate`] refuses.
    pub fn bottleneck_image_size(&self) -> usize {
        let n = self.bottleneck_size();
        // N³ = M² holds exactly when N is a perfect square k², and then M = k³.
        let k = (n as f64).sqrt().round() as usize;
        k.saturating_pow(3)
    }

    /// Side of the output image, `4·M`; saturates for sizes that [`Self::validate`] refuses.
    pub fn output_size(&self) -> usize {
        self.bottleneck_image_size().saturating_mul(4)
    }

    /// The encoder scale whose side equals `resolution`: in v002, the source of the skip into
    /// the decoder stage at that resolution.
    fn skip_scale(&self, resolution: usize) -> Option<usize> {
        if self.version != ConvDeconvVersion::V002 {
            return None;
        }
        (0..self.encoder_channels.len()).find(|&i| self.input_size >> (i + 1) == resolution)
    }

    /// Input channels of `deconv2d_s2_1` (at resolution `M`) and `deconv2d_s1_1` (at `2M`):
    /// the previous layer's plus `skip_channels · R` for a v002 skip at resolution `R`; an
    /// error when they overflow.
    fn decoder_inputs(&self) -> std::result::Result<[usize; 2], ConfigError> {
        let m = self.bottleneck_image_size();
        let overflow = || {
            ConfigError::invalid(format!(
                "convdeconv: skip_channels {} at the decoder's resolutions {m} and 2·{m} overflow its input channels",
                self.skip_channels
            ))
        };
        let with_skip = |channels: usize, resolution: usize| match self.skip_scale(resolution) {
            Some(_) => self
                .skip_channels
                .checked_mul(resolution)
                .and_then(|folded| folded.checked_add(channels))
                .ok_or_else(overflow),
            None => Ok(channels),
        };
        let encoded = self.encoder_channels.last().copied().unwrap_or(1);
        Ok([
            with_skip(encoded, m)?,
            with_skip(
                self.decoder_channels[0],
                m.checked_mul(2).ok_or_else(overflow)?,
            )?,
        ])
    }

    /// Checks that the input halves cleanly `L` times and that the bottleneck's voxel count
    /// is a square (the reshape to a 2D map needs it). `input_size` is at most
    /// [`MAX_GRID_SIDE`], channel counts at most [`MAX_CHANNELS`] and the output image side at
    /// most [`MAX_IMAGE_SIDE`].
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        let levels = self.encoder_channels.len();
        if levels == 0 || levels >= usize::BITS as usize {
            return Err(ConfigError::invalid(
                "convdeconv: encoder_channels must list 1 or more scales",
            ));
        }
        if self.encoder_channels.contains(&0) || self.decoder_channels.contains(&0) {
            return Err(ConfigError::invalid(
                "convdeconv: channel counts must be positive",
            ));
        }
        // Caps first: they keep k³, 2·M and skip_channels·R below from overflowing.
        at_most("convdeconv: input_size", self.input_size, MAX_GRID_SIDE)?;
        for &c in self.encoder_channels.iter().chain(&self.decoder_channels) {
            at_most("convdeconv: a channel count", c, MAX_CHANNELS)?;
        }
        if self.version == ConvDeconvVersion::V002 {
            at_most(
                "convdeconv: skip_channels",
                self.skip_channels,
                MAX_CHANNELS,
            )?;
        }
        if self.input_size == 0 || self.input_size % (1 << levels) != 0 {
            return Err(ConfigError::invalid(format!(
                "convdeconv: input_size {} must be a positive multiple of 2^{levels} for {levels} stride-2 scales",
                self.input_size
            )));
        }
        let n = self.bottleneck_size();
        let k = (n as f64).sqrt().round() as usize;
        if k * k != n {
            return Err(ConfigError::invalid(format!(
                "convdeconv: the bottleneck {n}³ must have a square number of voxels to reshape to 2D \
                 (its side must be a perfect square: 1, 4, 16, …); change input_size or the number of scales"
            )));
        }
        if self.version == ConvDeconvVersion::V002 && self.skip_channels == 0 {
            return Err(ConfigError::invalid(
                "convdeconv: v002 needs skip_channels ≥ 1",
            ));
        }
        at_most(
            "convdeconv: the output image side 4·M",
            self.output_size(),
            MAX_IMAGE_SIDE,
        )?;
        self.decoder_inputs().map(|_| ())
    }

    /// Reads a JSON or TOML (`.toml`) file of this struct (serde field names, missing fields
    /// from `Default`) and validates it.
    pub fn from_file(path: &std::path::Path) -> std::result::Result<Self, ConfigError> {
        let cfg: Self = crate::config::read_struct(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The input shape for a batch of `batch`.
    pub fn input_dims(&self, batch: usize) -> Vec<usize> {
        vec![batch, 1, self.input_size, self.input_size, self.input_size]
    }
}

/// One encoder scale: pad 1, k4 s2 convolution, LeakyReLU, MaxPool3d(3,1,1), 1×1×1 conv,
/// LeakyReLU.
#[derive(Debug, Clone)]
struct EncoderScale {
    down: Conv,
    mix: Conv,
}

/// A v002 skip from an encoder scale to a decoder stage.
#[derive(Debug, Clone)]
struct Skip {
    scale: usize,
    reduce: Conv,
}

/// The ConvDeconv network: voxels `[B, 1, S, S, S]` → image `[B, 1, 4M, 4M]`.
#[derive(Debug, Clone)]
pub struct ConvDeconv {
    cfg: ConvDeconvConfig,
    encoder: Vec<EncoderScale>,
    pool: MaxPool3d,
    /// Skip into the reshaped bottleneck (resolution M), before `deconv2d_s2_1`.
    skip_bottleneck: Option<Skip>,
    /// Skip into `deconv2d_s2_1`'s output (resolution 2M), before `deconv2d_s1_1`.
    skip_upsampled: Option<Skip>,
    deconv_s2_1: ConvTranspose,
    deconv_s1_1: ConvTranspose,
    deconv_s2_2: ConvTranspose,
}

fn torch_conv3d(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    vb: VarBuilder,
) -> Result<Conv> {
    Conv::new(
        cin,
        cout,
        &[k; 3],
        &[stride; 3],
        Padding::Explicit([[pad; 2]; 3]),
        ParamSpec::torch(cin * k * k * k),
        vb,
    )
}

fn torch_deconv2d(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    vb: VarBuilder,
) -> Result<ConvTranspose> {
    // PyTorch's ConvTranspose fan-in comes from weight dim 1 (out channels).
    ConvTranspose::new(
        cin,
        cout,
        &[k, k],
        &[stride, stride],
        Crop::Symmetric(pad),
        ParamSpec::torch(cout * k * k),
        vb,
    )
}

impl ConvDeconv {
    /// Builds the network; parameter names are the original's `state_dict` keys. An invalid
    /// config ([`ConvDeconvConfig::validate`]) or a weight too large to allocate is an error.
    pub fn new(cfg: ConvDeconvConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::wrap)?;
        let mut encoder = Vec::with_capacity(cfg.encoder_channels.len());
        let mut cin = 1;
        for (i, &c) in cfg.encoder_channels.iter().enumerate() {
            let down = torch_conv3d(cin, c, 4, 2, 1, vb.pp(format!("conv3d_s2_{}", i + 1)))?;
            let mix = torch_conv3d(c, c, 1, 1, 0, vb.pp(format!("conv3d_s1_{}", i + 1)))?;
            encoder.push(EncoderScale { down, mix });
            cin = c;
        }
        let m = cfg.bottleneck_image_size();
        let skip_to = |resolution: usize| -> Result<Option<Skip>> {
            match cfg.skip_scale(resolution) {
                Some(scale) => Ok(Some(Skip {
                    scale,
                    reduce: torch_conv3d(
                        cfg.encoder_channels[scale],
                        cfg.skip_channels,
                        1,
                        1,
                        0,
                        vb.pp(format!("skip_{}", scale + 1)),
                    )?,
                })),
                None => Ok(None),
            }
        };
        // `validate` bounds M, so 2·M and the decoder's input channels do not overflow.
        let skip_bottleneck = skip_to(m)?;
        let skip_upsampled = skip_to(2 * m)?;
        let [in1, in2] = cfg.decoder_inputs().map_err(candle_core::Error::wrap)?;
        let [d1, d2] = cfg.decoder_channels;
        let deconv_s2_1 = torch_deconv2d(in1, d1, 4, 2, 1, vb.pp("deconv2d_s2_1"))?;
        let deconv_s1_1 = torch_deconv2d(in2, d2, 1, 1, 0, vb.pp("deconv2d_s1_1"))?;
        let deconv_s2_2 = torch_deconv2d(d2, 1, 4, 2, 1, vb.pp("deconv2d_s2_2"))?;
        Ok(Self {
            cfg,
            encoder,
            pool: MaxPool3d::new(3, 1, 1),
            skip_bottleneck,
            skip_upsampled,
            deconv_s2_1,
            deconv_s1_1,
            deconv_s2_2,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ConvDeconvConfig {
        &self.cfg
    }

    /// Appends a skip's features (if any) to `x` `[B, C, R, R]` along channels.
    fn with_skip(x: Tensor, skip: &Option<Skip>, features: &[Tensor]) -> Result<Tensor> {
        match skip {
            Some(skip) => {
                let source = features.get(skip.scale).ok_or_else(|| {
                    candle_core::Error::Msg("convdeconv: missing skip features".into())
                })?;
                let folded = fold_into_channels(&skip.reduce.forward(source)?, DEPTH_AXIS)?;
                Tensor::cat(&[&x, &folded], 1)
            }
            None => Ok(x),
        }
    }

    /// Describes every layer with its output shape for a batch of `batch`, without running
    /// any convolution.
    pub fn summary(&self, batch: usize) -> Result<Summary> {
        let name = match self.cfg.version {
            ConvDeconvVersion::V001 => "ConvDeconv",
            ConvDeconvVersion::V002 => "ConvDeconv v002",
        };
        let mut s = Summary::new(name, &self.cfg.input_dims(batch));
        let mut dims = s.input_shape.clone();
        let mut scale_dims = Vec::new();
        for (i, scale) in self.encoder.iter().enumerate() {
            dims = scale.down.output_dims(&dims)?;
            s.push(
                &format!("conv3d_s2_{}", i + 1),
                "Conv3d",
                &dims,
                scale.down.param_count(),
            );
            s.push(&format!("pool_{}", i + 1), "MaxPool3d", &dims, 0);
            dims = scale.mix.output_dims(&dims)?;
            s.push(
                &format!("conv3d_s1_{}", i + 1),
                "Conv3d",
                &dims,
                scale.mix.param_count(),
            );
            scale_dims.push(dims.clone());
        }
        let m = self.cfg.bottleneck_image_size();
        dims = vec![batch, dims[1], m, m];
        s.push("reshape", "Reshape", &dims, 0);
        let add_skip =
            |s: &mut Summary, dims: &mut Vec<usize>, skip: &Option<Skip>| -> Result<()> {
                if let Some(skip) = skip {
                    let reduced = skip.reduce.output_dims(&scale_dims[skip.scale])?;
                    let folded = folded_dims(&reduced, DEPTH_AXIS)?;
                    s.push(
                        &format!("skip_{}", skip.scale + 1),
                        "Conv3d+Fold",
                        &folded,
                        skip.reduce.param_count(),
                    );
                    dims[1] += folded[1];
                    s.push("concat", "Concat", dims, 0);
                }
                Ok(())
            };
        add_skip(&mut s, &mut dims, &self.skip_bottleneck)?;
        dims = self.deconv_s2_1.output_dims(&dims)?;
        s.push(
            "deconv2d_s2_1",
            "ConvTranspose2d",
            &dims,
            self.deconv_s2_1.param_count(),
        );
        add_skip(&mut s, &mut dims, &self.skip_upsampled)?;
        dims = self.deconv_s1_1.output_dims(&dims)?;
        s.push(
            "deconv2d_s1_1",
            "ConvTranspose2d",
            &dims,
            self.deconv_s1_1.param_count(),
        );
        dims = self.deconv_s2_2.output_dims(&dims)?;
        s.push(
            "deconv2d_s2_2",
            "ConvTranspose2d",
            &dims,
            self.deconv_s2_2.param_count(),
        );
        Ok(s)
    }
}

impl Module for ConvDeconv {
    /// `[B, 1, S, S, S]` → `[B, 1, 4M, 4M]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.cfg.input_size;
        match x.dims() {
            [_, 1, d, h, w] if [*d, *h, *w] == [s, s, s] => {}
            dims => bail!("convdeconv: expected input [B, 1, {s}, {s}, {s}], got {dims:?}"),
        }
        let slope = self.cfg.negative_slope;
        let mut x = x.clone();
        let mut features = Vec::with_capacity(self.encoder.len());
        for scale in &self.encoder {
            x = scale.down.forward_leaky_max_pool(&x, slope, &self.pool)?;
            x = scale.mix.forward_leaky(&x, slope)?;
            features.push(x.clone());
        }
        let x = bottleneck_to_image(&x)?;
        let x = Self::with_skip(x, &self.skip_bottleneck, &features)?;
        let x = self.deconv_s2_1.forward_leaky(&x, slope)?;
        let x = Self::with_skip(x, &self.skip_upsampled, &features)?;
        let x = self.deconv_s1_1.forward_leaky(&x, slope)?;
        self.deconv_s2_2.forward(&x)
    }
}

/// The original's bottleneck reshape: `[B, C, N, N, N]` → `[B, C, M, M]` row-major with
/// `M² = N³` (`torch.reshape(x, [-1, C, M, M])`): voxel `(d, h, w)` lands at row
/// `(d·N² + h·N + w) / M`, column `(d·N² + h·N + w) mod M`.
pub fn bottleneck_to_image(x: &Tensor) -> Result<Tensor> {
    let (b, c, d, h, w) = x.dims5()?;
    let voxels = d * h * w;
    let m = (voxels as f64).sqrt().round() as usize;
    if m * m != voxels {
        bail!("convdeconv: a {d}×{h}×{w} bottleneck has {voxels} voxels, not a square number");
    }
    x.reshape((b, c, m, m))
}
