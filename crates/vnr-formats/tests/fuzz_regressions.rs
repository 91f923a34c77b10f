//! Regressions found by the cargo-fuzz targets in `fuzz/` (see `fuzz/README.md`).
//!
//! Each test rebuilds the input that broke a reader (tiny inputs as byte literals, larger ones
//! generated here from our own writer) and asserts the reader's answer: a typed error or a
//! correct grid, never a panic or an unbounded allocation.

use vnr_formats::vdb::{
    vdb_bytes, AnyGrid, Grid, GridClass, Transform, Tree, VdbFile, WriteOptions,
};

/// Appends an OpenVDB string (u32 length, bytes).
fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A version-224 file holding `base` and then `instances` grids that instance it (share its
/// tree, as OpenVDB writes `grid.copy()`): each instance is a descriptor naming `base` as its
/// parent plus a grid header (compression flags, empty metadata, unit `UniformScaleMap`) and no
/// tree of its own, about 200 bytes.
fn instanced_file(base: &Grid<f32>, instances: usize) -> Vec<u8> {
    let mut out = vdb_bytes(&[base], WriteOptions::default()).expect("write base grid");
    // The grid count sits just before the first descriptor, which starts with the base name.
    let mut name = (base.name.len() as u32).to_le_bytes().to_vec();
    name.extend_from_slice(base.name.as_bytes());
    let descriptor = out
        .windows(name.len())
        .position(|w| w == name.as_slice())
        .expect("base descriptor");
    let count = i32::try_from(1 + instances).expect("grid count");
    out[descriptor - 4..descriptor].copy_from_slice(&count.to_le_bytes());

    for i in 0..instances {
        put_string(&mut out, &format!("instance{i}"));
        put_string(&mut out, "Tree_float_5_4_3");
        put_string(&mut out, &base.name);
        let mut header = Vec::new();
        header.extend_from_slice(&0u32.to_le_bytes()); // compression flags
        header.extend_from_slice(&0u32.to_le_bytes()); // metadata count
        put_string(&mut header, "UniformScaleMap");
        // Scale, then its four derived vectors (voxel size, inverse, 1/s², 1/(2s)).
        for v in [1.0f64, 1.0, 1.0, 1.0, 0.5] {
            for _ in 0..3 {
                header.extend_from_slice(&v.to_le_bytes());
            }
        }
        let grid_pos = (out.len() + 24) as i64;
        let end_pos = grid_pos + header.len() as i64;
        for pos in [grid_pos, end_pos, end_pos] {
            out.extend_from_slice(&pos.to_le_bytes());
        }
        out.extend_from_slice(&header);
    }
    out
}

/// A float grid whose leaves hold varied values, so they stay leaves.
fn leafy_grid(leaves_per_axis: i32) -> Grid<f32> {
    let edge = 8 * leaves_per_axis;
    let voxels = (0..edge).flat_map(move |x| {
        (0..edge).flat_map(move |y| (0..edge).map(move |z| ([x, y, z], (x + 2 * y + 3 * z) as f32)))
    });
    let tree = Tree::from_active_voxels(0.0, voxels);
    let transform = Transform::uniform_scale(1.0).expect("transform");
    Grid::new("base", GridClass::FogVolume, transform, tree)
}

/// Instanced grids read as their parent's tree (OpenVDB `grid.copy()` files). Our writer never
/// writes instances, so this is the only test of that path.
#[test]
fn vdb_instanced_grids_read_their_parents_tree() {
    let base = leafy_grid(2);
    let file = VdbFile::from_bytes(&instanced_file(&base, 3)).expect("instanced file");
    assert_eq!(file.grids.len(), 4);
    for entry in &file.grids {
        let grid = match entry.grid.as_ref().expect("readable grid") {
            AnyGrid::Float(g) => g,
            other => panic!("expected a float grid, got {}", other.value_type()),
        };
        assert_eq!(grid.active_voxel_count(), 16 * 16 * 16);
        assert_eq!(grid.get([3, 5, 7]), (3 + 10 + 21) as f32);
    }
}

/// Fuzz finding (vdb target, by construction from its seed corpus): every instanced grid gets a
/// deep copy of its parent's tree, so memory grows with (instances × tree size) while the file
/// grows with (instances × ~200 bytes). This 4,096-leaf tree with 2,000 instances is ~1.4 MB on
/// disk and needs ~17 GB to read (pyopenvdb writes the same shape of file from `grid.copy()`).
/// Ignored until instances share their parent's tree (or the reader caps the total); then it
/// must finish quickly with either a correct grid per instance or a typed error.
#[test]
#[ignore = "allocates ~17 GB until vdb instanced grids share their parent's tree"]
fn vdb_instanced_grids_do_not_multiply_memory() {
    let base = leafy_grid(16);
    let bytes = instanced_file(&base, 2000);
    assert!(
        bytes.len() < 4 << 20,
        "the input is small: {} bytes",
        bytes.len()
    );
    if let Ok(file) = VdbFile::from_bytes(&bytes) {
        for entry in &file.grids {
            if let Ok(grid) = &entry.grid {
                assert_eq!(grid.active_voxel_count(), 128 * 128 * 128);
            }
        }
    }
}
