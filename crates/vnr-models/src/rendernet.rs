//! RenderNet's shader network (Nguyen-Phuoc et al. 2018, `render/RenderNet_Shader.py`), its
//! losses, and the Phong shading of predicted normal maps (`tools/Phong_shading.py`).
//!
//! # Pipeline
//! Voxels `[B, 1, 64, 64, 64]` and view parameters `[B, 3]` are resampled into camera space
//! `[B, 1, 128, 128, 128]` by [`vnr_render::rendernet::resample_to_camera`], then aligned with
//! the image ([`align_to_image`], the original's `tf_transform_voxel_to_match_image`: swap
//! the first two spatial axes and flip the new first one). Axes are then (image row, image
//! column, depth) = `[D, H, W]` of our `[B, C, D, H, W]`, the original's `[B, d1, d2, d3, C]`.
//!
//! # Network (all convolutions TensorFlow "SAME", asymmetric padding reproduced)
//! `e_conv1` 3D k5 s2 → 8, `e_conv2` k3 stride `(1, 1, 2)` (stride 2 on the depth axis only)
//! → 16, `e_conv3` k3 → 32, each PReLU + dropout; 10 residual 3D blocks `res1_i` (conv →
//! ReLU → conv, + input, no activation after the add: the original `res_block_3d` uses ReLU
//! inside); `res1_skip` conv + the `e_conv3` output; the projection unit folds depth into
//! channels (`[B, 32, 64, 64, 32]` → `[B, 1024, 64, 64]`, feature index `d·C + c`), then
//! `e_conv4` 1×1 conv → PReLU → dropout; 10 residual 2D blocks `res2_i` + `res2_skip`;
//! `e_conv5` k4 → 512, PReLU, dropout; 5 blocks `res3_i` + `res3_skip`; `e_conv6` k4 → 256;
//! transposed convs k4 `e_conv7` (128, s2), `e_conv7_1` (128, s1), `e_conv8` (64, s2),
//! `e_conv9` (32, s2), `e_conv10` (16, s1), each PReLU + dropout; `e_conv11` (1 grey or 3 RGB,
//! s1) → sigmoid: a 512×512 image `[B, C, 512, 512]` (rows, columns).
//!
//! # Parameter names
//! The original TensorFlow variable names with `/` written `.`: `encoder.e_conv1.e_conv1.weights`
//! / `.biases`, PReLU slopes `encoder.e_conv1.alpha`, residual blocks
//! `encoder.res1_1.con1_3X3.weights` and `encoder.res1_1.conv2_3x3.weights`, skips
//! `encoder.res1_skip.con1_3X3.weights`, the last layer `encoder.e_conv11.weights`. Kernels
//! are stored in PyTorch's layout: a TF conv kernel `[kd, kh, kw, in, out]` converts with
//! `transpose(4, 3, 0, 1, 2)` (2D `[kh, kw, in, out]`: `(3, 2, 0, 1)`), a `conv2d_transpose`
//! kernel `[kh, kw, out, in]` with `(3, 2, 0, 1)`. The projection unit's own source
//! (`layer_util.projection_unit`) is not in the public repository; it follows the inline
//! version left commented out in `RenderNet_Shader.py` (`e_conv4`: `slim.conv2d` 1×1, PReLU,
//! dropout), so its names are `encoder.e_conv4.e_conv4.weights` and `encoder.e_conv4.alpha`.
//! Init: Xavier-uniform kernels; biases 0.001 for `layer_util` layers (3D convs, residual
//! blocks) and 0 for `slim` layers (2D convs and transposed convs); PReLU slopes 0.

