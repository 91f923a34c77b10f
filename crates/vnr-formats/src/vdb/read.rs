//! Parsing OpenVDB files: header, descriptors, grids, trees.

use std::path::Path;
use std::sync::Arc;

use super::bytes::Cursor;
use super::compression::{read_chunk, COMPRESS_ACTIVE_MASK, COMPRESS_ZIP};
use super::error::{Result, VdbError};
use super::grid::{AnyGrid, Grid, GridClass};
use super::metadata::{read_meta_map, MetaMap, MetaValue};
use super::transform::Transform;
use super::tree::{
    bit, count_on, on_bits, slot_origin, Internal, Leaf, RootEntry, Tree, LEAF_LOG2, LEAF_VOXELS,
    LOWER_LOG2, LOWER_TOTAL, UPPER_LOG2, UPPER_TOTAL,
};
use super::value::VdbValue;

/// OpenVDB's magic number (`" BDV"` little-endian, as an `i64`).
pub(crate) const MAGIC: i64 = 0x5644_4220;
/// Oldest file version handled (selective compression, grid instancing, new transforms).
pub const MIN_FILE_VERSION: u32 = 220;
/// Newest file version handled (what OpenVDB 6..12 write).
pub const MAX_FILE_VERSION: u32 = 224;
/// From this version on: per-grid compression flags and per-node compression metadata.
const NODE_MASK_COMPRESSION: u32 = 222;
const HALF_SUFFIX: &str = "_HalfFloat";
/// OpenVDB's separator between a grid name and its de-duplicating suffix.
const UNIQUE_NAME_SEPARATOR: char = '\u{1e}';

/// What the file header says.
#[derive(Debug, Clone, PartialEq)]
pub struct FileHeader {
    /// File format version (220..=224).
    pub version: u32,
    /// Version of the library that wrote the file (major, minor).
    pub library_version: (u32, u32),
    /// Whether descriptors carry grid offsets (always for files written to disk).
    pub has_grid_offsets: bool,
    /// File-wide compression flags (only stored before version 222; per-grid flags after).
    pub compression: u32,
    /// The file's UUID string.
    pub uuid: String,
}

/// A grid descriptor: names, type and byte offsets of one grid.
#[derive(Debug, Clone, PartialEq)]
pub struct GridDescriptor {
    /// Name with any de-duplicating suffix.
    pub unique_name: String,
    /// Grid name.
    pub name: String,
    /// Tree type without the `_HalfFloat` suffix, e.g. `Tree_float_5_4_3`.
    pub type_name: String,
    /// Whether the type carried `_HalfFloat` (values stored as halves).
    pub saved_as_half: bool,
    /// Unique name of the grid whose tree this one shares (empty if none); the instance's
    /// [`Grid::tree`] is the same [`Arc`] as its parent's.
    pub instance_parent: String,
    /// Absolute offset of the grid's data.
    pub grid_pos: u64,
    /// Absolute offset of the grid's leaf buffers.
    pub block_pos: u64,
    /// Absolute offset just past the grid.
    pub end_pos: u64,
}

/// One grid of a file: its descriptor and the grid, or why it could not be read.
#[derive(Debug)]
pub struct GridEntry {
    /// The descriptor.
    pub descriptor: GridDescriptor,
    /// The grid, or the error for this grid alone (e.g. an unsupported point-data grid).
    pub grid: Result<AnyGrid>,
}

/// A whole OpenVDB file in memory.
#[derive(Debug)]
pub struct VdbFile {
    /// The header.
    pub header: FileHeader,
    /// File-level metadata (e.g. `creator`).
    pub metadata: MetaMap,
    /// Grids in file order.
    pub grids: Vec<GridEntry>,
}

/// Per-grid facts from a header-only read.
#[derive(Debug)]
pub struct GridInfo {
    /// The descriptor.
    pub descriptor: GridDescriptor,
    /// Compression flags of the grid.
    pub compression: u32,
    /// Grid metadata.
    pub metadata: MetaMap,
    /// The transform, or why it could not be read.
    pub transform: Result<Transform>,
}

