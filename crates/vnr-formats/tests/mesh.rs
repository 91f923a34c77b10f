//! Mesh readers/writers: fixture counts from the README, round trips, bad input.

use std::io::Cursor;

use vnr_formats::mesh::{EdgeStats, MeshError, TriangleMesh};
use vnr_formats::testing::fixture;

/// A closed octahedron: 6 vertices, 8 triangles, 12 edges, all shared by two triangles.
fn octahedron() -> TriangleMesh {
    let positions = vec![
        [1.0, 0.0, 0.0],
        [-1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, -1.0, 0.0],
        [0.0, 0.0, 1.0],
        [0.0, 0.0, -0.5],
    ];
    let triangles = vec![
        [0, 2, 4],
        [2, 1, 4],
        [1, 3, 4],
        [3, 0, 4],
        [2, 0, 5],
        [1, 2, 5],
        [3, 1, 5],
        [0, 3, 5],
    ];
    TriangleMesh::new(positions, triangles).unwrap()
}

/// Each triangle's corner positions: the geometry, independent of vertex numbering.
fn corners(mesh: &TriangleMesh) -> Vec<[[f32; 3]; 3]> {
    mesh.triangles
        .iter()
        .map(|t| t.map(|i| mesh.positions[i as usize]))
        .collect()
}

fn write_text(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn spot_is_closed_once_uv_seams_are_ignored() {
    let Some(path) = fixture("meshes/spot.obj") else {
        return;
    };
    let mesh = TriangleMesh::read(path).unwrap();
    assert_eq!(mesh.triangles.len(), 5_856);
    // UV indices are ignored, so seams never split positions in the first place.
    assert_eq!(mesh.positions.len(), 2_930);
    let merged = mesh.merge_vertices_by_position();
    assert_eq!(merged.positions.len(), 2_930);
    let stats = merged.edge_stats();
    assert_eq!(stats.boundary_edges, 0);
    assert_eq!(stats.non_manifold_edges, 0);
    // Closed genus 0: V - E + F = 2.
    assert_eq!(2_930 + 5_856 - stats.edges as i64, 2);
}

#[test]
fn stanford_bunny_counts() {
    let Some(path) = fixture("meshes/stanford-bunny.obj") else {
        return;
    };
    let mesh = TriangleMesh::read(path).unwrap();
    // The file lists 35,947 `v` lines; 34,834 of them are used by faces and kept.
    assert_eq!(mesh.positions.len(), 34_834);
    assert_eq!(mesh.triangles.len(), 69_451);
    assert_eq!(mesh.boundary_edge_count(), 223);
    assert_eq!(mesh.non_manifold_edge_count(), 0);
    let merged = mesh.merge_vertices_by_position();
    assert_eq!(merged.positions.len(), 34_834);
    assert_eq!(merged.boundary_edge_count(), 223);
}

#[test]
fn teapot_counts_before_and_after_merging() {
    let Some(path) = fixture("meshes/teapot.obj") else {
        return;
    };
    let mesh = TriangleMesh::read(path).unwrap();
    assert_eq!(mesh.positions.len(), 3_644);
    assert_eq!(mesh.triangles.len(), 6_320);
    // The README's 1,036 boundary edges are the file's own index topology: its Bézier patch
    // borders repeat positions under different indices.
    assert_eq!(mesh.boundary_edge_count(), 1_036);
    let merged = mesh.merge_vertices_by_position();
    assert_eq!(merged.positions.len(), 3_241);
    assert_eq!(merged.triangles.len(), 6_320);
    // Once the seams are welded only the real openings remain.
    assert_eq!(merged.boundary_edge_count(), 160);
    assert_eq!(merged.non_manifold_edge_count(), 0);
}

#[test]
fn suzanne_quads_are_triangulated_and_an_edge_is_non_manifold() {
    let Some(path) = fixture("meshes/suzanne.obj") else {
        return;
    };
    let mesh = TriangleMesh::read(path).unwrap();
    assert_eq!(mesh.positions.len(), 507);
    assert_eq!(mesh.triangles.len(), 968);
    assert_eq!(mesh.non_manifold_edge_count(), 1);
    let merged = mesh.merge_vertices_by_position();
    assert_eq!(merged.positions.len(), 505);
    assert_eq!(merged.non_manifold_edge_count(), 1);
    let (lo, hi) = mesh.bounding_box().unwrap();
    assert!(lo.iter().zip(&hi).all(|(l, h)| l < h));
}

#[test]
fn hand_written_obj_with_quad_polygon_and_uvs() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_text(
        &dir,
        "quad.OBJ",
        "# a unit square and a pentagon\r\n\
         mtllib missing.mtl\n\
         o square\n\
         v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\n\
         vt 0 0\nvt 1 0\nvn 0 0 1\n\
         usemtl nothing\n\
         f 1/1/1 2/2/1 3/2/1 4/1/1\n\
         o pentagon\n\
         v 0 0 1\nv 1 0 1\nv 2 1 1\nv 1 2 1\nv 0 1 1\n\
         f -5//1 -4//1 -3//1 -2//1 -1//1\n\
         l 1 2\n",
    );
    let mesh = TriangleMesh::read(&path).unwrap();
    assert_eq!(mesh.positions.len(), 9);
    // Fan triangulation: quad → (0,1,2), (0,2,3); pentagon → three triangles from its first vertex.
    assert_eq!(
        mesh.triangles,
        vec![[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7], [4, 7, 8]]
    );
    assert_eq!(mesh.positions[6], [2.0, 1.0, 1.0]);
    assert_eq!(
        mesh.bounding_box(),
        Some(([0.0, 0.0, 0.0], [2.0, 2.0, 1.0]))
    );
    // An open square: 4 border edges, one interior diagonal.
    assert_eq!(mesh.boundary_edge_count(), 4 + 5);
}

