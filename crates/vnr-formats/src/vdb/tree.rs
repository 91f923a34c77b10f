//! The 5-4-3 tree: a sorted root table, 32³ upper and 16³ lower internal nodes, 8³ leaves.
//!
//! Nodes live in flat per-level arrays; an internal node finds its `n`-th child by the rank of
//! its bit in the child mask, so lookups need no per-slot pointer tables.

use super::error::{Result, VdbError};
use super::value::VdbValue;

/// log2 of a leaf's edge (8 voxels).
pub(crate) const LEAF_LOG2: u32 = 3;
/// log2 of a lower internal node's edge in children (16).
pub(crate) const LOWER_LOG2: u32 = 4;
/// log2 of an upper internal node's edge in children (32).
pub(crate) const UPPER_LOG2: u32 = 5;
/// log2 of the voxel edge of a lower node (128) and an upper node (4096).
pub(crate) const LOWER_TOTAL: u32 = LEAF_LOG2 + LOWER_LOG2;
pub(crate) const UPPER_TOTAL: u32 = LOWER_TOTAL + UPPER_LOG2;
/// Voxels per leaf.
pub const LEAF_VOXELS: usize = 1 << (3 * LEAF_LOG2);

/// An inclusive box of voxel coordinates, `min..=max` on each axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BBox {
    /// Smallest corner (inclusive).
    pub min: [i32; 3],
    /// Largest corner (inclusive).
    pub max: [i32; 3],
}

impl BBox {
    /// The box `min..=max`.
    pub fn new(min: [i32; 3], max: [i32; 3]) -> Self {
        BBox { min, max }
    }

    /// The cube of edge `2^log2` at `origin`.
    pub(crate) fn cube(origin: [i32; 3], log2: u32) -> Self {
        let edge = (1i64 << log2) - 1;
        let max = origin.map(|o| (i64::from(o) + edge).min(i64::from(i32::MAX)) as i32);
        BBox { min: origin, max }
    }

    /// Voxels per axis (0 when empty).
    pub fn dims(&self) -> [u64; 3] {
        std::array::from_fn(|k| (i64::from(self.max[k]) - i64::from(self.min[k]) + 1).max(0) as u64)
    }

    /// Number of voxels.
    pub fn volume(&self) -> u128 {
        self.dims().iter().map(|d| u128::from(*d)).product()
    }

    /// Whether `ijk` lies inside.
    pub fn contains(&self, ijk: [i32; 3]) -> bool {
        (0..3).all(|k| self.min[k] <= ijk[k] && ijk[k] <= self.max[k])
    }

    /// The overlap, if any.
    pub fn intersect(&self, other: &BBox) -> Option<BBox> {
        let b = BBox {
            min: std::array::from_fn(|k| self.min[k].max(other.min[k])),
            max: std::array::from_fn(|k| self.max[k].min(other.max[k])),
        };
        (0..3).all(|k| b.min[k] <= b.max[k]).then_some(b)
    }

    /// The smallest box holding both.
    pub fn union(&self, other: &BBox) -> BBox {
        BBox {
            min: std::array::from_fn(|k| self.min[k].min(other.min[k])),
            max: std::array::from_fn(|k| self.max[k].max(other.max[k])),
        }
    }

    /// Every voxel, x slowest and z fastest.
    pub fn iter(self) -> impl Iterator<Item = [i32; 3]> {
        let b = self;
        let empty = b.volume() == 0;
        (b.min[0]..=b.max[0])
            .filter(move |_| !empty)
            .flat_map(move |x| {
                (b.min[1]..=b.max[1])
                    .flat_map(move |y| (b.min[2]..=b.max[2]).map(move |z| [x, y, z]))
            })
    }
}

/// The most voxels a dense copy may allocate; copies beyond it fail with
/// [`VdbError::DenseTooLarge`] instead of allocating. Whatever the cap, a copy is also refused
/// when its bytes would exceed `isize::MAX`, the most one allocation can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenseLimit {
    /// Maximum voxel count.
    pub max_voxels: u64,
}

