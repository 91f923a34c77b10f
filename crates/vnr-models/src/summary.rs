//! Layer-by-layer model summaries printed like `torchinfo.summary`.
//!
//! Each model computes its summary from its layers' shape arithmetic (no convolution runs), so
//! describing the 256³ ConvDeconv is instant; tests check the result against real forwards of
//! small configurations.

use std::fmt;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

/// One row of a [`Summary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSummary {
    /// Parameter path of the layer (its checkpoint key prefix), e.g. `conv3d_s2_1`.
    pub name: String,
    /// Layer type, e.g. `Conv3d`.
    pub kind: String,
    /// Output shape for the summary's input.
    pub output_shape: Vec<usize>,
    /// Parameters owned by this layer.
    pub params: usize,
}

/// A model's layers with output shapes and parameter counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Model name, e.g. `ConvDeconv`.
    pub model: String,
    /// Input shape the shapes were computed for.
    pub input_shape: Vec<usize>,
    /// Final output shape.
    pub output_shape: Vec<usize>,
    /// Layers in execution order.
    pub layers: Vec<LayerSummary>,
}

impl Summary {
    /// An empty summary of `model` for `input_shape`.
    pub fn new(model: impl Into<String>, input_shape: &[usize]) -> Self {
        Self {
            model: model.into(),
            input_shape: input_shape.to_vec(),
            output_shape: input_shape.to_vec(),
            layers: Vec::new(),
        }
    }

    /// Appends a layer; its output becomes the model's output so far.
    pub fn push(&mut self, name: &str, kind: &str, output_shape: &[usize], params: usize) {
        self.output_shape = output_shape.to_vec();
        self.layers.push(LayerSummary {
            name: name.to_string(),
            kind: kind.to_string(),
            output_shape: output_shape.to_vec(),
            params,
        });
    }

    /// Sum of all layers' parameters.
    pub fn total_params(&self) -> usize {
        self.layers.iter().map(|l| l.params).sum()
    }

    /// Trainable parameters: every parameter of these models is trained.
    pub fn trainable_params(&self) -> usize {
        self.total_params()
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn shape_text(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("[{}]", parts.join(", "))
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = "=".repeat(100);
        writeln!(f, "{rule}")?;
        writeln!(
            f,
            "{:<56}{:<30}Param #",
            "Layer (type: name)", "Output Shape"
        )?;
        writeln!(f, "{rule}")?;
        writeln!(
            f,
            "{:<56}{:<30}--",
            self.model,
            shape_text(&self.output_shape)
        )?;
        for layer in &self.layers {
            let params = if layer.params == 0 {
                "--".to_string()
            } else {
                thousands(layer.params)
            };
            writeln!(
                f,
                "{:<56}{:<30}{params}",
                format!("├─{}: {}", layer.kind, layer.name),
                shape_text(&layer.output_shape)
            )?;
        }
        writeln!(f, "{rule}")?;
        writeln!(f, "Input shape: {}", shape_text(&self.input_shape))?;
        writeln!(f, "Total params: {}", thousands(self.total_params()))?;
        writeln!(
            f,
            "Trainable params: {}",
            thousands(self.trainable_params())
        )?;
        writeln!(
            f,
            "Non-trainable params: {}",
            thousands(self.total_params() - self.trainable_params())
        )?;
        write!(f, "{rule}")
    }
}

/// A `VarBuilder` whose every parameter is a zero broadcast to the requested shape: no memory
/// per parameter, so a model of any size can be built for its [`Summary`] (parameter counts
/// and shapes) without allocating or initialising its weights. Not for running the model.
pub fn shape_only_var_builder(dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(BroadcastZeros), dtype, device.clone())
}

/// The backend of [`shape_only_var_builder`].
struct BroadcastZeros;

impl SimpleBackend for BroadcastZeros {
    fn get(
        &self,
        s: Shape,
        _: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("shape-only parameters have no stored tensor `{name}`")
    }

    // "Present", so that layers which derive a fresh parameter from another (weight norm's
    // g from v) do not write into the shared zero.
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}
