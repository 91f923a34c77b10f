//! Writing OpenVDB files (version 224, with grid offsets) and building trees to write.

use std::collections::BTreeMap;
use std::path::Path;

use super::bytes::PutLe;
use super::compression::{compression_to_string, zip_chunk, COMPRESS_ACTIVE_MASK, COMPRESS_ZIP};
use super::error::{Result, VdbError};
use super::grid::{Grid, GridClass};
use super::metadata::{write_meta_map, MetaValue};
use super::read::{MAGIC, MAX_FILE_VERSION};
use super::transform::Transform;
use super::tree::{
    bit, set_bit, slot, slot_origin, BBox, Internal, Leaf, RootEntry, Tree, LEAF_LOG2, LEAF_VOXELS,
    LOWER_LOG2, LOWER_TOTAL, UPPER_LOG2, UPPER_TOTAL,
};
use super::value::VdbValue;

/// Library version recorded in files we write (the OpenVDB release whose format we follow).
const LIBRARY_VERSION: (u32, u32) = (10, 0);

/// How value buffers are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// zlib-compress value buffers.
    pub zip: bool,
    /// Store only active values, rebuilding inactive ones from the background on read.
    pub active_mask: bool,
}

impl Default for WriteOptions {
    /// ZIP + active mask, OpenVDB's default.
    fn default() -> Self {
        WriteOptions {
            zip: true,
            active_mask: true,
        }
    }
}

impl WriteOptions {
    fn flags(self) -> u32 {
        (if self.zip { COMPRESS_ZIP } else { 0 })
            | (if self.active_mask {
                COMPRESS_ACTIVE_MASK
            } else {
                0
            })
    }
}

/// Writes `grids` to `path` atomically (temporary file + rename).
pub fn write_vdb<T: VdbValue>(
    path: impl AsRef<Path>,
    grids: &[&Grid<T>],
    options: WriteOptions,
) -> Result<()> {
    let bytes = vdb_bytes(grids, options)?;
    crate::atomic::write_atomically(path.as_ref(), |w| {
        use std::io::Write;
        w.write_all(&bytes).map_err(VdbError::from)
    })
}

/// The bytes of a file holding `grids`.
pub fn vdb_bytes<T: VdbValue>(grids: &[&Grid<T>], options: WriteOptions) -> Result<Vec<u8>> {
    if T::TYPE_NAME == "bool" {
        return Err(VdbError::InvalidInput(
            "writing bool/mask grids is not supported".into(),
        ));
    }
    let mut out = Vec::new();
    out.put_i64(MAGIC);
    out.put_u32(MAX_FILE_VERSION);
    out.put_u32(LIBRARY_VERSION.0);
    out.put_u32(LIBRARY_VERSION.1);
    out.push(1); // grid offsets present
    out.extend_from_slice(uuid().as_bytes());
    let mut file_meta = BTreeMap::new();
    file_meta.insert("creator".to_string(), MetaValue::String("vnr".into()));
    write_meta_map(&mut out, &file_meta);
    out.put_i32(
        i32::try_from(grids.len()).map_err(|_| VdbError::InvalidInput("too many grids".into()))?,
    );
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for grid in grids {
        let n = seen.entry(grid.name.as_str()).or_default();
        let unique = if *n == 0 {
            grid.name.clone()
        } else {
            format!("{}\u{1e}{n}", grid.name)
        };
        *n += 1;
        out.put_string(&unique);
        out.put_string(&format!("Tree_{}_5_4_3", T::TYPE_NAME));
        out.put_string(""); // no instance parent
        let offsets_at = out.len();
        out.extend_from_slice(&[0u8; 24]);
        let grid_pos = out.len();
        let block_pos = write_grid(&mut out, grid, options.flags());
        let end_pos = out.len();
        for (k, pos) in [grid_pos, block_pos, end_pos].into_iter().enumerate() {
            out[offsets_at + 8 * k..offsets_at + 8 * k + 8]
                .copy_from_slice(&(pos as i64).to_le_bytes());
        }
    }
    Ok(out)
}