impl DenseLimit {
    /// The cap for values of type `T`: `max_voxels`, lowered to what one allocation can hold.
    fn voxels_of<T>(self) -> u64 {
        let addressable = (isize::MAX as usize / size_of::<T>().max(1)) as u64;
        self.max_voxels.min(addressable)
    }
}

impl Default for DenseLimit {
    /// 512³ voxels (2 GiB of `f32`).
    fn default() -> Self {
        DenseLimit {
            max_voxels: 1 << 27,
        }
    }
}

/// Index of `ijk` among a node's `2^(3·log2)` slots whose children span `2^child_total` voxels:
/// x slowest, z fastest (OpenVDB's `coordToOffset`).
pub(crate) fn slot(ijk: [i32; 3], log2: u32, child_total: u32) -> usize {
    let mask = (1i32 << (log2 + child_total)) - 1;
    let part = |v: i32| ((v & mask) >> child_total) as usize;
    (part(ijk[0]) << (2 * log2)) | (part(ijk[1]) << log2) | part(ijk[2])
}

/// Origin of slot `n` of a node at `origin` (inverse of [`slot`]).
pub(crate) fn slot_origin(origin: [i32; 3], n: usize, log2: u32, child_total: u32) -> [i32; 3] {
    let dim = (1usize << log2) - 1;
    let local = [n >> (2 * log2), (n >> log2) & dim, n & dim];
    std::array::from_fn(|k| origin[k].wrapping_add(((local[k] as i64) << child_total) as i32))
}

pub(crate) fn bit(mask: &[u64], n: usize) -> bool {
    mask.get(n >> 6).is_some_and(|w| w >> (n & 63) & 1 == 1)
}

pub(crate) fn set_bit(mask: &mut [u64], n: usize) {
    if let Some(w) = mask.get_mut(n >> 6) {
        *w |= 1 << (n & 63);
    }
}

pub(crate) fn count_on(mask: &[u64]) -> usize {
    mask.iter().map(|w| w.count_ones() as usize).sum()
}

pub(crate) fn on_bits(mask: &[u64]) -> impl Iterator<Item = usize> + '_ {
    mask.iter().enumerate().flat_map(|(wi, &w)| {
        let mut rest = w;
        std::iter::from_fn(move || {
            (rest != 0).then(|| {
                let b = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                wi * 64 + b
            })
        })
    })
}

/// An 8³ leaf: its value mask and all 512 values (`[x][y][z]`, z fastest).
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf<T> {
    pub(crate) origin: [i32; 3],
    pub(crate) value_mask: [u64; 8],
    pub(crate) values: Box<[T]>,
}

impl<T: VdbValue> Leaf<T> {
    /// Coordinates of the leaf's first voxel (multiples of 8).
    pub fn origin(&self) -> [i32; 3] {
        self.origin
    }
    /// All 512 values, active and inactive, `[x][y][z]` with z fastest.
    pub fn values(&self) -> &[T] {
        &self.values
    }
    /// Whether voxel `n` (same order as [`Self::values`]) is active.
    pub fn is_active(&self, n: usize) -> bool {
        bit(&self.value_mask, n)
    }
    /// Number of active voxels.
    pub fn active_count(&self) -> usize {
        count_on(&self.value_mask)
    }
    /// Bounding box of the active voxels, from the mask alone: word `x` of the mask holds row
    /// x, byte `y` of a word holds the z bits of (x, y).
    pub fn active_bbox(&self) -> Option<BBox> {
        let (mut x_lo, mut x_hi, mut y_bits, mut z_bits) = (u32::MAX, 0u32, 0u8, 0u8);
        for (x, word) in self.value_mask.iter().enumerate() {
            if *word == 0 {
                continue;
            }
            x_lo = x_lo.min(x as u32);
            x_hi = x as u32;
            for (y, byte) in word.to_le_bytes().iter().enumerate() {
                if *byte != 0 {
                    y_bits |= 1 << y;
                    z_bits |= byte;
                }
            }
        }
        if y_bits == 0 {
            return None;
        }
        let lo = [x_lo, y_bits.trailing_zeros(), z_bits.trailing_zeros()];
        let hi = [x_hi, 7 - y_bits.leading_zeros(), 7 - z_bits.leading_zeros()];
        Some(BBox::new(
            std::array::from_fn(|k| self.origin[k] + lo[k] as i32),
            std::array::from_fn(|k| self.origin[k] + hi[k] as i32),
        ))
    }