#[test]
fn obj_objects_are_concatenated() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_text(
        &dir,
        "two.obj",
        "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\no a\nf 1 2 3\ng b\nf 1 3 4\nf 2 4 3\n",
    );
    let mesh = TriangleMesh::read(path).unwrap();
    assert_eq!(mesh.triangles.len(), 3);
    // Each object numbers its own vertices: shared corners appear once per object.
    assert_eq!(mesh.positions.len(), 3 + 4);
    assert_eq!(mesh.triangles[0], [0, 1, 2]);
    assert_eq!(mesh.triangles[1], [3, 4, 5]);
    let merged = mesh.merge_vertices_by_position();
    assert_eq!(merged.positions.len(), 4);
    assert_eq!(merged.triangles, vec![[0, 1, 2], [0, 2, 3], [1, 3, 2]]);
}

#[test]
fn bad_obj_input_gives_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", "out of range"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", "zero index"),
        (
            "v 0 0 0\nv 1 0 0\nv 0 1 0\nf -4 1 2\n",
            "relative before start",
        ),
        (
            "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1/9 2/9 3/-99\n",
            "bad uv ignored",
        ),
        ("v 0 0 nan\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "nan"),
        ("v 0 0 zero\nf 1 2 3\n", "unparsable"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 x\n", "bad face"),
    ];
    for (text, what) in cases {
        let path = write_text(&dir, "bad.obj", text);
        let result = TriangleMesh::read(&path);
        match what {
            "out of range" | "zero index" | "relative before start" => {
                assert!(
                    matches!(result, Err(MeshError::ObjIndexOutOfRange)),
                    "{what}: {result:?}"
                )
            }
            "bad uv ignored" => assert_eq!(result.unwrap().triangles.len(), 1, "{what}"),
            "nan" => assert!(
                matches!(result, Err(MeshError::NonFiniteVertex { vertex: 0, .. })),
                "{what}: {result:?}"
            ),
            _ => assert!(
                matches!(result, Err(MeshError::Obj(_))),
                "{what}: {result:?}"
            ),
        }
    }
}

#[test]
fn empty_files_read_as_empty_meshes() {
    let dir = tempfile::tempdir().unwrap();
    let obj = write_text(&dir, "empty.obj", "# nothing\nv 1 2 3\n");
    let mesh = TriangleMesh::read(obj).unwrap();
    assert!(mesh.is_empty());
    assert_eq!(
        mesh.bounding_box(),
        None,
        "unreferenced OBJ vertices are dropped"
    );
    let ply = write_text(
        &dir,
        "points.ply",
        "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n\
         property float z\nend_header\n1 2 3\n",
    );
    let mesh = TriangleMesh::read(ply).unwrap();
    assert!(mesh.is_empty());
    assert_eq!(mesh.positions, vec![[1.0, 2.0, 3.0]]);
    assert_eq!(mesh.edge_stats(), EdgeStats::default());
}