/// A random version-4 UUID string (36 characters), from the clock and process id.
fn uuid() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    let a = h.finish();
    h.write_u64(a);
    let b = h.finish();
    let x = (u128::from(a) << 64 | u128::from(b)) & !(0xF000u128 << 64) | (0x4000u128 << 64);
    let s = format!("{x:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &s[0..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..32]
    )
}

/// Writes one grid from its compression flags to its last buffer; returns the block offset.
fn write_grid<T: VdbValue>(out: &mut Vec<u8>, grid: &Grid<T>, flags: u32) -> usize {
    out.put_u32(flags);
    let mut meta = grid.metadata.clone();
    meta.insert(
        "class".into(),
        MetaValue::String(grid.class.as_str().into()),
    );
    meta.insert("name".into(), MetaValue::String(grid.name.clone()));
    meta.insert(
        "file_compression".into(),
        MetaValue::String(compression_to_string(flags)),
    );
    meta.insert(
        "file_voxel_count".into(),
        MetaValue::Int64(grid.active_voxel_count() as i64),
    );
    if let Some(b) = grid.active_bbox() {
        meta.insert("file_bbox_min".into(), MetaValue::Vec3i(b.min));
        meta.insert("file_bbox_max".into(), MetaValue::Vec3i(b.max));
    }
    meta.insert("is_local_space".into(), MetaValue::Bool(false));
    meta.insert("is_saved_as_half_float".into(), MetaValue::Bool(false));
    meta.insert("value_type".into(), MetaValue::String(T::TYPE_NAME.into()));
    meta.entry("vector_type".into())
        .or_insert(MetaValue::String("invariant".into()));
    write_meta_map(out, &meta);
    grid.transform.write(out);
    let tree = &grid.tree;
    let bg = tree.background;
    out.put_i32(1); // buffer count
    bg.put_le(out);
    let tiles = tree
        .root
        .iter()
        .filter(|(_, e)| matches!(e, RootEntry::Tile { .. }))
        .count();
    out.put_u32(tiles as u32);
    out.put_u32((tree.root.len() - tiles) as u32);
    for (origin, entry) in &tree.root {
        if let RootEntry::Tile { value, active } = entry {
            origin.iter().for_each(|c| out.put_i32(*c));
            value.put_le(out);
            out.push(u8::from(*active));
        }
    }
    let uppers: Vec<&Internal<T>> = tree
        .root
        .iter()
        .filter_map(|(_, e)| match e {
            RootEntry::Child(i) => tree.uppers.get(*i),
            RootEntry::Tile { .. } => None,
        })
        .collect();
    for upper in &uppers {
        upper.origin.iter().for_each(|c| out.put_i32(*c));
        write_internal(out, upper, bg, flags);
        for lower in &tree.lowers[upper.first_child..upper.first_child + upper.child_count()] {
            write_internal(out, lower, bg, flags);
            for leaf in &tree.leaves[lower.first_child..lower.first_child + lower.child_count()] {
                out.put_mask(&leaf.value_mask);
            }
        }
    }
    let block_pos = out.len();
    for upper in &uppers {
        for lower in &tree.lowers[upper.first_child..upper.first_child + upper.child_count()] {
            for leaf in &tree.leaves[lower.first_child..lower.first_child + lower.child_count()] {
                out.put_mask(&leaf.value_mask);
                write_values(out, &leaf.values, &leaf.value_mask, None, bg, flags);
            }
        }
    }
    block_pos
}

fn write_internal<T: VdbValue>(out: &mut Vec<u8>, node: &Internal<T>, bg: T, flags: u32) {
    out.put_mask(&node.child_mask);
    out.put_mask(&node.value_mask);
    write_values(
        out,
        &node.values,
        &node.value_mask,
        Some(&node.child_mask),
        bg,
        flags,
    );
}

