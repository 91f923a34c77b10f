//! Regressions found by the cargo-fuzz targets in `fuzz/` (see `fuzz/README.md`).
//!
//! Each test rebuilds the input that broke a reader (tiny inputs as byte literals, larger ones
//! generated here from our own writer) and asserts the reader's answer: a typed error or a
//! correct grid, never a panic or an unbounded allocation.

use vnr_formats::mesh::{MeshError, TriangleMesh};
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

/// Fuzz finding (vdb target, by construction from its seed corpus): every instanced grid got a
/// deep copy of its parent's tree, so memory grew with (instances × tree size) while the file
/// grows with (instances × ~200 bytes). This 4,096-leaf tree with 2,000 instances is ~1.4 MB on
/// disk and needed ~17 GB to read (pyopenvdb writes the same shape of file from `grid.copy()`).
/// Instances now share their parent's tree, as in OpenVDB: each costs a pointer.
#[test]
fn vdb_instanced_grids_do_not_multiply_memory() {
    let base = leafy_grid(16);
    let bytes = instanced_file(&base, 2000);
    assert!(
        bytes.len() < 4 << 20,
        "the input is small: {} bytes",
        bytes.len()
    );
    let file = VdbFile::from_bytes(&bytes).expect("instanced file");
    assert_eq!(file.grids.len(), 2001);
    fn float_grid(entry: &vnr_formats::vdb::GridEntry) -> &Grid<f32> {
        match entry.grid.as_ref() {
            Ok(AnyGrid::Float(g)) => g,
            Ok(other) => panic!("expected a float grid, got {}", other.value_type()),
            Err(e) => panic!("unreadable grid: {e}"),
        }
    }
    let parent = float_grid(&file.grids[0]);
    assert_eq!(parent.leaves().len(), 16 * 16 * 16);
    assert_eq!(parent.active_voxel_count(), 128 * 128 * 128);
    for entry in &file.grids[1..] {
        let instance = float_grid(entry);
        assert!(
            std::sync::Arc::ptr_eq(&instance.tree, &parent.tree),
            "{} holds its own copy of the parent's tree",
            instance.name
        );
    }
}

/// A PLY file: one vertex at the origin, then an element `junk` with `count` instances and no
/// properties.
fn ply_with_empty_element(format: &str, count: u64, vertex: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "ply\nformat {format} 1.0\nelement vertex 1\nproperty float x\nproperty float y\n\
         property float z\nelement junk {count}\nend_header\n"
    )
    .into_bytes();
    out.extend_from_slice(vertex);
    out
}

/// Fuzz finding (mesh_ply, OOM, minimised from
/// `element vertex 444 / element face 3 / element vertex 44444444` with no properties): a binary
/// PLY element without properties takes no bytes per instance, so ply-rs "reads" `count` of them
/// from nothing and allocates one `DefaultElement` map each (count 10⁸ in a 140-byte file took
/// 7 GB and 14 s; this one, 4·10⁹, would need ~280 GB). `read_ply_from` now refuses such an
/// element from the header alone.
#[test]
fn ply_binary_element_without_properties_is_an_error() {
    let bytes = ply_with_empty_element("binary_little_endian", 4_000_000_000, &[0; 12]);
    let result = TriangleMesh::read_ply_from(&mut bytes.as_slice());
    assert!(
        matches!(
            result,
            Err(MeshError::PlyElementWithoutProperties { ref element, count: 4_000_000_000 })
                if element == "junk"
        ),
        "{result:?}"
    );
}

/// The ASCII twin of the finding above: refused before the payload is read, as is a count that
/// merely exceeds the lines left.
#[test]
fn ply_ascii_element_count_beyond_the_file_is_an_error() {
    let bytes = ply_with_empty_element("ascii", 4_000_000_000, b"0 0 0\n");
    let result = TriangleMesh::read_ply_from(&mut bytes.as_slice());
    assert!(
        matches!(result, Err(MeshError::PlyElementWithoutProperties { .. })),
        "{result:?}"
    );
    let vertices = b"ply\nformat ascii 1.0\nelement vertex 4000000000\nproperty float x\n\
        property float y\nproperty float z\nend_header\n0 0 0\n";
    let result = TriangleMesh::read_ply_from(&mut &vertices[..]);
    assert!(
        matches!(
            result,
            Err(MeshError::PlyPayloadTooShort {
                required: 4_000_000_000,
                available: 1,
                unit: "lines"
            })
        ),
        "{result:?}"
    );
}

/// The minimised fuzz input itself (a second, property-less `vertex` element of 44,444,444,
/// which ply-rs lets replace the first): refused as a duplicate element before any allocation.
#[test]
fn ply_duplicate_vertex_element_is_bounded() {
    let bytes: &[u8] = b"ply\nformat binary_big_endian 1.0\ncomment 2seed\nelement vertex 444\n\
        element face 3\nproperty list uchar uint ve\ncomment d\nelement vertex 44444444\n\
        property double zesy\nend_header\n\0\0\0\0\0\0\0\0\xba";
    let result = TriangleMesh::read_ply_from(&mut &bytes[..]);
    assert!(
        matches!(result, Err(MeshError::PlyDuplicateElement(ref name)) if name == "vertex"),
        "{result:?}"
    );
}
