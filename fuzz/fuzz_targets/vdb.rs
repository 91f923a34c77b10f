//! `VdbFile::from_bytes` on arbitrary bytes, then every query on every readable grid: active
//! voxel count and bbox, a small dense copy checked voxel by voxel against `get`, and a dense
//! copy of the whole bbox under a small `DenseLimit` (refusal is fine, a panic is not). The same
//! bytes also go through the header-only `list_vdb`, which reads from a path.
#![no_main]

mod scratch;

use libfuzzer_sys::fuzz_target;
use scratch::ScratchFile;
use vnr_formats::vdb::{list_vdb, AnyGrid, BBox, DenseLimit, Grid, VdbFile, VdbValue};

/// Small enough that a fuzz iteration stays fast whatever the bbox says.
const LIMIT: DenseLimit = DenseLimit {
    max_voxels: 1 << 16,
};
/// Edge of the probe box compared against `get`.
const PROBE_EDGE: i32 = 12;

/// True for NaN (or a vector holding one): dense copy and `get` agree when both are.
#[allow(clippy::eq_op)]
fn unequal_to_itself<T: PartialEq>(v: &T) -> bool {
    v != v
}

fn exercise<T: VdbValue>(grid: &Grid<T>) {
    let count = grid.active_voxel_count();
    let Some(bbox) = grid.active_bbox() else {
        assert_eq!(count, 0, "active voxels but no active bbox");
        return;
    };
    assert!(count > 0, "an active bbox {bbox:?} but no active voxels");
    // Whole bbox: usually over the limit, which must be a typed refusal.
    if let Ok(dense) = grid.to_dense(bbox, LIMIT) {
        assert_eq!(dense.len() as u128, bbox.volume());
    }
    // A box straddling the bbox's min corner, so the dense path runs on every grid.
    let min = bbox.min.map(|v| v.saturating_sub(PROBE_EDGE / 2));
    let probe = BBox::new(min, min.map(|v| v.saturating_add(PROBE_EDGE - 1)));
    let dense = match grid.to_dense(probe, LIMIT) {
        Ok(d) => d,
        Err(e) => panic!("a {PROBE_EDGE}³ dense copy was refused: {e}"),
    };
    assert_eq!(dense.len() as u128, probe.volume());
    for (ijk, got) in probe.iter().zip(dense) {
        let want = grid.get(ijk);
        let nan_both = unequal_to_itself(&want) && unequal_to_itself(&got);
        assert!(
            got == want || nan_both,
            "dense {got:?} != get {want:?} at {ijk:?}"
        );
    }
    // Active voxels lie in the bbox (bounded walk: tiles can hold billions).
    for (ijk, _) in grid.active_voxels().take(1 << 12) {
        assert!(
            bbox.contains(ijk),
            "active voxel {ijk:?} outside bbox {bbox:?}"
        );
    }
}

fn exercise_any(grid: &AnyGrid) {
    match grid {
        AnyGrid::Float(g) => exercise(g),
        AnyGrid::Double(g) => exercise(g),
        AnyGrid::Int32(g) => exercise(g),
        AnyGrid::Int64(g) => exercise(g),
        AnyGrid::Bool(g) | AnyGrid::Mask(g) => exercise(g),
        AnyGrid::Vec3f(g) => exercise(g),
        AnyGrid::Vec3d(g) => exercise(g),
        AnyGrid::Vec3i(g) => exercise(g),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = VdbFile::from_bytes(data) {
        for grid in file.grids.iter().filter_map(|e| e.grid.as_ref().ok()) {
            exercise_any(grid);
        }
    }
    // list_vdb only reads paths.
    if let Ok(file) = ScratchFile::new("vdb", data) {
        let _ = list_vdb(file.path());
    }
});