/// OpenVDB's `writeCompressedValues`: picks the per-node metadata from the distinct inactive
/// values (ignoring child slots), then writes inactive values, selection mask and the buffer.
fn write_values<T: VdbValue>(
    out: &mut Vec<u8>,
    values: &[T],
    value_mask: &[u64],
    child_mask: Option<&[u64]>,
    bg: T,
    flags: u32,
) {
    const NO_MASK_OR_INACTIVE_VALS: u8 = 0;
    const NO_MASK_AND_MINUS_BG: u8 = 1;
    const NO_MASK_AND_ONE_INACTIVE_VAL: u8 = 2;
    const MASK_AND_NO_INACTIVE_VALS: u8 = 3;
    const MASK_AND_ONE_INACTIVE_VAL: u8 = 4;
    const MASK_AND_TWO_INACTIVE_VALS: u8 = 5;
    const NO_MASK_AND_ALL_VALS: u8 = 6;
    let mut buffer = Vec::with_capacity(values.len() * T::SIZE);
    if flags & COMPRESS_ACTIVE_MASK == 0 {
        out.push(NO_MASK_AND_ALL_VALS);
        values.iter().for_each(|v| v.put_le(&mut buffer));
    } else {
        let is_child = |n: usize| child_mask.is_some_and(|m| bit(m, n));
        let mut distinct: Vec<T> = Vec::with_capacity(3);
        for (n, v) in values.iter().enumerate() {
            if bit(value_mask, n) || is_child(n) || distinct.contains(v) {
                continue;
            }
            distinct.push(*v);
            if distinct.len() > 2 {
                break;
            }
        }
        let neg = bg.negated();
        let (meta, mut inactive) = match distinct[..] {
            [] => (NO_MASK_OR_INACTIVE_VALS, [bg, bg]),
            [a] if a == bg => (NO_MASK_OR_INACTIVE_VALS, [a, bg]),
            [a] if a == neg => (NO_MASK_AND_MINUS_BG, [a, bg]),
            [a] => (NO_MASK_AND_ONE_INACTIVE_VAL, [a, bg]),
            [a, b] if a != bg && b != bg => (MASK_AND_TWO_INACTIVE_VALS, [a, b]),
            [a, b] if b == bg => (
                if a == neg {
                    MASK_AND_NO_INACTIVE_VALS
                } else {
                    MASK_AND_ONE_INACTIVE_VAL
                },
                [a, b],
            ),
            [a, b] => (
                if b == neg {
                    MASK_AND_NO_INACTIVE_VALS
                } else {
                    MASK_AND_ONE_INACTIVE_VAL
                },
                [b, a],
            ),
            _ => (NO_MASK_AND_ALL_VALS, [bg, bg]),
        };
        out.push(meta);
        if matches!(
            meta,
            NO_MASK_AND_ONE_INACTIVE_VAL | MASK_AND_ONE_INACTIVE_VAL | MASK_AND_TWO_INACTIVE_VALS
        ) {
            inactive[0].put_le(out);
            if meta == MASK_AND_TWO_INACTIVE_VALS {
                inactive[1].put_le(out);
            }
        }
        if meta == NO_MASK_AND_ALL_VALS {
            values.iter().for_each(|v| v.put_le(&mut buffer));
        } else {
            let mut selection = vec![0u64; value_mask.len()];
            for (n, v) in values.iter().enumerate() {
                if bit(value_mask, n) {
                    v.put_le(&mut buffer);
                } else if *v == inactive[1] && !is_child(n) {
                    set_bit(&mut selection, n);
                }
            }
            if meta >= MASK_AND_NO_INACTIVE_VALS {
                out.put_mask(&selection);
            }
        }
        inactive.fill(bg);
    }
    if flags & COMPRESS_ZIP != 0 {
        zip_chunk(out, &buffer);
    } else {
        out.extend_from_slice(&buffer);
    }
}

/// Leaves keyed by (upper origin, lower origin, leaf origin): sorted, they group by node.
type LeafKey = ([i32; 3], [i32; 3], [i32; 3]);