    /// The active voxels as (ijk, value).
    pub fn active_voxels(&self) -> impl Iterator<Item = ([i32; 3], T)> + '_ {
        on_bits(&self.value_mask)
            .map(move |n| (slot_origin(self.origin, n, LEAF_LOG2, 0), self.values[n]))
    }
}

/// An internal node: child/value masks, a value per slot (tile values), children by rank.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Internal<T> {
    pub(crate) origin: [i32; 3],
    pub(crate) child_mask: Box<[u64]>,
    pub(crate) value_mask: Box<[u64]>,
    pub(crate) values: Box<[T]>,
    /// Children before each mask word, for rank lookups.
    pub(crate) rank: Box<[u32]>,
    /// Index of the first child in the next level's array.
    pub(crate) first_child: usize,
}

impl<T: VdbValue> Internal<T> {
    pub(crate) fn new(
        origin: [i32; 3],
        child_mask: Box<[u64]>,
        value_mask: Box<[u64]>,
        values: Box<[T]>,
    ) -> Self {
        let mut total = 0u32;
        let rank = child_mask
            .iter()
            .map(|w| {
                let before = total;
                total += w.count_ones();
                before
            })
            .collect();
        Internal {
            origin,
            child_mask,
            value_mask,
            values,
            rank,
            first_child: 0,
        }
    }

    pub(crate) fn child_count(&self) -> usize {
        count_on(&self.child_mask)
    }

    /// Index (in the next level) of the child at slot `n`, if there is one.
    pub(crate) fn child(&self, n: usize) -> Option<usize> {
        let w = *self.child_mask.get(n >> 6)?;
        let b = n & 63;
        (w >> b & 1 == 1).then(|| {
            let below = (w & ((1u64 << b) - 1)).count_ones();
            self.first_child + (self.rank[n >> 6] + below) as usize
        })
    }

    /// Active tiles: slots with the value bit on and no child.
    fn active_tiles(&self) -> impl Iterator<Item = usize> + '_ {
        on_bits(&self.value_mask).filter(|n| !bit(&self.child_mask, *n))
    }
}

/// One entry of the root table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RootEntry<T> {
    Tile { value: T, active: bool },
    Child(usize),
}

/// A sparse voxel tree with OpenVDB's 5-4-3 layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree<T> {
    pub(crate) background: T,
    /// Sorted by origin (lexicographic x, y, z like OpenVDB's root map); origins are multiples of 4096.
    pub(crate) root: Vec<([i32; 3], RootEntry<T>)>,
    pub(crate) uppers: Vec<Internal<T>>,
    pub(crate) lowers: Vec<Internal<T>>,
    pub(crate) leaves: Vec<Leaf<T>>,
}

fn root_key(ijk: [i32; 3]) -> [i32; 3] {
    ijk.map(|v| v & !((1i32 << UPPER_TOTAL) - 1))
}

impl<T: VdbValue> Tree<T> {
    /// An empty tree.
    pub fn empty(background: T) -> Self {
        Tree {
            background,
            root: Vec::new(),
            uppers: Vec::new(),
            lowers: Vec::new(),
            leaves: Vec::new(),
        }
    }

    /// The value of voxels outside every node.
    pub fn background(&self) -> T {
        self.background
    }

    /// All leaves.
    pub fn leaves(&self) -> &[Leaf<T>] {
        &self.leaves
    }