use candle_core::{bail, Module, ModuleT, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vnr_ops::nn::dropout::{dropout, DropoutKeys};
use vnr_render::rendernet::{resample_to_camera, ResampleConfig};

use crate::config::{parse_json, read_text};
use crate::layers::{
    fold_into_channels, folded_dims, Conv, ConvTranspose, Crop, Padding, ParamSpec,
};
use crate::limits::{at_most, MAX_BLOCKS, MAX_CHANNELS, MAX_GRID_SIDE, MAX_IMAGE_SIDE};
use crate::summary::Summary;
use crate::ConfigError;

/// The image-aligned grid's depth axis (`W` of `[B, C, D, H, W]`, the original's `d3`).
const DEPTH_AXIS: usize = 4;

/// Names of the five PReLU transposed convolutions, in order.
const DECONV_NAMES: [&str; 5] = ["e_conv7", "e_conv7_1", "e_conv8", "e_conv9", "e_conv10"];

/// RenderNet hyper-parameters. `Default` is the original shader (greyscale, as
/// `config_RenderNet.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenderNetConfig {
    /// Side of the input voxel grid (the original: 64).
    pub voxel_size: usize,
    /// Side of the camera-space grid the voxels are resampled into (the original: 128).
    pub resampled_size: usize,
    /// Reproduce the original resampling's dropped last slice (see `vnr_render::rendernet`).
    pub drop_last_slice: bool,
    /// Channels of `e_conv1`, `e_conv2`, `e_conv3`.
    pub conv3d_channels: [usize; 3],
    /// Residual 3D blocks (`res1_*`).
    pub res3d_blocks: usize,
    /// Channels of `e_conv4` (the projection unit's 1×1 conv) and of `res2_*`.
    pub projection_channels: usize,
    /// Residual 2D blocks after the projection (`res2_*`).
    pub res2d_blocks: usize,
    /// Channels of `e_conv5` and `res3_*`.
    pub conv5_channels: usize,
    /// Residual 2D blocks after `e_conv5` (`res3_*`).
    pub res_mid_blocks: usize,
    /// Channels of `e_conv6`.
    pub conv6_channels: usize,
    /// Channels of `e_conv7`, `e_conv7_1`, `e_conv8`, `e_conv9`, `e_conv10`.
    pub deconv_channels: [usize; 5],
    /// Strides of those five transposed convolutions.
    pub deconv_strides: [usize; 5],
    /// Output channels: 1 (greyscale, BCE loss) or 3 (RGB or normal map, MSE loss).
    pub out_channels: usize,
    /// Dropout keep probability in train mode (the released configs: 1.0, no dropout).
    pub keep_prob: f64,
    /// Seed of the dropout masks.
    pub dropout_seed: u64,
}

impl Default for RenderNetConfig {
    fn default() -> Self {
        Self {
            voxel_size: 64,
            resampled_size: 128,
            drop_last_slice: true,
            conv3d_channels: [8, 16, 32],
            res3d_blocks: 10,
            projection_channels: 1024,
            res2d_blocks: 10,
            conv5_channels: 512,
            res_mid_blocks: 5,
            conv6_channels: 256,
            deconv_channels: [128, 128, 64, 32, 16],
            deconv_strides: [2, 1, 2, 2, 1],
            out_channels: 1,
            keep_prob: 1.0,
            dropout_seed: 0,
        }
    }
}

impl RenderNetConfig {
    /// The original shader predicting RGB (or a normal map, as the released Phong model).
    pub fn rgb() -> Self {
        Self {
            out_channels: 3,
            ..Self::default()
        }
    }

    /// A small RenderNet that trains on two CPU cores in minutes: 32³ voxels resampled to
    /// 64³, channels 4/8/8, 2 + 2 + 2 residual blocks, projection 64, a 128×128 image.
    pub fn small() -> Self {
        Self {
            voxel_size: 32,
            resampled_size: 64,
            drop_last_slice: true,
            conv3d_channels: [4, 8, 8],
            res3d_blocks: 2,
            projection_channels: 64,
            res2d_blocks: 2,
            conv5_channels: 32,
            res_mid_blocks: 2,
            conv6_channels: 16,
            deconv_channels: [16, 16, 8, 8, 8],
            deconv_strides: [2, 1, 2, 1, 1],
            out_channels: 1,
            keep_prob: 1.0,
            dropout_seed: 0,
        }
    }