impl<T: VdbValue> Tree<T> {
    /// A tree whose active voxels are `voxels` (later duplicates win); every other voxel and
    /// tile holds `background`.
    pub fn from_active_voxels(
        background: T,
        voxels: impl IntoIterator<Item = ([i32; 3], T)>,
    ) -> Self {
        Self::build(background, voxels, |_| background)
    }

    /// Builds a tree from active voxels; `inactive(region)` gives the value of inactive voxels
    /// (single-voxel regions) and of tiles (their whole region) inside allocated nodes.
    pub(crate) fn build(
        background: T,
        voxels: impl IntoIterator<Item = ([i32; 3], T)>,
        inactive: impl Fn(BBox) -> T,
    ) -> Self {
        let leaf_key = |ijk: [i32; 3]| ijk.map(|v| v & !((1 << LEAF_LOG2) - 1));
        let mut leaves: BTreeMap<LeafKey, Leaf<T>> = BTreeMap::new();
        for (ijk, value) in voxels {
            let origin = leaf_key(ijk);
            let key = (
                ijk.map(|v| v & !((1 << UPPER_TOTAL) - 1)),
                ijk.map(|v| v & !((1 << LOWER_TOTAL) - 1)),
                origin,
            );
            let leaf = leaves.entry(key).or_insert_with(|| Leaf {
                origin,
                value_mask: [0; LEAF_VOXELS / 64],
                values: (0..LEAF_VOXELS)
                    .map(|n| {
                        let p = slot_origin(origin, n, LEAF_LOG2, 0);
                        inactive(BBox::new(p, p))
                    })
                    .collect(),
            });
            let n = slot(ijk, LEAF_LOG2, 0);
            set_bit(&mut leaf.value_mask, n);
            leaf.values[n] = value;
        }
        let mut tree = Tree::empty(background);
        let new_node = |origin: [i32; 3], log2: u32, child_total: u32, children: &[[i32; 3]]| {
            let slots = 1usize << (3 * log2);
            let mut child_mask = vec![0u64; slots / 64];
            for c in children {
                set_bit(&mut child_mask, slot(*c, log2, child_total));
            }
            let values = (0..slots)
                .map(|n| {
                    if bit(&child_mask, n) {
                        background
                    } else {
                        inactive(BBox::cube(
                            slot_origin(origin, n, log2, child_total),
                            child_total,
                        ))
                    }
                })
                .collect();
            Internal::new(
                origin,
                child_mask.into(),
                vec![0u64; slots / 64].into(),
                values,
            )
        };
        let entries: Vec<_> = leaves.into_iter().collect();
        for upper_group in entries.chunk_by(|a, b| a.0 .0 == b.0 .0) {
            let upper_origin = upper_group[0].0 .0;
            let mut lower_origins = Vec::new();
            let first_lower = tree.lowers.len();
            for lower_group in upper_group.chunk_by(|a, b| a.0 .1 == b.0 .1) {
                let lower_origin = lower_group[0].0 .1;
                lower_origins.push(lower_origin);
                let leaf_origins: Vec<[i32; 3]> = lower_group.iter().map(|(k, _)| k.2).collect();
                let mut lower = new_node(lower_origin, LOWER_LOG2, LEAF_LOG2, &leaf_origins);
                lower.first_child = tree.leaves.len();
                tree.leaves
                    .extend(lower_group.iter().map(|(_, l)| l.clone()));
                tree.lowers.push(lower);
            }
            let mut upper = new_node(upper_origin, UPPER_LOG2, LOWER_TOTAL, &lower_origins);
            upper.first_child = first_lower;
            tree.root
                .push((upper_origin, RootEntry::Child(tree.uppers.len())));
            tree.uppers.push(upper);
        }
        tree
    }
}

/// A dense `[x][y][z]` (z fastest) array of samples whose first element is voxel `origin`.
/// The last sample, `origin + dims − 1`, must still be an `i32` index coordinate.
#[derive(Debug, Clone, Copy)]
pub struct DenseSamples<'a> {
    /// The samples, `dims[0]·dims[1]·dims[2]` of them.
    pub values: &'a [f32],
    /// Samples per axis `[X, Y, Z]`.
    pub dims: [usize; 3],
    /// Index coordinates of the first sample.
    pub origin: [i32; 3],
}