#[test]
fn ply_write_read_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut mesh = octahedron();
    mesh.positions[4] = [0.1, -1e-7, 12345.678];
    let path = dir.path().join("octa.ply");
    mesh.write_ply(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.starts_with(b"ply\nformat binary_little_endian 1.0\n"));
    let back = TriangleMesh::read(&path).unwrap();
    assert_eq!(back, mesh);
    assert_eq!(back.boundary_edge_count(), 0);
    assert_eq!(back.edge_stats().edges, 12);
}

#[test]
fn obj_write_read_round_trip_keeps_geometry() {
    let dir = tempfile::tempdir().unwrap();
    let mut mesh = octahedron();
    mesh.positions[1] = [std::f32::consts::PI, -0.0, 1e-30];
    let path = dir.path().join("octa.obj");
    mesh.write_obj(&path).unwrap();
    let back = TriangleMesh::read(&path).unwrap();
    // The OBJ reader renumbers vertices in order of first reference (tobj), so compare geometry.
    assert_eq!(back.positions.len(), mesh.positions.len());
    assert_eq!(corners(&back), corners(&mesh));
    assert_eq!(back.edge_stats(), mesh.edge_stats());
}

#[test]
fn ascii_ply_with_polygons_and_vertex_index_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_text(
        &dir,
        "quad.ply",
        "ply\nformat ascii 1.0\ncomment from another tool\nelement vertex 5\n\
         property double x\nproperty double y\nproperty double z\nproperty uchar red\n\
         element face 2\nproperty list uchar uint vertex_index\nend_header\n\
         0 0 0 255\n1 0 0 0\n1 1 0 0\n0 1 0 0\n0.5 0.5 1 9\n4 0 1 2 3\n3 0 1 4\n",
    );
    let mesh = TriangleMesh::read(&path).unwrap();
    assert_eq!(mesh.positions.len(), 5);
    assert_eq!(mesh.triangles, vec![[0, 1, 2], [0, 2, 3], [0, 1, 4]]);
}

#[test]
fn bad_ply_input_gives_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let header = "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n\
                  property float z\nelement face 1\nproperty list uchar int vertex_indices\n\
                  end_header\n0 0 0\n1 0 0\n0 1 0\n";
    let out_of_range = write_text(&dir, "a.ply", &format!("{header}3 0 1 3\n"));
    assert!(matches!(
        TriangleMesh::read(out_of_range),
        Err(MeshError::IndexOutOfRange {
            triangle: 0,
            index: 3,
            vertex_count: 3
        })
    ));
    let negative = write_text(&dir, "b.ply", &format!("{header}3 0 1 -1\n"));
    assert!(matches!(
        TriangleMesh::read(negative),
        Err(MeshError::PlyBadProperty {
            element: "face",
            ..
        })
    ));
    let small = write_text(&dir, "c.ply", &format!("{header}2 0 1\n"));
    assert!(matches!(
        TriangleMesh::read(small),
        Err(MeshError::FaceTooSmall { face: 0, len: 2 })
    ));
    // 4 element lines declared, 2 present: refused from the header's counts.
    let truncated = write_text(&dir, "d.ply", &header[..header.len() - 6]);
    assert!(matches!(
        TriangleMesh::read(truncated),
        Err(MeshError::PlyPayloadTooShort {
            required: 4,
            available: 2,
            unit: "lines"
        })
    ));
    // Enough lines, but the last is not a number: the parser's own error.
    let garbled = write_text(&dir, "d2.ply", &format!("{header}three 0 1 2\n"));
    assert!(matches!(
        TriangleMesh::read(garbled),
        Err(MeshError::Ply(_))
    ));
    let no_z = write_text(
        &dir,
        "e.ply",
        "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n\
         end_header\n0 0\n",
    );
    assert!(matches!(
        TriangleMesh::read(no_z),
        Err(MeshError::PlyBadProperty { property: "z", .. })
    ));
    // ASCII "nan" is refused by the PLY parser itself; a binary NaN reaches our validation.
    let nan = write_text(
        &dir,
        "f.ply",
        &format!("{header}3 0 1 2\n").replace("1 0 0\n", "1 nan 0\n"),
    );
    assert!(matches!(TriangleMesh::read(nan), Err(MeshError::Ply(_))));
    let binary = dir.path().join("g.ply");
    octahedron().write_ply(&binary).unwrap();
    let mut bytes = std::fs::read(&binary).unwrap();
    let data = bytes
        .windows(11)
        .position(|w| w == b"end_header\n")
        .unwrap()
        + 11;
    // Vertex 1's y coordinate.
    bytes[data + 16..data + 20].copy_from_slice(&f32::NAN.to_le_bytes());
    let result = TriangleMesh::read_ply_from(&mut bytes.as_slice());
    assert!(
        matches!(result, Err(MeshError::NonFiniteVertex { vertex: 1, .. })),
        "{result:?}"
    );
}