    /// A named preset: `rendernet`, `rendernet-rgb`, `rendernet-small`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "rendernet" | "default" => Some(Self::default()),
            "rendernet-rgb" | "rgb" => Some(Self::rgb()),
            "rendernet-small" | "small" => Some(Self::small()),
            _ => None,
        }
    }

    /// The original's config JSON (`config_RenderNet.json`): `is_greyscale` ("True"/"False",
    /// as the original compares `.lower() == "true"`; absent: RGB) picks the output channels
    /// and `keep_prob` the dropout; training fields (paths, rates, epochs) belong to the
    /// trainer and are ignored. Other fields keep the reference architecture.
    pub fn from_original(text: &str, what: &str) -> std::result::Result<Self, ConfigError> {
        let root: Value = parse_json(text, what)?;
        let root = root
            .as_object()
            .ok_or_else(|| ConfigError::field(what, "(root)", "must be a JSON object"))?;
        let greyscale = match root.get("is_greyscale") {
            None => false,
            Some(Value::String(s)) => s.to_lowercase() == "true",
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(ConfigError::field(
                    what,
                    "is_greyscale",
                    format!("must be \"True\" or \"False\", got {other}"),
                ))
            }
        };
        let keep_prob = match root.get("keep_prob") {
            None => 1.0,
            Some(v) => v.as_f64().ok_or_else(|| {
                ConfigError::field(what, "keep_prob", format!("must be a number, got {v}"))
            })?,
        };
        let cfg = Self {
            out_channels: if greyscale { 1 } else { 3 },
            keep_prob,
            ..Self::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads the original's config JSON file.
    pub fn from_original_file(path: &std::path::Path) -> std::result::Result<Self, ConfigError> {
        Self::from_original(&read_text(path)?, &path.display().to_string())
    }

    /// Reads either a JSON file of this struct or the original's config JSON (tried in that
    /// order; the struct refuses unknown fields, so an original config falls through).
    /// A `.toml` file is read as this struct only.
    pub fn from_file(path: &std::path::Path) -> std::result::Result<Self, ConfigError> {
        if crate::config::is_toml(path) {
            let cfg: Self = crate::config::read_struct(path)?;
            cfg.validate()?;
            return Ok(cfg);
        }
        let text = read_text(path)?;
        let what = path.display().to_string();
        match parse_json::<Self>(&text, &what) {
            Ok(cfg) => {
                cfg.validate()?;
                Ok(cfg)
            }
            Err(as_struct) => Self::from_original(&text, &what).map_err(|as_original| {
                ConfigError::invalid(format!(
                    "{what} is neither a RenderNetConfig ({as_struct}) nor an original RenderNet config ({as_original})"
                ))
            }),
        }
    }

    /// Depth of the grid at the projection unit: halved by `e_conv1` and by `e_conv2`'s
    /// depth stride.
    pub fn projection_depth(&self) -> usize {
        self.resampled_size.div_ceil(2).div_ceil(2)
    }

    /// Side of the output image; saturates for sizes that [`Self::validate`] refuses.
    pub fn output_size(&self) -> usize {
        self.deconv_strides
            .iter()
            .fold(self.resampled_size.div_ceil(2), |size, s| {
                size.saturating_mul(*s)
            })
    }

    /// Checks sizes, channels and `keep_prob`. Channel counts are at most [`MAX_CHANNELS`],
    /// `voxel_size` and `resampled_size` at most [`MAX_GRID_SIDE`], each stage's residual
    /// blocks at most [`MAX_BLOCKS`] and the output image side at most [`MAX_IMAGE_SIDE`].
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        let channels = self
            .conv3d_channels
            .iter()
            .chain(&self.deconv_channels)
            .chain([
                &self.projection_channels,
                &self.conv5_channels,
                &self.conv6_channels,
                &self.out_channels,
            ]);
        if channels.clone().any(|&c| c == 0) {
            return Err(ConfigError::invalid(
                "rendernet: channel counts must be positive",
            ));
        }
        // Caps: with them the products below (folded projection channels `depth · C`, kernel
        // fan-ins, the output side) cannot overflow, and the block loops are bounded.
        for &c in channels {
            at_most("rendernet: a channel count", c, MAX_CHANNELS)?;
        }
        at_most("rendernet: voxel_size", self.voxel_size, MAX_GRID_SIDE)?;
        at_most(
            "rendernet: resampled_size",
            self.resampled_size,
            MAX_GRID_SIDE,
        )?;
        for (name, blocks) in [
            ("rendernet: res3d_blocks", self.res3d_blocks),
            ("rendernet: res2d_blocks", self.res2d_blocks),
            ("rendernet: res_mid_blocks", self.res_mid_blocks),
        ] {
            at_most(name, blocks, MAX_BLOCKS)?;
        }
        if self.deconv_strides.contains(&0) {
            return Err(ConfigError::invalid(
                "rendernet: deconv strides must be positive",
            ));
        }
        if self.voxel_size == 0 || self.resampled_size < 2 {
            return Err(ConfigError::invalid(
                "rendernet: voxel_size must be ≥ 1 and resampled_size ≥ 2",
            ));
        }
        if !(self.keep_prob > 0.0 && self.keep_prob <= 1.0) {
            return Err(ConfigError::invalid(format!(
                "rendernet: keep_prob {} must be in (0, 1]",
                self.keep_prob
            )));
        }
        at_most(
            &format!(
                "rendernet: the output image side (deconv_strides {:?})",
                self.deconv_strides
            ),
            self.output_size(),
            MAX_IMAGE_SIDE,
        )
        .map(|_| ())
    }
}