    /// Value and active state at `ijk`: a leaf voxel, else the enclosing tile, else background.
    pub fn probe(&self, ijk: [i32; 3]) -> (T, bool) {
        let key = root_key(ijk);
        let Ok(pos) = self.root.binary_search_by(|(o, _)| o.cmp(&key)) else {
            return (self.background, false);
        };
        let upper = match &self.root[pos].1 {
            RootEntry::Tile { value, active } => return (*value, *active),
            RootEntry::Child(i) => &self.uppers[*i],
        };
        let n = slot(ijk, UPPER_LOG2, LOWER_TOTAL);
        let Some(li) = upper.child(n) else {
            return (upper.values[n], bit(&upper.value_mask, n));
        };
        let lower = &self.lowers[li];
        let n = slot(ijk, LOWER_LOG2, LEAF_LOG2);
        let Some(fi) = lower.child(n) else {
            return (lower.values[n], bit(&lower.value_mask, n));
        };
        let leaf = &self.leaves[fi];
        let n = slot(ijk, LEAF_LOG2, 0);
        (leaf.values[n], bit(&leaf.value_mask, n))
    }

    /// The value at `ijk` (stored inactive values and background included).
    pub fn get(&self, ijk: [i32; 3]) -> T {
        self.probe(ijk).0
    }

    /// Whether `ijk` is active.
    pub fn is_active(&self, ijk: [i32; 3]) -> bool {
        self.probe(ijk).1
    }

    /// Active tiles as (box, value), at every level.
    pub fn active_tiles(&self) -> Vec<(BBox, T)> {
        let mut out = Vec::new();
        for (origin, entry) in &self.root {
            if let RootEntry::Tile {
                value,
                active: true,
            } = entry
            {
                out.push((BBox::cube(*origin, UPPER_TOTAL), *value));
            }
        }
        for (nodes, log2, child_total) in [
            (&self.uppers, UPPER_LOG2, LOWER_TOTAL),
            (&self.lowers, LOWER_LOG2, LEAF_LOG2),
        ] {
            for node in nodes {
                for n in node.active_tiles() {
                    out.push((
                        BBox::cube(slot_origin(node.origin, n, log2, child_total), child_total),
                        node.values[n],
                    ));
                }
            }
        }
        out
    }

    /// Active voxels, counting every voxel of an active tile (like OpenVDB's `activeVoxelCount`).
    pub fn active_voxel_count(&self) -> u64 {
        let leaf: u64 = self.leaves.iter().map(|l| l.active_count() as u64).sum();
        let tiles: u64 = self
            .active_tiles()
            .iter()
            .map(|(b, _)| u64::try_from(b.volume()).unwrap_or(u64::MAX))
            .fold(0, u64::saturating_add);
        leaf.saturating_add(tiles)
    }

    /// Bounding box of the active voxels and tiles, or `None` when nothing is active.
    pub fn active_bbox(&self) -> Option<BBox> {
        let mut acc: Option<BBox> = None;
        let mut add = |b: BBox| acc = Some(acc.map_or(b, |a| a.union(&b)));
        for leaf in &self.leaves {
            if let Some(b) = leaf.active_bbox() {
                add(b);
            }
        }
        for (b, _) in self.active_tiles() {
            add(b);
        }
        acc
    }