/// A cheap listing: header, file metadata and per-grid descriptor/metadata/transform.
#[derive(Debug)]
pub struct VdbListing {
    /// The header.
    pub header: FileHeader,
    /// File-level metadata.
    pub metadata: MetaMap,
    /// Grids in file order.
    pub grids: Vec<GridInfo>,
}

/// Reads a whole file.
pub fn read_vdb(path: impl AsRef<Path>) -> Result<VdbFile> {
    let path = path.as_ref();
    let data = std::fs::read(path).map_err(|source| VdbError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    VdbFile::from_bytes(&data)
}

fn read_header(cur: &mut Cursor<'_>) -> Result<FileHeader> {
    let magic = cur.i64("magic number")?;
    if magic != MAGIC {
        return Err(VdbError::BadMagic(magic));
    }
    let version = cur.u32("file version")?;
    if !(MIN_FILE_VERSION..=MAX_FILE_VERSION).contains(&version) {
        return Err(VdbError::UnsupportedVersion {
            version,
            min: MIN_FILE_VERSION,
            max: MAX_FILE_VERSION,
        });
    }
    let library_version = (
        cur.u32("library major version")?,
        cur.u32("library minor version")?,
    );
    let has_grid_offsets = cur.u8("grid offsets flag")? != 0;
    let compression = if version < NODE_MASK_COMPRESSION {
        if cur.u8("compression flag")? != 0 {
            COMPRESS_ZIP
        } else {
            0
        }
    } else {
        0
    };
    let uuid_bytes = cur.take(36, "file UUID")?;
    let uuid = String::from_utf8_lossy(uuid_bytes).into_owned();
    Ok(FileHeader {
        version,
        library_version,
        has_grid_offsets,
        compression,
        uuid,
    })
}

/// Smallest descriptor: three empty strings and three offsets.
const MIN_DESCRIPTOR_BYTES: u64 = 12 + 24;

fn read_descriptor(cur: &mut Cursor<'_>) -> Result<GridDescriptor> {
    let unique_name = cur.string("grid name")?;
    let name = unique_name
        .split(UNIQUE_NAME_SEPARATOR)
        .next()
        .unwrap_or_default()
        .to_string();
    let mut type_name = cur.string("grid type")?;
    let saved_as_half = type_name.ends_with(HALF_SUFFIX);
    if saved_as_half {
        type_name.truncate(type_name.len() - HALF_SUFFIX.len());
    }
    let instance_parent = cur.string("instance parent name")?;
    let offset = cur.offset();
    let mut pos = || -> Result<u64> {
        let v = cur.i64("grid offset")?;
        u64::try_from(v).map_err(|_| VdbError::corrupt(offset, format!("negative grid offset {v}")))
    };
    let (grid_pos, block_pos, end_pos) = (pos()?, pos()?, pos()?);
    Ok(GridDescriptor {
        unique_name,
        name,
        type_name,
        saved_as_half,
        instance_parent,
        grid_pos,
        block_pos,
        end_pos,
    })
}

/// Checks a descriptor's offsets against the file: `after ≤ grid ≤ block ≤ end ≤ len`
/// (block 0 for instances).
fn check_offsets(d: &GridDescriptor, after: u64, len: u64, at: u64) -> Result<()> {
    // Instances have no buffers of their own and store a block offset of 0.
    let block_ok = (d.block_pos == 0 && !d.instance_parent.is_empty())
        || (d.grid_pos <= d.block_pos && d.block_pos <= d.end_pos);
    let ok = after <= d.grid_pos && block_ok && d.grid_pos <= d.end_pos && d.end_pos <= len;
    if ok {
        Ok(())
    } else {
        Err(VdbError::corrupt(
            at,
            format!(
                "grid '{}' offsets {}/{}/{} do not fit a file of {len} bytes",
                d.unique_name, d.grid_pos, d.block_pos, d.end_pos
            ),
        ))
    }
}

fn grid_count(cur: &mut Cursor<'_>) -> Result<u32> {
    let at = cur.offset();
    let count = cur.i32("grid count")?;
    let count = u32::try_from(count)
        .map_err(|_| VdbError::corrupt(at, format!("negative grid count {count}")))?;
    cur.ensure(u64::from(count) * MIN_DESCRIPTOR_BYTES, "grid descriptors")?;
    Ok(count)
}

impl VdbFile {
    /// Parses a file held in memory (the entry point for fuzzing: never panics).
    pub fn from_bytes(data: &[u8]) -> Result<VdbFile> {
        let mut cur = Cursor::new(data, 0);
        let header = read_header(&mut cur)?;
        let metadata = read_meta_map(&mut cur)?;
        let count = grid_count(&mut cur)?;
        let mut grids: Vec<GridEntry> = Vec::new();
        for _ in 0..count {
            let at = cur.offset();
            let descriptor = read_descriptor(&mut cur)?;
            let grid = if header.has_grid_offsets {
                check_offsets(&descriptor, cur.offset(), data.len() as u64, at)?;
                let region = &data[descriptor.grid_pos as usize..descriptor.end_pos as usize];
                let mut grid_cur = Cursor::new(region, descriptor.grid_pos);
                let grid = read_grid(&mut grid_cur, &header, &descriptor, &grids);
                cur.seek_absolute(descriptor.end_pos, "grid end")?;
                grid
            } else {
                // Without offsets the next grid starts where this one ends, so a grid that
                // cannot be parsed ends the file.
                let grid = read_grid(&mut cur, &header, &descriptor, &grids)?;
                Ok(grid)
            };
            grids.push(GridEntry { descriptor, grid });
        }
        Ok(VdbFile {
            header,
            metadata,
            grids,
        })
    }

    /// The entry of the grid named `name` (first match).
    pub fn entry(&self, name: &str) -> Result<&GridEntry> {
        self.grids
            .iter()
            .find(|e| e.descriptor.name == name || e.descriptor.unique_name == name)
            .ok_or_else(|| VdbError::GridNotFound(name.to_string()))
    }

    /// The grid named `name`, of any type.
    pub fn grid(&self, name: &str) -> Result<&AnyGrid> {
        let entry = self.entry(name)?;
        entry.grid.as_ref().map_err(|e| VdbError::GridUnreadable {
            grid: name.to_string(),
            reason: e.to_string(),
        })
    }

    /// The grid named `name` with value type `T`.
    pub fn typed_grid<T: super::grid::GridValue>(&self, name: &str) -> Result<&Grid<T>> {
        self.grid(name)?.typed::<T>()
    }
}

/// Header-only read: reads just the header, descriptors, grid metadata and transforms, in
/// small windows, never the voxel data.
pub fn list_vdb(path: impl AsRef<Path>) -> Result<VdbListing> {
    use std::io::{Read, Seek, SeekFrom};
    let path = path.as_ref();
    let io_err = |source| VdbError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    // Parses with `parse` on a window starting at `offset`, doubling the window while the
    // parse runs out of bytes and the file has more.
    let mut windowed =
        |offset: u64, parse: &mut dyn FnMut(&mut Cursor<'_>) -> Result<()>| -> Result<u64> {
            let mut size: u64 = 1 << 16;
            loop {
                let want = size.min(len.saturating_sub(offset));
                let mut buf = vec![0u8; want as usize];
                file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
                file.read_exact(&mut buf).map_err(io_err)?;
                let mut cur = Cursor::new(&buf, offset);
                match parse(&mut cur) {
                    Err(VdbError::Truncated { .. }) if offset + want < len => size *= 4,
                    Err(e) => return Err(e),
                    Ok(()) => return Ok(cur.offset()),
                }
            }
        };
    let mut header = None;
    let mut metadata = MetaMap::new();
    let mut count = 0;
    let mut next = windowed(0, &mut |cur| {
        header = Some(read_header(cur)?);
        metadata = read_meta_map(cur)?;
        count = grid_count(cur)?;
        Ok(())
    })?;
    let header = header.ok_or_else(|| VdbError::corrupt(0, "header missing"))?;
    if !header.has_grid_offsets {
        return Err(VdbError::corrupt(
            next,
            "listing needs grid offsets, which this file lacks",
        ));
    }
    let mut grids = Vec::new();
    for _ in 0..count {
        let mut found = None;
        let after = windowed(next, &mut |cur| {
            found = Some(read_descriptor(cur)?);
            Ok(())
        })?;
        let descriptor = found.ok_or_else(|| VdbError::corrupt(next, "descriptor missing"))?;
        check_offsets(&descriptor, after, len, next)?;
        let mut info = None;
        windowed(descriptor.grid_pos, &mut |cur| {
            let compression = grid_compression(cur, &header)?;
            let metadata = read_meta_map(cur)?;
            let transform = match Transform::read(cur) {
                Err(e @ VdbError::Truncated { .. }) => return Err(e),
                other => other,
            };
            info = Some((compression, metadata, transform));
            Ok(())
        })?;
        let (compression, metadata, transform) =
            info.ok_or_else(|| VdbError::corrupt(descriptor.grid_pos, "grid header missing"))?;
        next = descriptor.end_pos;
        grids.push(GridInfo {
            descriptor,
            compression,
            metadata,
            transform,
        });
    }
    Ok(VdbListing {
        header,
        metadata,
        grids,
    })
}

fn grid_compression(cur: &mut Cursor<'_>, header: &FileHeader) -> Result<u32> {
    if header.version >= NODE_MASK_COMPRESSION {
        cur.u32("grid compression flags")
    } else {
        Ok(header.compression)
    }
}

/// How a grid type stores its leaves.
#[derive(Clone, Copy, PartialEq)]
enum LeafCodec {
    /// Value mask, then compressed values (float, int, vec3 ...).
    Values,
    /// Value mask, origin, a bit mask of values (`bool`).
    BoolBits,
    /// The value mask is everything (`mask`).
    MaskOnly,
}

fn read_grid(
    cur: &mut Cursor<'_>,
    header: &FileHeader,
    d: &GridDescriptor,
    earlier: &[GridEntry],
) -> Result<AnyGrid> {
    let value_type = d
        .type_name
        .strip_prefix("Tree_")
        .and_then(|t| t.strip_suffix("_5_4_3"))
        .unwrap_or("");
    let unsupported = || VdbError::UnsupportedGridType {
        grid: d.name.clone(),
        type_name: d.type_name.clone(),
    };
    if !matches!(
        value_type,
        "float" | "double" | "int32" | "int64" | "bool" | "mask" | "vec3s" | "vec3d" | "vec3i"
    ) {
        return Err(unsupported());
    }
    let compression = grid_compression(cur, header)?;
    let metadata = read_meta_map(cur)?;
    let transform = Transform::read(cur)?;
    let ctx = Ctx {
        version: header.version,
        compression,
        half: d.saved_as_half,
    };
    let parent = if d.instance_parent.is_empty() {
        None
    } else {
        let p = earlier
            .iter()
            .find(|e| e.descriptor.unique_name == d.instance_parent)
            .and_then(|e| e.grid.as_ref().ok())
            .ok_or_else(|| {
                VdbError::corrupt(
                    cur.offset(),
                    format!("instance parent '{}' not read", d.instance_parent),
                )
            })?;
        Some(p)
    };
    macro_rules! typed {
        ($variant:ident, $codec:expr) => {{
            // An instance shares its parent's tree, as in OpenVDB: a copy per instance would
            // let ~200 bytes of file cost a whole tree of memory.
            let tree = match parent {
                Some(AnyGrid::$variant(p)) => Arc::clone(&p.tree),
                Some(_) => {
                    return Err(VdbError::corrupt(
                        cur.offset(),
                        "instance parent has another type",
                    ));
                }
                None => Arc::new(read_tree(cur, &ctx, $codec)?),
            };
            AnyGrid::$variant(finish_grid(d, metadata, transform, tree))
        }};
    }
    Ok(match value_type {
        "float" => typed!(Float, LeafCodec::Values),
        "double" => typed!(Double, LeafCodec::Values),
        "int32" => typed!(Int32, LeafCodec::Values),
        "int64" => typed!(Int64, LeafCodec::Values),
        "bool" => typed!(Bool, LeafCodec::BoolBits),
        "mask" => typed!(Mask, LeafCodec::MaskOnly),
        "vec3s" => typed!(Vec3f, LeafCodec::Values),
        "vec3d" => typed!(Vec3d, LeafCodec::Values),
        "vec3i" => typed!(Vec3i, LeafCodec::Values),
        _ => return Err(unsupported()),
    })
}

fn finish_grid<T: VdbValue>(
    d: &GridDescriptor,
    metadata: MetaMap,
    transform: Transform,
    tree: Arc<Tree<T>>,
) -> Grid<T> {
    let name = match metadata.get("name") {
        Some(MetaValue::String(n)) => n.clone(),
        _ => d.name.clone(),
    };
    let class = metadata
        .get("class")
        .and_then(MetaValue::as_str)
        .map_or(GridClass::Unknown, GridClass::from_meta);
    Grid {
        name,
        class,
        transform,
        metadata,
        tree,
        saved_as_half: d.saved_as_half,
    }
}

struct Ctx {
    version: u32,
    compression: u32,
    half: bool,
}

// Per-node metadata byte: which inactive values are stored (OpenVDB's Compression.h).
const NO_MASK_OR_INACTIVE_VALS: u8 = 0;
const NO_MASK_AND_ONE_INACTIVE_VAL: u8 = 2;
const MASK_AND_NO_INACTIVE_VALS: u8 = 3;
const MASK_AND_ONE_INACTIVE_VAL: u8 = 4;
const MASK_AND_TWO_INACTIVE_VALS: u8 = 5;
const NO_MASK_AND_ALL_VALS: u8 = 6;

/// Reads `count` node values: the metadata byte, inactive values, selection mask, then the
/// (possibly active-only, possibly half, possibly compressed) buffer, and rebuilds inactive
/// values exactly as OpenVDB's `readCompressedValues` does.
fn read_values<T: VdbValue>(
    cur: &mut Cursor<'_>,
    ctx: &Ctx,
    background: T,
    value_mask: &[u64],
    count: usize,
) -> Result<Box<[T]>> {
    let offset = cur.offset();
    let meta = if ctx.version >= NODE_MASK_COMPRESSION {
        cur.u8("node compression metadata")?
    } else {
        NO_MASK_AND_ALL_VALS
    };
    if meta > NO_MASK_AND_ALL_VALS {
        return Err(VdbError::corrupt(
            offset,
            format!("unknown node compression metadata {meta}"),
        ));
    }
    let mut inactive0 = if meta == NO_MASK_OR_INACTIVE_VALS {
        background
    } else {
        background.negated()
    };
    let mut inactive1 = background;
    if matches!(
        meta,
        NO_MASK_AND_ONE_INACTIVE_VAL | MASK_AND_ONE_INACTIVE_VAL | MASK_AND_TWO_INACTIVE_VALS
    ) {
        inactive0 = T::from_le(cur.take(T::SIZE, "inactive value")?);
        if meta == MASK_AND_TWO_INACTIVE_VALS {
            inactive1 = T::from_le(cur.take(T::SIZE, "second inactive value")?);
        }
    }
    let selection = if matches!(
        meta,
        MASK_AND_NO_INACTIVE_VALS | MASK_AND_ONE_INACTIVE_VAL | MASK_AND_TWO_INACTIVE_VALS
    ) {
        Some(cur.mask(value_mask.len(), "inactive selection mask")?)
    } else {
        None
    };
    let mask_compressed = ctx.compression & COMPRESS_ACTIVE_MASK != 0
        && meta != NO_MASK_AND_ALL_VALS
        && ctx.version >= NODE_MASK_COMPRESSION;
    let stored = if mask_compressed {
        count_on(value_mask)
    } else {
        count
    };
    let half = ctx.half && T::HALF;
    let elem = if half { T::half_size() } else { T::SIZE };
    // OpenVDB's half reader/writer skip empty buffers entirely (no chunk header).
    let bytes = if half && stored == 0 {
        std::borrow::Cow::Borrowed(&[][..])
    } else {
        read_chunk(cur, ctx.compression, stored * elem)?
    };
    let decode = |b: &[u8]| {
        if half {
            T::from_half_le(b)
        } else {
            T::from_le(b)
        }
    };
    if stored == count {
        return Ok(bytes.chunks_exact(elem).map(decode).collect());
    }
    // Inactive values first, then the active ones over them in mask order: the same result
    // as OpenVDB's per-slot choice, without a branch per slot.
    let mut out = vec![inactive0; count];
    if let Some(selection) = &selection {
        for n in on_bits(selection) {
            out[n] = inactive1;
        }
    }
    for (n, chunk) in on_bits(value_mask).zip(bytes.chunks_exact(elem)) {
        out[n] = decode(chunk);
    }
    Ok(out.into_boxed_slice())
}

const LEAF_WORDS: usize = LEAF_VOXELS / 64;

fn read_internal<T: VdbValue>(
    cur: &mut Cursor<'_>,
    ctx: &Ctx,
    background: T,
    origin: [i32; 3],
    log2: u32,
) -> Result<Internal<T>> {
    let slots = 1usize << (3 * log2);
    let child_mask = cur.mask(slots / 64, "internal child mask")?;
    let value_mask = cur.mask(slots / 64, "internal value mask")?;
    let values = read_values(cur, ctx, background, &value_mask, slots)?;
    Ok(Internal::new(origin, child_mask, value_mask, values))
}

fn leaf_mask(cur: &mut Cursor<'_>) -> Result<[u64; LEAF_WORDS]> {
    let words = cur.mask(LEAF_WORDS, "leaf value mask")?;
    let mut out = [0u64; LEAF_WORDS];
    out.copy_from_slice(&words);
    Ok(out)
}

fn mask_to_bools(mask: &[u64]) -> Box<[bool]> {
    (0..LEAF_VOXELS).map(|n| bit(mask, n)).collect()
}

/// Reads the whole tree (topology, then leaf buffers) of one grid.
fn read_tree<T: VdbValue>(cur: &mut Cursor<'_>, ctx: &Ctx, codec: LeafCodec) -> Result<Tree<T>> {
    let _buffer_count = cur.i32("tree buffer count")?;
    let background = T::from_le(cur.take(T::SIZE, "background value")?);
    let num_tiles = cur.u32("root tile count")?;
    let num_children = cur.u32("root child count")?;
    cur.ensure(
        u64::from(num_tiles) * (12 + T::SIZE as u64 + 1),
        "root tiles",
    )?;
    let mut tree = Tree::empty(background);
    for _ in 0..num_tiles {
        let at = cur.offset();
        let origin = aligned(cur.coord("root tile origin")?, UPPER_TOTAL, at)?;
        let value = T::from_le(cur.take(T::SIZE, "root tile value")?);
        let active = cur.u8("root tile active flag")? != 0;
        tree.root.push((origin, RootEntry::Tile { value, active }));
    }
    // An upper node's topology needs at least its two masks.
    cur.ensure(u64::from(num_children) * (12 + 2 * 4096), "root children")?;
    for _ in 0..num_children {
        let at = cur.offset();
        let origin = aligned(cur.coord("root child origin")?, UPPER_TOTAL, at)?;
        let mut upper = read_internal(cur, ctx, background, origin, UPPER_LOG2)?;
        upper.first_child = tree.lowers.len();
        for n in child_slots(&upper) {
            let lower_origin = slot_origin(origin, n, UPPER_LOG2, LOWER_TOTAL);
            let mut lower = read_internal(cur, ctx, background, lower_origin, LOWER_LOG2)?;
            lower.first_child = tree.leaves.len();
            for m in child_slots(&lower) {
                let value_mask = leaf_mask(cur)?;
                tree.leaves.push(Leaf {
                    origin: slot_origin(lower_origin, m, LOWER_LOG2, LEAF_LOG2),
                    value_mask,
                    values: Box::new([]),
                });
            }
            tree.lowers.push(lower);
        }
        tree.root
            .push((origin, RootEntry::Child(tree.uppers.len())));
        tree.uppers.push(upper);
    }
    tree.root.sort_by_key(|entry| entry.0);
    if let Some(w) = tree.root.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(VdbError::corrupt(
            cur.offset(),
            format!("root holds two entries at {:?}", w[0].0),
        ));
    }
    // Buffers come in root-map order (sorted origins), depth first.
    let order: Vec<usize> = tree
        .root
        .iter()
        .filter_map(|(_, e)| match e {
            RootEntry::Child(i) => Some(*i),
            RootEntry::Tile { .. } => None,
        })
        .collect();
    for u in order {
        let upper = &tree.uppers[u];
        for l in upper.first_child..upper.first_child + upper.child_count() {
            let lower = &tree.lowers[l];
            for f in lower.first_child..lower.first_child + lower.child_count() {
                let leaf = &mut tree.leaves[f];
                read_leaf_buffer(cur, ctx, background, codec, leaf)?;
            }
        }
    }
    Ok(tree)
}

