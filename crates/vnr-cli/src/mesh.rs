//! `vnr mesh`: a trained DeepSDF decoder and a latent code → marching cubes on the decoded SDF
//! over `[-1, 1]³` → PLY or OBJ. Also the decoder loading and mesh writing `vnr sdf
//! reconstruct` shares.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use vnr_formats::mesh::{MeshFormat, TriangleMesh};
use vnr_formats::npz::{read_npy, NpyArray, NpyData};
use vnr_geom::normalize::Normalization;
use vnr_models::deepsdf::DeepSdfConfig;
use vnr_models::deepsdf_training::{checkpoint_tensors, decode_mesh, find_specs, TrainedDecoder};

/// Arguments of `vnr mesh`.
#[derive(Debug, clap::Args)]
pub struct MeshArgs {
    /// The trained decoder: a `model.safetensors`, a checkpoint folder, or a run directory (its
    /// newest checkpoint).
    #[arg(long)]
    pub decoder: PathBuf,
    /// The `specs.json` describing the decoder (default: the nearest one above `--decoder`).
    #[arg(long)]
    pub specs: Option<PathBuf>,
    /// The latent code: an `.npy` of `latent` float values (as `vnr sdf reconstruct
    /// --latent-out` writes).
    #[arg(long, required_unless_present = "index", conflicts_with = "index")]
    pub latent: Option<PathBuf>,
    /// Use training code number INDEX of the checkpoint (see the run's `scenes.json`).
    #[arg(long)]
    pub index: Option<usize>,
    #[command(flatten)]
    pub output: MeshOutput,
    #[command(flatten)]
    pub device: crate::device::DeviceOpt,
}

/// Grid and output options shared by `vnr mesh` and `vnr sdf reconstruct`.
#[derive(Debug, clap::Args)]
pub struct MeshOutput {
    /// The mesh to write (`.ply` or `.obj`), atomically.
    #[arg(long)]
    pub out: PathBuf,
    /// Grid points per axis over [-1, 1]³.
    #[arg(long, default_value_t = 256)]
    pub resolution: usize,
    /// Points decoded per batch.
    #[arg(long, default_value_t = 32_768)]
    pub batch: usize,
    /// DeepSDF's `NormalizationParameters/NAME.npz`: map the mesh back to the original
    /// mesh's units (default: the normalised space).
    #[arg(long)]
    pub normalization: Option<PathBuf>,
}

/// Loads the decoder of `decoder` (file, checkpoint or run) described by `specs` or the nearest
/// `specs.json` above it, onto `device`.
pub fn load_decoder(
    decoder: &Path,
    specs: Option<&Path>,
    device: &Device,
) -> Result<TrainedDecoder> {
    let tensors = checkpoint_tensors(decoder)?;
    let specs = match specs {
        Some(s) => s.to_owned(),
        None => find_specs(&tensors)
            .with_context(|| format!("no specs.json above {}: pass --specs", tensors.display()))?,
    };
    let cfg = DeepSdfConfig::from_specs_file(&specs)?;
    Ok(TrainedDecoder::load(cfg, &tensors, device)?)
}

/// Meshes `latent` `[latent]` with `trained` and writes it as `output` asks.
pub fn write_decoded_mesh(
    trained: &TrainedDecoder,
    latent: &Tensor,
    output: &MeshOutput,
) -> Result<()> {
    let format = MeshFormat::from_path(&output.out);
    if !matches!(format, Some(MeshFormat::Ply | MeshFormat::Obj)) {
        bail!("{}: the output must be .ply or .obj", output.out.display());
    }
    let mut mesh = decode_mesh(&trained.decoder, latent, output.resolution, output.batch)
        .context("decoding the SDF grid")?;
    if mesh.triangles.is_empty() {
        bail!("the decoded SDF has no zero crossing in [-1, 1]³: nothing to mesh");
    }
    if let Some(path) = &output.normalization {
        let n = Normalization::read_npz(path)?;
        mesh = TriangleMesh {
            positions: mesh.positions.iter().map(|&p| n.invert(p)).collect(),
            triangles: mesh.triangles,
        };
    }
    match format {
        Some(MeshFormat::Obj) => mesh.write_obj(&output.out),
        _ => mesh.write_ply(&output.out),
    }
    .with_context(|| format!("writing {}", output.out.display()))?;
    eprintln!(
        "{}: {} vertices, {} triangles",
        output.out.display(),
        mesh.positions.len(),
        mesh.triangles.len()
    );
    Ok(())
}

/// Writes a code `[latent]` as a float32 `.npy`.
pub fn write_latent(latent: &Tensor, path: &Path) -> Result<()> {
    let values = latent.flatten_all()?.to_vec1::<f32>()?;
    let array = NpyArray::new(vec![values.len()], NpyData::F32(values))?;
    vnr_formats::npz::write_npy(path, &array).with_context(|| format!("writing {}", path.display()))
}

fn read_latent(path: &Path, device: &Device) -> Result<Tensor> {
    let array = read_npy(path).with_context(|| format!("reading {}", path.display()))?;
    let values: Vec<f32> = match array.data() {
        NpyData::F32(v) => v.clone(),
        NpyData::F64(v) => v.iter().map(|&x| x as f32).collect(),
        _ => bail!(
            "{}: a latent code must be float32 or float64",
            path.display()
        ),
    };
    if values.iter().any(|v| !v.is_finite()) {
        bail!(
            "{}: the latent code holds a non-finite value",
            path.display()
        );
    }
    let len = values.len();
    Ok(Tensor::from_vec(values, len, device)?)
}

/// Runs `vnr mesh`.
pub fn run(args: &MeshArgs) -> Result<()> {
    let device = args.device.open()?;
    let trained = load_decoder(&args.decoder, args.specs.as_deref(), &device)?;
    let latent = match (&args.latent, args.index) {
        (Some(path), _) => read_latent(path, &device)?,
        (None, Some(index)) => trained.code(index)?,
        (None, None) => bail!("give --latent or --index"),
    };
    write_decoded_mesh(&trained, &latent, &args.output)
}