/// Residual block: conv → ReLU → conv, plus the input (2D or 3D, k3 SAME).
#[derive(Debug, Clone)]
struct ResBlock {
    conv1: Conv,
    conv2: Conv,
}

impl ResBlock {
    fn new(channels: usize, rank: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: tf_conv(
                channels,
                channels,
                3,
                &vec![1; rank],
                0.001,
                vb.pp("con1_3X3"),
            )?,
            conv2: tf_conv(
                channels,
                channels,
                3,
                &vec![1; rank],
                0.001,
                vb.pp("conv2_3x3"),
            )?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // ReLU fused with conv1's bias: LeakyReLU with slope 0, gradient 0 at 0 as PyTorch's;
        // conv2's bias fused with the residual add.
        self.conv2
            .forward_residual(&self.conv1.forward_leaky(x, 0.0)?, x)
    }

    fn param_count(&self) -> usize {
        self.conv1.param_count() + self.conv2.param_count()
    }
}

/// Residual blocks followed by a skip conv added to the stage's input.
#[derive(Debug, Clone)]
struct ResStage {
    name: String,
    blocks: Vec<ResBlock>,
    skip: Conv,
}

impl ResStage {
    /// `blocks` blocks `{prefix}_{i}` and the skip `{prefix}_skip.con1_3X3`; the 2D skips
    /// are `slim.conv2d` (bias init 0), the 3D one `layer_util.conv3d` (0.001).
    fn new(
        prefix: &str,
        channels: usize,
        blocks: usize,
        rank: usize,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let blocks = (1..=blocks)
            .map(|i| ResBlock::new(channels, rank, vb.pp(format!("{prefix}_{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let bias = if rank == 3 { 0.001 } else { 0.0 };
        let skip = tf_conv(
            channels,
            channels,
            3,
            &vec![1; rank],
            bias,
            vb.pp(format!("{prefix}_skip")).pp("con1_3X3"),
        )?;
        Ok(Self {
            name: prefix.to_string(),
            blocks,
            skip,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        for block in &self.blocks {
            y = block.forward(&y)?;
        }
        self.skip.forward_residual(&y, x)
    }

    fn describe(&self, s: &mut Summary, dims: &[usize]) {
        for (i, block) in self.blocks.iter().enumerate() {
            s.push(
                &format!("{}_{}", self.name, i + 1),
                "ResBlock",
                dims,
                block.param_count(),
            );
        }
        s.push(
            &format!("{}_skip", self.name),
            "Conv+Add",
            dims,
            self.skip.param_count(),
        );
    }
}

/// A TF "SAME" convolution with a cubic/square kernel `k`, Xavier init and constant bias.
fn tf_conv(
    cin: usize,
    cout: usize,
    k: usize,
    stride: &[usize],
    bias: f64,
    vb: VarBuilder,
) -> Result<Conv> {
    let rank = stride.len();
    let taps = k.pow(rank as u32);
    let kernel = vec![k; rank];
    Conv::new(
        cin,
        cout,
        &kernel,
        stride,
        Padding::TfSame,
        ParamSpec::tf(cin * taps, cout * taps, bias),
        vb,
    )
}

/// A TF `conv2d_transpose(padding="SAME")` (k4, `slim`: Xavier init, bias 0).
fn tf_deconv(cin: usize, cout: usize, stride: usize, vb: VarBuilder) -> Result<ConvTranspose> {
    ConvTranspose::new(
        cin,
        cout,
        &[4, 4],
        &[stride, stride],
        Crop::TfSame,
        ParamSpec::tf(cout * 16, cin * 16, 0.0),
        vb,
    )
}

/// PReLU slopes `[C]` with TensorFlow's variable name `alpha`, initialised to 0.
fn tf_prelu(channels: usize, vb: VarBuilder) -> Result<Tensor> {
    vb.get_with_hints(channels, "alpha", Init::Const(0.0))
}

/// A convolution (or transposed convolution) followed by PReLU and dropout.
#[derive(Debug, Clone)]
struct ActivatedConv<L> {
    name: String,
    layer: L,
    /// PReLU slopes `[C]`.
    alpha: Tensor,
}

/// What [`ActivatedConv`] needs of its layer.
trait ShapedLayer {
    /// `PReLU(layer(x) + bias)`, the bias fused into the activation.
    fn forward_prelu(&self, x: &Tensor, alpha: &Tensor) -> Result<Tensor>;
    fn output_dims(&self, input: &[usize]) -> Result<Vec<usize>>;
    fn param_count(&self) -> usize;
}

impl ShapedLayer for Conv {
    fn forward_prelu(&self, x: &Tensor, alpha: &Tensor) -> Result<Tensor> {
        Conv::forward_prelu(self, x, alpha)
    }
    fn output_dims(&self, input: &[usize]) -> Result<Vec<usize>> {
        Conv::output_dims(self, input)
    }
    fn param_count(&self) -> usize {
        Conv::param_count(self)
    }
}

impl ShapedLayer for ConvTranspose {
    fn forward_prelu(&self, x: &Tensor, alpha: &Tensor) -> Result<Tensor> {
        ConvTranspose::forward_prelu(self, x, alpha)
    }
    fn output_dims(&self, input: &[usize]) -> Result<Vec<usize>> {
        ConvTranspose::output_dims(self, input)
    }
    fn param_count(&self) -> usize {
        ConvTranspose::param_count(self)
    }
}

impl<L: ShapedLayer> ActivatedConv<L> {
    /// Layer under `encoder.{name}.{name}`, slope under `encoder.{name}.alpha`.
    fn new(
        name: &str,
        channels: usize,
        vb: &VarBuilder,
        make: impl FnOnce(VarBuilder) -> Result<L>,
    ) -> Result<Self> {
        let scope = vb.pp(name);
        Ok(Self {
            name: name.to_string(),
            layer: make(scope.pp(name))?,
            alpha: tf_prelu(channels, scope)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        dropout_keys: &DropoutKeys,
        drop_prob: f64,
        train: bool,
    ) -> Result<Tensor> {
        let y = self.layer.forward_prelu(x, &self.alpha)?;
        if !train || drop_prob == 0.0 {
            return Ok(y);
        }
        dropout(&y, drop_prob, dropout_keys.next_key())
    }

    fn describe(&self, s: &mut Summary, dims: &[usize], kind: &str) -> Result<Vec<usize>> {
        let out = self.layer.output_dims(dims)?;
        s.push(
            &self.name,
            kind,
            &out,
            self.layer.param_count() + self.alpha.elem_count(),
        );
        Ok(out)
    }
}

/// The RenderNet shader network.
#[derive(Debug, Clone)]
pub struct RenderNet {
    cfg: RenderNetConfig,
    conv3d: Vec<ActivatedConv<Conv>>,
    res1: ResStage,
    projection: ActivatedConv<Conv>,
    res2: ResStage,
    conv5: ActivatedConv<Conv>,
    res3: ResStage,
    conv6: ActivatedConv<Conv>,
    deconvs: Vec<ActivatedConv<ConvTranspose>>,
    output: ConvTranspose,
    dropout_keys: DropoutKeys,
}

impl RenderNet {
    /// Builds the network with the original's variable names (see the module docs). An
    /// invalid config ([`RenderNetConfig::validate`]) or a weight too large to allocate is an
    /// error.
    pub fn new(cfg: RenderNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::wrap)?;
        let vb = vb.pp("encoder");
        let [c1, c2, c3] = cfg.conv3d_channels;
        let conv3d = vec![
            ActivatedConv::new("e_conv1", c1, &vb, |v| {
                tf_conv(1, c1, 5, &[2, 2, 2], 0.001, v)
            })?,
            ActivatedConv::new("e_conv2", c2, &vb, |v| {
                tf_conv(c1, c2, 3, &[1, 1, 2], 0.001, v)
            })?,
            ActivatedConv::new("e_conv3", c3, &vb, |v| {
                tf_conv(c2, c3, 3, &[1, 1, 1], 0.001, v)
            })?,
        ];
        let res1 = ResStage::new("res1", c3, cfg.res3d_blocks, 3, &vb)?;
        // `validate` caps the depth and `c3`, so this cannot overflow.
        let folded = cfg.projection_depth() * c3;
        let p = cfg.projection_channels;
        let projection = ActivatedConv::new("e_conv4", p, &vb, |v| {
            tf_conv(folded, p, 1, &[1, 1], 0.0, v)
        })?;
        let res2 = ResStage::new("res2", p, cfg.res2d_blocks, 2, &vb)?;
        let c5 = cfg.conv5_channels;
        let conv5 = ActivatedConv::new("e_conv5", c5, &vb, |v| tf_conv(p, c5, 4, &[1, 1], 0.0, v))?;
        let res3 = ResStage::new("res3", c5, cfg.res_mid_blocks, 2, &vb)?;
        let c6 = cfg.conv6_channels;
        let conv6 =
            ActivatedConv::new("e_conv6", c6, &vb, |v| tf_conv(c5, c6, 4, &[1, 1], 0.0, v))?;
        let mut deconvs = Vec::with_capacity(DECONV_NAMES.len());
        let mut cin = c6;
        for ((name, &cout), &stride) in DECONV_NAMES
            .iter()
            .zip(&cfg.deconv_channels)
            .zip(&cfg.deconv_strides)
        {
            deconvs.push(ActivatedConv::new(name, cout, &vb, |v| {
                tf_deconv(cin, cout, stride, v)
            })?);
            cin = cout;
        }
        let output = tf_deconv(cin, cfg.out_channels, 1, vb.pp("e_conv11"))?;
        let dropout_keys = DropoutKeys::new(cfg.dropout_seed);
        Ok(Self {
            cfg,
            conv3d,
            res1,
            projection,
            res2,
            conv5,
            res3,
            conv6,
            deconvs,
            output,
            dropout_keys,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RenderNetConfig {
        &self.cfg
    }

    /// Restarts the dropout masks from `seed`.
    pub fn reseed_dropout(&self, seed: u64) {
        self.dropout_keys.reseed(seed);
    }

    fn resample_config(&self) -> ResampleConfig {
        ResampleConfig {
            out_size: self.cfg.resampled_size,
            drop_last_slice: self.cfg.drop_last_slice,
        }
    }

    /// The original graph end to end: voxels `[B, 1, V, V, V]` and view parameters `[B, 3]`
    /// (`φ, θ, s`, see `vnr_render::rendernet::RenderNetPose::view_params`) → image
    /// `[B, C, H, W]`. Differentiable in the voxels and the pose.
    pub fn forward_voxels(
        &self,
        voxels: &Tensor,
        view_params: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let v = self.cfg.voxel_size;
        match voxels.dims() {
            [_, 1, d, h, w] if [*d, *h, *w] == [v, v, v] => {}
            dims => bail!("rendernet: expected voxels [B, 1, {v}, {v}, {v}], got {dims:?}"),
        }
        let grid = resample_to_camera(voxels, view_params, &self.resample_config())?;
        self.forward_resampled(&grid, train)
    }

    /// From a grid already resampled into camera space (`resample_to_camera`'s output
    /// `[B, 1, N, N, N]`, not yet image-aligned).
    pub fn forward_resampled(&self, grid: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_aligned(&align_to_image(grid)?, train)
    }

    /// From an image-aligned grid `[B, 1, rows, cols, depth]` (the output of
    /// [`align_to_image`], or a crop of it in rows and columns for patch training).
    pub fn forward_aligned(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let depth = self.cfg.resampled_size;
        match x.dims() {
            [_, 1, _, _, d] if *d == depth => {}
            dims => bail!("rendernet: expected an image-aligned grid [B, 1, rows, cols, {depth}], got {dims:?}"),
        }
        let drop_prob = 1.0 - self.cfg.keep_prob;
        let keys = &self.dropout_keys;
        let mut x = x.clone();
        for layer in &self.conv3d {
            x = layer.forward(&x, keys, drop_prob, train)?;
        }
        let x = self.res1.forward(&x)?;
        let x = fold_into_channels(&x, DEPTH_AXIS)?;
        let x = self.projection.forward(&x, keys, drop_prob, train)?;
        let x = self.res2.forward(&x)?;
        let x = self.conv5.forward(&x, keys, drop_prob, train)?;
        let x = self.res3.forward(&x)?;
        let mut x = self.conv6.forward(&x, keys, drop_prob, train)?;
        for layer in &self.deconvs {
            x = layer.forward(&x, keys, drop_prob, train)?;
        }
        candle_nn::ops::sigmoid(&self.output.forward(&x)?)
    }

    /// Describes every layer for a batch of `batch` voxel grids, without running any
    /// convolution.
    pub fn summary(&self, batch: usize) -> Result<Summary> {
        let v = self.cfg.voxel_size;
        let n = self.cfg.resampled_size;
        let mut s = Summary::new("RenderNet", &[batch, 1, v, v, v]);
        let mut dims = vec![batch, 1, n, n, n];
        s.push("resample_to_camera", "Resample", &dims, 0);
        s.push("align_to_image", "Transpose+Flip", &dims, 0);
        for layer in &self.conv3d {
            dims = layer.describe(&mut s, &dims, "Conv3d+PReLU")?;
        }
        self.res1.describe(&mut s, &dims);
        dims = folded_dims(&dims, DEPTH_AXIS)?;
        s.push("projection_fold", "Fold(depth·C + c)", &dims, 0);
        dims = self.projection.describe(&mut s, &dims, "Conv2d+PReLU")?;
        self.res2.describe(&mut s, &dims);
        dims = self.conv5.describe(&mut s, &dims, "Conv2d+PReLU")?;
        self.res3.describe(&mut s, &dims);
        dims = self.conv6.describe(&mut s, &dims, "Conv2d+PReLU")?;
        for layer in &self.deconvs {
            dims = layer.describe(&mut s, &dims, "ConvTranspose2d+PReLU")?;
        }
        dims = self.output.output_dims(&dims)?;
        s.push(
            "e_conv11",
            "ConvTranspose2d+Sigmoid",
            &dims,
            self.output.param_count(),
        );
        Ok(s)
    }
}

impl ModuleT for RenderNet {
    /// [`RenderNet::forward_resampled`]: a camera-space grid `[B, 1, N, N, N]` → image.
    fn forward_t(&self, grid: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_resampled(grid, train)
    }
}

/// The original's `tf_transform_voxel_to_match_image`: swaps the first two spatial axes and
/// flips the new first one, so that axes are (image row, image column, depth).
/// `[B, C, D, H, W]` → `[B, C, H, D, W]` reversed along axis 2.
pub fn align_to_image(grid: &Tensor) -> Result<Tensor> {
    let swapped = grid.transpose(2, 3)?.contiguous()?;
    let rows = swapped.dim(2)?;
    let reversed: Vec<u32> = (0..rows as u32).rev().collect();
    let index = Tensor::from_vec(reversed, rows, grid.device())?;
    swapped.index_select(&index, 2)
}

/// RenderNet's greyscale loss: binary cross-entropy summed over each image, averaged over the
/// batch, with the original's `1e-6` inside the logarithms. `pred`, `target`: `[B, …]`.
pub fn bce_loss(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    let eps = 1e-6;
    let pos = target.mul(&(pred + eps)?.log()?)?;
    let neg = target
        .affine(-1.0, 1.0)?
        .mul(&pred.affine(-1.0, 1.0 + eps)?.log()?)?;
    let per_image = (pos + neg)?.flatten_from(1)?.sum(1)?.neg()?;
    per_image.mean_all()
}

/// RenderNet's RGB loss: the mean squared error over all elements.
pub fn mse_loss(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    pred.sub(target)?.sqr()?.mean_all()
}

/// The light direction of `tools/Phong_shading.py`'s `generate_light_pos(elevation,
/// azimuth)` (degrees): `(−sin e·cos a, cos e, −sin e·sin a)`. (The demo script defines its
/// own variant with `90 − elevation` and z up; this is the library function.)
pub fn generate_light_pos(elevation_deg: f64, azimuth_deg: f64) -> [f64; 3] {
    let (e, a) = (elevation_deg.to_radians(), azimuth_deg.to_radians());
    [-e.sin() * a.cos(), e.cos(), -e.sin() * a.sin()]
}

/// Background of a normal map, for the soft foreground mask of [`phong_composite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Background {
    /// Mask `sigmoid(255·‖n‖ − 150)` (`np_mask`, the default of `np_phong_composite`).
    #[default]
    Black,
    /// Mask `sigmoid(255·‖1 − n‖ − 80)` (`np_mask_white`).
    White,
}

/// Parameters of [`phong_composite`]; `Default` is the demo's (ambient 0.1, k_diffuse 0.9,
/// white light, black background, masked).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PhongParams {
    /// Ambient term.
    pub ambient: f64,
    /// Diffuse reflectivity.
    pub k_diffuse: f64,
    /// Light colour (RGB).
    pub light_colour: [f64; 3],
    /// Background of the normal map.
    pub background: Background,
    /// Composite onto a white background through the soft mask.
    pub with_mask: bool,
}

impl Default for PhongParams {
    fn default() -> Self {
        Self {
            ambient: 0.1,
            k_diffuse: 0.9,
            light_colour: [1.0; 3],
            background: Background::Black,
            with_mask: true,
        }
    }
}

/// `np_phong_composite`: shades normal maps `[B, 3, H, W]` in `[0, 1]` (normal `= 2·(n − 0.5)`
/// up to scale) lit from `light_dir` `[B, 3]` → images `[B, 3, H, W]` in `[0, 1]`:
/// diffuse `= clip(k_d · max(n̂·l̂, 0) · colour, 0, 1)`, then `mask·(ambient + diffuse) +
/// (1 − mask)` (or `ambient + diffuse` without mask), clipped to `[0, 1]`. Differentiable.
/// A pixel exactly at grey 0.5 has no direction (NaN in the original); here it gets no
/// diffuse light.
pub fn phong_composite(normals: &Tensor, light_dir: &Tensor, p: &PhongParams) -> Result<Tensor> {
    let (b, c, _, _) = normals.dims4()?;
    if c != 3 || light_dir.dims() != [b, 3] {
        bail!(
            "phong: expected normals [B, 3, H, W] and light directions [B, 3], got {:?} and {:?}",
            normals.dims(),
            light_dir.dims()
        );
    }
    let dtype = normals.dtype();
    let device = normals.device();
    let tiny = 1e-12;
    let centred = normals.affine(1.0, -0.5)?;
    let norm = centred.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(tiny)?;
    let unit = centred.broadcast_div(&norm)?;
    let light = light_dir.to_dtype(dtype)?;
    let light_norm = light.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(tiny)?;
    let light = light.broadcast_div(&light_norm)?.reshape((b, 3, 1, 1))?;
    let lambert = unit.broadcast_mul(&light)?.sum_keepdim(1)?.maximum(0.0)?;
    let colour = Tensor::new(&p.light_colour, device)?
        .to_dtype(dtype)?
        .reshape((1, 3, 1, 1))?;
    let diffuse = lambert
        .broadcast_mul(&colour)?
        .affine(p.k_diffuse, 0.0)?
        .clamp(0.0, 1.0)?;
    let lit = diffuse.affine(1.0, p.ambient)?;
    let composed = if p.with_mask {
        let (source, offset) = match p.background {
            Background::Black => (normals.clone(), 150.0),
            Background::White => (normals.affine(-1.0, 1.0)?, 80.0),
        };
        let magnitude = source.sqr()?.sum_keepdim(1)?.sqrt()?;
        let mask = candle_nn::ops::sigmoid(&magnitude.affine(255.0, -offset)?)?;
        lit.broadcast_mul(&mask)?
            .broadcast_add(&mask.affine(-1.0, 1.0)?)?
    } else {
        lit
    };
    composed.clamp(0.0, 1.0)
}