fn child_slots<T: VdbValue>(node: &Internal<T>) -> Vec<usize> {
    let slots = node.child_mask.len() * 64;
    (0..slots).filter(|n| bit(&node.child_mask, *n)).collect()
}

fn aligned(origin: [i32; 3], log2: u32, at: u64) -> Result<[i32; 3]> {
    let mask = (1i32 << log2) - 1;
    if origin.iter().any(|v| v & mask != 0) {
        return Err(VdbError::corrupt(
            at,
            format!("node origin {origin:?} is not a multiple of {}", 1 << log2),
        ));
    }
    Ok(origin)
}

fn read_leaf_buffer<T: VdbValue>(
    cur: &mut Cursor<'_>,
    ctx: &Ctx,
    background: T,
    codec: LeafCodec,
    leaf: &mut Leaf<T>,
) -> Result<()> {
    // Seekable readers (OpenVDB's own for files) keep the topology's copy of the mask.
    let _mask_copy = cur.take(LEAF_WORDS * 8, "leaf buffer value mask")?;
    let at = cur.offset();
    let check_origin = |cur: &mut Cursor<'_>| -> Result<()> {
        let stored = cur.coord("leaf origin")?;
        if stored != leaf.origin {
            return Err(VdbError::corrupt(
                at,
                format!(
                    "leaf origin {stored:?} where {:?} was expected",
                    leaf.origin
                ),
            ));
        }
        Ok(())
    };
    match codec {
        LeafCodec::Values => {
            if ctx.version < NODE_MASK_COMPRESSION {
                check_origin(cur)?;
                let buffers = cur.u8("leaf buffer count")?;
                if buffers != 1 {
                    return Err(VdbError::UnsupportedCompression {
                        offset: at,
                        reason: format!("{buffers} buffers per leaf"),
                    });
                }
            }
            leaf.values = read_values(cur, ctx, background, &leaf.value_mask, LEAF_VOXELS)?;
        }
        LeafCodec::BoolBits => {
            check_origin(cur)?;
            let bits = cur.mask(LEAF_WORDS, "bool leaf values")?;
            leaf.values = mask_to_bools(&bits)
                .iter()
                .map(|b| T::from_bool(*b))
                .collect();
        }
        LeafCodec::MaskOnly => {
            check_origin(cur)?;
            leaf.values = mask_to_bools(&leaf.value_mask)
                .iter()
                .map(|b| T::from_bool(*b))
                .collect();
        }
    }
    Ok(())
}