impl DenseSamples<'_> {
    fn check(&self) -> Result<()> {
        let n = self.dims.iter().try_fold(1usize, |a, d| a.checked_mul(*d));
        if n != Some(self.values.len()) {
            return Err(VdbError::InvalidInput(format!(
                "dense dims {:?} do not match {} samples",
                self.dims,
                self.values.len()
            )));
        }
        // Every sample's coordinate `origin + l` (l < dims) must be an i32, which is what
        // lets `voxels` add without overflow.
        let last = |k: usize| {
            i64::try_from(self.dims[k])
                .ok()
                .map(|d| i64::from(self.origin[k]) + d - 1)
        };
        if let Some(k) = (0..3).find(|&k| last(k).is_none_or(|l| l > i64::from(i32::MAX))) {
            return Err(VdbError::InvalidInput(format!(
                "dense origin {:?} with dims {:?} runs past i32 index coordinates on axis {k}",
                self.origin, self.dims
            )));
        }
        Ok(())
    }

    fn voxels(&self) -> impl Iterator<Item = ([i32; 3], f32)> + '_ {
        let [_, ny, nz] = self.dims;
        self.values.iter().enumerate().map(move |(i, v)| {
            let l = [i / (ny * nz), (i / nz) % ny, i % nz];
            // In range by `check`: origin + l ≤ origin + dims − 1 ≤ i32::MAX.
            (
                std::array::from_fn(|k| (i64::from(self.origin[k]) + l[k] as i64) as i32),
                *v,
            )
        })
    }

    /// The sample nearest to the centre of `region` (clamped into the array).
    fn nearest(&self, region: BBox) -> f32 {
        let l: [usize; 3] = std::array::from_fn(|k| {
            let centre = (i64::from(region.min[k]) + i64::from(region.max[k])) / 2
                - i64::from(self.origin[k]);
            centre.clamp(0, self.dims[k] as i64 - 1) as usize
        });
        self.values[(l[0] * self.dims[1] + l[1]) * self.dims[2] + l[2]]
    }
}

impl Grid<f32> {
    /// A level set from a dense signed distance array (world units, negative inside): voxels
    /// with `|d| < half_width` become active; every other voxel and tile reads
    /// `±half_width` by the sign of the nearest sample, so the inside stays negative.
    /// Samples that do not match their dims or run past `i32` coordinates are
    /// [`VdbError::InvalidInput`].
    pub fn level_set_from_dense(
        name: impl Into<String>,
        samples: DenseSamples<'_>,
        transform: Transform,
        half_width: f32,
    ) -> Result<Self> {
        samples.check()?;
        if !(half_width > 0.0 && half_width.is_finite()) {
            return Err(VdbError::InvalidInput(format!(
                "half width {half_width} must be positive"
            )));
        }
        let tree = Tree::build(
            half_width,
            samples.voxels().filter(|(_, d)| d.abs() < half_width),
            |region| {
                if samples.nearest(region) < 0.0 {
                    -half_width
                } else {
                    half_width
                }
            },
        );
        Ok(Grid::new(name, GridClass::LevelSet, transform, tree))
    }

    /// A fog volume from dense densities: samples above `threshold` become active voxels;
    /// everything else reads the background 0. Samples that do not match their dims or run
    /// past `i32` coordinates are [`VdbError::InvalidInput`].
    pub fn fog_from_dense(
        name: impl Into<String>,
        samples: DenseSamples<'_>,
        transform: Transform,
        threshold: f32,
    ) -> Result<Self> {
        samples.check()?;
        let tree = Tree::from_active_voxels(0.0, samples.voxels().filter(|(_, d)| *d > threshold));
        Ok(Grid::new(name, GridClass::FogVolume, transform, tree))
    }
}