    /// Every active voxel as (ijk, value): leaf voxels first, then the voxels of active tiles.
    pub fn active_voxels(&self) -> impl Iterator<Item = ([i32; 3], T)> + '_ {
        let tiles = self.active_tiles();
        self.leaves.iter().flat_map(Leaf::active_voxels).chain(
            tiles
                .into_iter()
                .flat_map(|(b, v)| b.iter().map(move |ijk| (ijk, v))),
        )
    }

    /// Values over `bbox` as a flat vector `[x][y][z]` (z fastest, like OpenVDB's `Dense`),
    /// inactive and background values included. Refuses boxes above `limit`, or whose bytes
    /// exceed `isize::MAX`, before allocating ([`VdbError::DenseTooLarge`]).
    pub fn to_dense(&self, bbox: BBox, limit: DenseLimit) -> Result<Vec<T>> {
        let voxels = bbox.volume();
        // A caller's cap of u64::MAX must not reach the allocator with an impossible size.
        let max_voxels = limit.voxels_of::<T>();
        if voxels > u128::from(max_voxels) {
            return Err(VdbError::DenseTooLarge {
                voxels,
                limit: max_voxels,
            });
        }
        let mut dense = vec![self.background; voxels as usize];
        if voxels == 0 {
            return Ok(dense);
        }
        let mut out = DenseView {
            data: &mut dense,
            bbox,
            dims: bbox.dims(),
        };
        for (origin, entry) in &self.root {
            let Some(clip) = BBox::cube(*origin, UPPER_TOTAL).intersect(&bbox) else {
                continue;
            };
            match entry {
                RootEntry::Tile { value, .. } => out.fill(&clip, *value),
                RootEntry::Child(u) => {
                    let upper = &self.uppers[*u];
                    self.internal_to_dense(
                        upper,
                        UPPER_LOG2,
                        LOWER_TOTAL,
                        &clip,
                        &mut out,
                        &|lower, clip, out| {
                            self.internal_to_dense(
                                &self.lowers[lower],
                                LOWER_LOG2,
                                LEAF_LOG2,
                                clip,
                                out,
                                &|leaf, clip, out| out.copy_leaf(&self.leaves[leaf], clip),
                            )
                        },
                    );
                }
            }
        }
        Ok(dense)
    }

    fn internal_to_dense(
        &self,
        node: &Internal<T>,
        log2: u32,
        child_total: u32,
        clip: &BBox,
        out: &mut DenseView<'_, T>,
        child_fn: &dyn Fn(usize, &BBox, &mut DenseView<'_, T>),
    ) {
        let edge = 1i64 << child_total;
        let local = |k: usize, v: i32| ((i64::from(v) - i64::from(node.origin[k])) / edge) as usize;
        let (lo, hi): ([usize; 3], [usize; 3]) = (
            std::array::from_fn(|k| local(k, clip.min[k])),
            std::array::from_fn(|k| local(k, clip.max[k])),
        );
        for x in lo[0]..=hi[0] {
            for y in lo[1]..=hi[1] {
                for z in lo[2]..=hi[2] {
                    let n = (x << (2 * log2)) | (y << log2) | z;
                    let Some(sub) =
                        BBox::cube(slot_origin(node.origin, n, log2, child_total), child_total)
                            .intersect(clip)
                    else {
                        continue;
                    };
                    match node.child(n) {
                        Some(c) => child_fn(c, &sub, out),
                        None => out.fill(&sub, node.values[n]),
                    }
                }
            }
        }
    }
}

/// A dense `[x][y][z]` buffer covering `bbox`.
struct DenseView<'a, T> {
    data: &'a mut [T],
    bbox: BBox,
    /// `bbox.dims()`, cached: it is needed for every row.
    dims: [u64; 3],
}

impl<T: VdbValue> DenseView<'_, T> {
    fn index(&self, ijk: [i32; 3]) -> usize {
        let d = self.dims;
        let l: [u64; 3] =
            std::array::from_fn(|k| (i64::from(ijk[k]) - i64::from(self.bbox.min[k])) as u64);
        ((l[0] * d[1] + l[1]) * d[2] + l[2]) as usize
    }

    fn fill(&mut self, region: &BBox, value: T) {
        let len = region.dims()[2] as usize;
        for x in region.min[0]..=region.max[0] {
            for y in region.min[1]..=region.max[1] {
                let start = self.index([x, y, region.min[2]]);
                self.data[start..start + len].fill(value);
            }
        }
    }

    fn copy_leaf(&mut self, leaf: &Leaf<T>, region: &BBox) {
        let len = region.dims()[2] as usize;
        for x in region.min[0]..=region.max[0] {
            for y in region.min[1]..=region.max[1] {
                let start = self.index([x, y, region.min[2]]);
                let src = slot([x, y, region.min[2]], LEAF_LOG2, 0);
                self.data[start..start + len].copy_from_slice(&leaf.values[src..src + len]);
            }
        }
    }
}