/// A binary little-endian PLY: `float x y z` vertices and `list uchar int` faces with the given
/// counts, followed by `payload`.
fn binary_ply(vertices: u64, faces: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "ply\nformat binary_little_endian 1.0\nelement vertex {vertices}\nproperty float x\n\
         property float y\nproperty float z\nelement face {faces}\n\
         property list uchar int vertex_indices\nend_header\n"
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Header counts are checked against the bytes after the header before any element is built:
/// binary needs Σ count × minimum size (a list counts only its length byte), ASCII one line per
/// instance; a count that fits exactly passes on to the parser.
#[test]
fn ply_header_counts_are_bounded_by_the_payload() {
    // 3 vertices need 36 bytes, 2 faces at least 2 (empty lists): 38 required, 37 present.
    let short = binary_ply(3, 2, &[0; 37]);
    let result = TriangleMesh::read_ply_from(&mut short.as_slice());
    assert!(
        matches!(
            result,
            Err(MeshError::PlyPayloadTooShort {
                required: 38,
                available: 37,
                unit: "bytes"
            })
        ),
        "{result:?}"
    );
    // Exactly enough: the header check passes and the empty face list is the error.
    let exact = binary_ply(3, 2, &[0; 38]);
    let result = TriangleMesh::read_ply_from(&mut exact.as_slice());
    assert!(
        matches!(result, Err(MeshError::FaceTooSmall { face: 0, len: 0 })),
        "{result:?}"
    );
    // A huge face count in a small file; saturating sums refuse a count near u64::MAX too.
    for faces in [4_000_000_000, u64::MAX] {
        let huge = binary_ply(3, faces, &[0; 38]);
        let result = TriangleMesh::read_ply_from(&mut huge.as_slice());
        assert!(
            matches!(
                result,
                Err(MeshError::PlyPayloadTooShort { available: 38, .. })
            ),
            "{result:?}"
        );
    }
    // ASCII: a last line without a newline still counts as a line.
    let ascii = "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n\
                 property float z\nelement face 1\nproperty list uchar int vertex_indices\n\
                 end_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2";
    let mesh = TriangleMesh::read_ply_from(&mut ascii.as_bytes()).unwrap();
    assert_eq!((mesh.positions.len(), mesh.triangles.len()), (3, 1));
    let result = TriangleMesh::read_ply_from(&mut ascii.replace("face 1", "face 2").as_bytes());
    assert!(
        matches!(
            result,
            Err(MeshError::PlyPayloadTooShort {
                required: 5,
                available: 4,
                unit: "lines"
            })
        ),
        "{result:?}"
    );
}

/// A property-less element with instances, or an element declared twice, is refused from the
/// header in both encodings; a property-less element with count 0 is harmless.
#[test]
fn ply_degenerate_headers_are_refused() {
    for format in ["ascii", "binary_big_endian"] {
        let header = |extra: &str| {
            format!(
                "ply\nformat {format} 1.0\nelement vertex 0\nproperty float x\n\
                 property float y\nproperty float z\n{extra}end_header\n"
            )
        };
        let empty = header("element junk 5\n");
        let result = TriangleMesh::read_ply_from(&mut empty.as_bytes());
        assert!(
            matches!(
                result,
                Err(MeshError::PlyElementWithoutProperties { ref element, count: 5 })
                    if element == "junk"
            ),
            "{format}: {result:?}"
        );
        let unused = header("element junk 0\n");
        let mesh = TriangleMesh::read_ply_from(&mut unused.as_bytes()).unwrap();
        assert!(mesh.positions.is_empty() && mesh.is_empty());
        let twice = header("element vertex\t0\nproperty float w\n");
        let result = TriangleMesh::read_ply_from(&mut twice.as_bytes());
        assert!(
            matches!(result, Err(MeshError::PlyDuplicateElement(ref name)) if name == "vertex"),
            "{format}: {result:?}"
        );
    }
}

#[test]
fn binary_ply_mutations_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.ply");
    octahedron().write_ply(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for len in 0..bytes.len() {
        let _ = TriangleMesh::read_ply_from(&mut &bytes[..len]);
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut mutated = bytes.clone();
    for _ in 0..500 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let at = (state % bytes.len() as u64) as usize;
        let old = mutated[at];
        mutated[at] = (state >> 32) as u8;
        let _ = TriangleMesh::read_ply_from(&mut mutated.as_slice());
        mutated[at] = old;
    }
}

#[test]
fn stl_written_by_stl_io_reads_back() {
    let mesh = octahedron();
    let triangles: Vec<stl_io::Triangle> = mesh
        .triangles
        .iter()
        .map(|t| stl_io::Triangle {
            normal: stl_io::Normal::new([0.0, 0.0, 1.0]),
            vertices: t.map(|i| stl_io::Vertex::new(mesh.positions[i as usize])),
        })
        .collect();
    let mut binary = Vec::new();
    stl_io::write_stl(&mut binary, triangles.iter()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("octa.stl");
    std::fs::write(&path, &binary).unwrap();
    let back = TriangleMesh::read(&path).unwrap();
    // STL stores corners per triangle; identical corners are joined again on reading.
    assert_eq!(back.positions.len(), mesh.positions.len());
    assert_eq!(corners(&back), corners(&mesh));
    assert_eq!(back.edge_stats(), mesh.edge_stats());

    let ascii = "solid t\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\n\
                 vertex 0 1 0\nendloop\nendfacet\nendsolid t\n";
    let tri = TriangleMesh::read_stl_from(&mut Cursor::new(ascii)).unwrap();
    assert_eq!(tri.triangles, vec![[0, 1, 2]]);
    assert_eq!(tri.positions[1], [1.0, 0.0, 0.0]);

    let truncated = &binary[..binary.len() - 10];
    assert!(matches!(
        TriangleMesh::read_stl_from(&mut Cursor::new(truncated)),
        Err(MeshError::Stl(_))
    ));
}

#[test]
fn merge_treats_signed_zero_as_equal_and_keeps_triangles() {
    let mesh = TriangleMesh::new(
        vec![
            [0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [-0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
        ],
        vec![[0, 1, 3], [2, 3, 1], [0, 2, 1]],
    )
    .unwrap();
    let merged = mesh.merge_vertices_by_position();
    assert_eq!(merged.positions.len(), 3);
    assert_eq!(merged.triangles, vec![[0, 1, 2], [0, 2, 1], [0, 0, 1]]);
    // The degenerate triangle contributes only its one real edge.
    let stats = merged.edge_stats();
    assert_eq!(stats.edges, 3);
    assert_eq!(stats.non_manifold_edges, 1, "edge 0-1 is used three times");
}

#[test]
fn validation_rejects_bad_meshes() {
    assert!(matches!(
        TriangleMesh::new(vec![[0.0; 3]], vec![[0, 0, 1]]),
        Err(MeshError::IndexOutOfRange { index: 1, .. })
    ));
    assert!(matches!(
        TriangleMesh::new(vec![[0.0, f32::INFINITY, 0.0]], vec![]),
        Err(MeshError::NonFiniteVertex { vertex: 0, .. })
    ));
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        TriangleMesh::read(dir.path().join("x.off")),
        Err(MeshError::UnknownFormat(_))
    ));
    assert!(matches!(
        TriangleMesh::read(dir.path().join("missing.obj")),
        Err(MeshError::Io { .. })
    ));
}
