//! Triangle meshes: OBJ, PLY (ASCII and binary) and STL (ASCII and binary) in; binary PLY and
//! OBJ out; plus the vertex merging and edge statistics that SDF sampling needs to trust a mesh.
//!
//! Only positions and connectivity are kept. Every reader triangulates polygons as a fan
//! `(v0, v1, v2), (v0, v2, v3), …` and validates the result: indices must be in range and
//! positions finite, else a typed [`MeshError`]. A file with no faces reads as an empty mesh
//! (`Ok`, zero triangles); callers that need a surface check [`TriangleMesh::is_empty`].
//!
//! Vertex numbering per format:
//! * **OBJ** (via tobj): only vertices referenced by a face are kept, numbered in order of first
//!   reference; texture-coordinate and normal indices are ignored, so UV seams do not split
//!   vertices. Several objects/groups in one file are concatenated; a position shared between
//!   groups appears once per group (merge with [`TriangleMesh::merge_vertices_by_position`]).
//! * **PLY**: the `vertex` element in file order (unreferenced vertices included); faces from
//!   `vertex_indices` or `vertex_index`.
//! * **STL**: the format has no shared vertices; stl_io joins corners with bit-identical
//!   coordinates, numbered in order of first appearance.

use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Read, Seek, Write};
use std::path::{Path, PathBuf};

use ply_rs_bw::parser::{ParseError, Parser, Reader};
use ply_rs_bw::ply::{
    DefaultElement, ElementDef, Encoding, Header, Payload, Property, PropertyType, ScalarType,
};

use crate::atomic::write_atomically;

/// Errors from reading, validating or writing meshes.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The extension is not `.obj`, `.ply` or `.stl` (case-insensitive).
    #[error("{0}: unknown mesh format (expected a .obj, .ply or .stl extension)")]
    UnknownFormat(PathBuf),
    /// tobj rejected the OBJ text.
    #[error("OBJ: {0}")]
    Obj(tobj::LoadError),
    /// An OBJ face refers to a vertex that does not exist (tobj does not say which).
    #[error("OBJ: a face refers to a vertex index outside the file's vertices")]
    ObjIndexOutOfRange,
    /// The PLY parser rejected the file.
    #[error("PLY: {0}")]
    Ply(#[from] ply_rs_bw::parser::ParseError),
    /// The PLY header declares an element name twice (the parser would keep only one of them,
    /// silently misreading the payload).
    #[error("PLY: element `{0}` is declared twice")]
    PlyDuplicateElement(String),
    /// A PLY element without properties has a non-zero count: its instances would occupy no
    /// bytes, so nothing in the file bounds how many the parser would build.
    #[error("PLY: element `{element}` has {count} instances but no properties")]
    PlyElementWithoutProperties { element: String, count: usize },
    /// The header's element counts need more payload than follows the header: at least
    /// `required` bytes (binary) or lines (ASCII, one per element instance).
    #[error(
        "PLY: the header's element counts need at least {required} {unit} after the header, \
         but only {available} follow"
    )]
    PlyPayloadTooShort {
        required: u64,
        available: u64,
        unit: &'static str,
    },
    /// A required PLY element is absent.
    #[error("PLY: no `{0}` element")]
    PlyMissingElement(&'static str),
    /// A PLY element lacks a property, or it has an unusable type.
    #[error("PLY: {element} {index} has no usable `{property}` property")]
    PlyBadProperty {
        element: &'static str,
        index: usize,
        property: &'static str,
    },
    /// The STL reader rejected the file.
    #[error("STL: {0}")]
    Stl(std::io::Error),
    /// A face has fewer than 3 vertices.
    #[error("face {face} has {len} vertices; at least 3 are needed")]
    FaceTooSmall { face: usize, len: usize },
    /// A triangle refers to a vertex that does not exist.
    #[error("triangle {triangle} refers to vertex {index}, but there are {vertex_count} vertices")]
    IndexOutOfRange {
        triangle: usize,
        index: u32,
        vertex_count: usize,
    },
    /// A position is NaN or infinite.
    #[error("vertex {vertex} is not finite: {position:?}")]
    NonFiniteVertex { vertex: usize, position: [f32; 3] },
    /// More vertices than a `u32` index (or the output format) can address.
    #[error("{count} vertices exceed the {limit} a {what} can address")]
    TooManyVertices {
        count: usize,
        limit: u64,
        what: &'static str,
    },
}

/// Mesh file formats, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshFormat {
    /// Wavefront `.obj`.
    Obj,
    /// Stanford `.ply`.
    Ply,
    /// `.stl`.
    Stl,
}

impl MeshFormat {
    /// The format for `path`'s extension (case-insensitive), if known.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "obj" => Some(Self::Obj),
            "ply" => Some(Self::Ply),
            "stl" => Some(Self::Stl),
            _ => None,
        }
    }
}

/// Edge statistics of a mesh's index topology; see [`TriangleMesh::edge_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EdgeStats {
    /// Distinct undirected edges.
    pub edges: usize,
    /// Edges used by exactly one triangle (holes, open borders).
    pub boundary_edges: usize,
    /// Edges used by more than two triangles.
    pub non_manifold_edges: usize,
}

/// An indexed triangle mesh: positions `[N, 3]` and triangles `[M, 3]` (indices into positions).
///
/// Invariants (checked by [`TriangleMesh::new`] and every reader): all indices `< N`, all
/// positions finite, `N <= u32::MAX`. The fields are public; [`TriangleMesh::validate`]
/// re-checks after editing them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TriangleMesh {
    /// Vertex positions `[N, 3]`.
    pub positions: Vec<[f32; 3]>,
    /// Triangles `[M, 3]`, counter-clockwise as given by the file.
    pub triangles: Vec<[u32; 3]>,
}

impl TriangleMesh {
    /// A validated mesh.
    pub fn new(positions: Vec<[f32; 3]>, triangles: Vec<[u32; 3]>) -> Result<Self, MeshError> {
        let mesh = Self {
            positions,
            triangles,
        };
        mesh.validate()?;
        Ok(mesh)
    }

    /// Checks the invariants: indices in range, finite positions, at most `u32::MAX` vertices.
    pub fn validate(&self) -> Result<(), MeshError> {
        let vertex_count = self.positions.len();
        if u32::try_from(vertex_count).is_err() {
            return Err(MeshError::TooManyVertices {
                count: vertex_count,
                limit: u64::from(u32::MAX),
                what: "u32 index",
            });
        }
        if let Some((vertex, &position)) = self
            .positions
            .iter()
            .enumerate()
            .find(|(_, p)| !p.iter().all(|c| c.is_finite()))
        {
            return Err(MeshError::NonFiniteVertex { vertex, position });
        }
        for (triangle, tri) in self.triangles.iter().enumerate() {
            if let Some(&index) = tri.iter().find(|&&i| i as usize >= vertex_count) {
                return Err(MeshError::IndexOutOfRange {
                    triangle,
                    index,
                    vertex_count,
                });
            }
        }
        Ok(())
    }

    /// True when there are no triangles.
    pub fn is_empty(&self) -> bool {
        self.triangles.is_empty()
    }

    /// Reads an OBJ, PLY or STL file, chosen by extension (see the [module docs](self)).
    pub fn read(path: impl AsRef<Path>) -> Result<Self, MeshError> {
        let path = path.as_ref();
        let format =
            MeshFormat::from_path(path).ok_or_else(|| MeshError::UnknownFormat(path.into()))?;
        let bytes = std::fs::read(path).map_err(|source| MeshError::Io {
            path: path.into(),
            source,
        })?;
        match format {
            MeshFormat::Obj => Self::read_obj_from(&mut bytes.as_slice()),
            MeshFormat::Ply => Self::read_ply_from(&mut bytes.as_slice()),
            MeshFormat::Stl => Self::read_stl_from(&mut Cursor::new(bytes)),
        }
    }

    /// Reads OBJ text. Texture-coordinate and normal data are removed before tobj parses the
    /// text: we ignore them anyway, and tobj 4.0 indexes them with unchecked arithmetic, so a
    /// corrupt `vt`/`vn` index could otherwise panic instead of returning an error.
    pub fn read_obj_from(reader: &mut impl Read) -> Result<Self, MeshError> {
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|_| MeshError::Obj(tobj::LoadError::ReadError))?;
        // Lossy: only numbers matter, and old exporters write Latin-1 comments.
        let text = String::from_utf8_lossy(&bytes);
        let positions_only = obj_positions_only(&text);
        // tobj's optional features (merging, reordering) add fields; the update syntax keeps
        // this compiling whichever features another crate in the build enables.
        #[allow(clippy::needless_update)]
        let options = tobj::LoadOptions {
            triangulate: true,
            single_index: false,
            ignore_points: true,
            ignore_lines: true,
            ..Default::default()
        };
        let (models, _materials) =
            tobj::load_obj_buf(&mut positions_only.as_bytes(), &options, |_| {
                // Materials are irrelevant to geometry; never touch the file system for them.
                Err(tobj::LoadError::OpenFileFailed)
            })
            .map_err(|e| match e {
                tobj::LoadError::FaceVertexOutOfBounds => MeshError::ObjIndexOutOfRange,
                other => MeshError::Obj(other),
            })?;

        let mut mesh = Self::default();
        for model in models {
            let offset = u32::try_from(mesh.positions.len()).map_err(|_| too_many(&mesh))?;
            mesh.positions.extend(
                model
                    .mesh
                    .positions
                    .chunks_exact(3)
                    .map(|p| [p[0], p[1], p[2]]),
            );
            for tri in model.mesh.indices.chunks_exact(3) {
                let shifted = [tri[0], tri[1], tri[2]].map(|i| i.checked_add(offset));
                match shifted {
                    [Some(a), Some(b), Some(c)] => mesh.triangles.push([a, b, c]),
                    _ => return Err(too_many(&mesh)),
                }
            }
        }
        mesh.validate()?;
        Ok(mesh)
    }

    /// Reads a PLY file (ASCII, binary little or big endian).
    ///
    /// Vertex coordinates `x`, `y`, `z` may have any numeric type. Faces come from the list
    /// property `vertex_indices` (or `vertex_index`, as some exporters name it) of the `face`
    /// element; a file without a `face` element is a point cloud and reads as an empty mesh.
    ///
    /// The whole input is read into memory and the header's element counts are checked against
    /// the bytes after it before any element is built (see [`MeshError::PlyPayloadTooShort`],
    /// [`MeshError::PlyElementWithoutProperties`], [`MeshError::PlyDuplicateElement`]).
    pub fn read_ply_from(reader: &mut impl Read) -> Result<Self, MeshError> {
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| MeshError::Ply(ParseError::from(e)))?;
        let payload = read_ply_payload(&bytes)?;
        let vertices = payload
            .get("vertex")
            .ok_or(MeshError::PlyMissingElement("vertex"))?;
        let mut positions = Vec::with_capacity(vertices.len());
        for (index, vertex) in vertices.iter().enumerate() {
            let coordinate = |property: &'static str| {
                vertex.get(property).and_then(Property::to_f32_lossy).ok_or(
                    MeshError::PlyBadProperty {
                        element: "vertex",
                        index,
                        property,
                    },
                )
            };
            positions.push([coordinate("x")?, coordinate("y")?, coordinate("z")?]);
        }
        let mut triangles = Vec::new();
        if let Some(faces) = payload.get("face") {
            for (index, face) in faces.iter().enumerate() {
                let indices = face
                    .get("vertex_indices")
                    .or_else(|| face.get("vertex_index"))
                    .and_then(Property::to_u32_list)
                    .ok_or(MeshError::PlyBadProperty {
                        element: "face",
                        index,
                        property: "vertex_indices",
                    })?;
                push_fan(&mut triangles, &indices, index)?;
            }
        }
        Self::new(positions, triangles)
    }

    /// Reads an STL file (ASCII or binary, detected by stl_io).
    pub fn read_stl_from<R: Read + Seek>(reader: &mut R) -> Result<Self, MeshError> {
        let stl = stl_io::read_stl(reader).map_err(MeshError::Stl)?;
        let positions: Vec<[f32; 3]> = stl.vertices.iter().map(|v| v.0).collect();
        let mut triangles = Vec::with_capacity(stl.faces.len());
        for (triangle, face) in stl.faces.iter().enumerate() {
            let mut tri = [0u32; 3];
            for (slot, &index) in tri.iter_mut().zip(&face.vertices) {
                *slot = u32::try_from(index).map_err(|_| MeshError::IndexOutOfRange {
                    triangle,
                    index: u32::MAX,
                    vertex_count: positions.len(),
                })?;
            }
            triangles.push(tri);
        }
        Self::new(positions, triangles)
    }

    /// Writes binary little-endian PLY (`float x y z`, `list uchar int vertex_indices`) atomically.
    pub fn write_ply(&self, path: impl AsRef<Path>) -> Result<(), MeshError> {
        self.validate()?;
        if i32::try_from(self.positions.len()).is_err() {
            return Err(MeshError::TooManyVertices {
                count: self.positions.len(),
                limit: i32::MAX as u64,
                what: "PLY `int` index",
            });
        }
        let path = path.as_ref();
        write_atomically(path, |w| {
            write!(
                w,
                "ply\nformat binary_little_endian 1.0\ncomment written by vnr\n\
                 element vertex {}\nproperty float x\nproperty float y\nproperty float z\n\
                 element face {}\nproperty list uchar int vertex_indices\nend_header\n",
                self.positions.len(),
                self.triangles.len()
            )?;
            for p in &self.positions {
                for c in p {
                    w.write_all(&c.to_le_bytes())?;
                }
            }
            for t in &self.triangles {
                w.write_all(&[3])?;
                for &i in t {
                    // In range: validated above, every index < vertex count <= i32::MAX.
                    w.write_all(&(i as i32).to_le_bytes())?;
                }
            }
            Ok(())
        })
        .map_err(|source| MeshError::Io {
            path: path.into(),
            source,
        })
    }

    /// Writes OBJ text (`v x y z` with shortest round-trip floats, `f a b c` 1-based) atomically.
    pub fn write_obj(&self, path: impl AsRef<Path>) -> Result<(), MeshError> {
        self.validate()?;
        let path = path.as_ref();
        write_atomically(path, |w| {
            writeln!(w, "# written by vnr")?;
            for [x, y, z] in &self.positions {
                writeln!(w, "v {x} {y} {z}")?;
            }
            for [a, b, c] in &self.triangles {
                let [a, b, c] = [a, b, c].map(|&i| u64::from(i) + 1);
                writeln!(w, "f {a} {b} {c}")?;
            }
            Ok(())
        })
        .map_err(|source| MeshError::Io {
            path: path.into(),
            source,
        })
    }

    /// A copy in which vertices with equal positions are one vertex.
    ///
    /// Equality is exact: coordinates compare as `f32` values (so `-0.0 == 0.0`), with no
    /// tolerance: positions that differ in the last bit stay distinct. Unique positions keep
    /// the order of their first occurrence; triangles are re-indexed and kept even if they become
    /// degenerate (two equal corners), so the triangle count never changes.
    pub fn merge_vertices_by_position(&self) -> TriangleMesh {
        let mut first_index: HashMap<[u32; 3], u32> = HashMap::with_capacity(self.positions.len());
        let mut positions = Vec::new();
        let remap: Vec<u32> = self
            .positions
            .iter()
            .map(|p| {
                // Adding +0.0 turns -0.0 into +0.0, so both share a key.
                let key = p.map(|c| (c + 0.0).to_bits());
                *first_index.entry(key).or_insert_with(|| {
                    positions.push(*p);
                    // At most self.positions.len() <= u32::MAX entries (validated invariant).
                    (positions.len() - 1) as u32
                })
            })
            .collect();
        let triangles = self
            .triangles
            .iter()
            .map(|t| t.map(|i| remap.get(i as usize).copied().unwrap_or(i)))
            .collect();
        TriangleMesh {
            positions,
            triangles,
        }
    }

    /// Axis-aligned bounds `(min, max)` of the positions, or `None` without vertices.
    pub fn bounding_box(&self) -> Option<([f32; 3], [f32; 3])> {
        let first = *self.positions.first()?;
        Some(
            self.positions
                .iter()
                .fold((first, first), |(mut lo, mut hi), p| {
                    for axis in 0..3 {
                        lo[axis] = lo[axis].min(p[axis]);
                        hi[axis] = hi[axis].max(p[axis]);
                    }
                    (lo, hi)
                }),
        )
    }

    /// Counts undirected edges by how many triangles use them, on the indices **as they are**.
    ///
    /// Edges between equal indices (from degenerate triangles) are not counted. Files often
    /// repeat positions along seams (e.g. teapot.obj's patch borders), which makes those edges
    /// look like borders; call [`TriangleMesh::merge_vertices_by_position`] first to count the
    /// geometric topology instead.
    pub fn edge_stats(&self) -> EdgeStats {
        let mut uses: HashMap<(u32, u32), u32> = HashMap::with_capacity(self.triangles.len() * 2);
        for &[a, b, c] in &self.triangles {
            for (u, v) in [(a, b), (b, c), (c, a)] {
                if u != v {
                    *uses.entry((u.min(v), u.max(v))).or_insert(0) += 1;
                }
            }
        }
        EdgeStats {
            edges: uses.len(),
            boundary_edges: uses.values().filter(|&&n| n == 1).count(),
            non_manifold_edges: uses.values().filter(|&&n| n > 2).count(),
        }
    }

    /// Edges used by exactly one triangle; see [`TriangleMesh::edge_stats`].
    pub fn boundary_edge_count(&self) -> usize {
        self.edge_stats().boundary_edges
    }

    /// Edges used by more than two triangles; see [`TriangleMesh::edge_stats`].
    pub fn non_manifold_edge_count(&self) -> usize {
        self.edge_stats().non_manifold_edges
    }
}

fn too_many(mesh: &TriangleMesh) -> MeshError {
    MeshError::TooManyVertices {
        count: mesh.positions.len(),
        limit: u64::from(u32::MAX),
        what: "u32 index",
    }
}

/// Parses a PLY file held in memory, refusing a header whose element counts the bytes after it
/// cannot hold BEFORE any element is built: ply-rs-bw trusts the counts and builds one map per
/// element instance, so a tiny file could otherwise demand gigabytes.
fn read_ply_payload(bytes: &[u8]) -> Result<Payload<DefaultElement>, MeshError> {
    let parser = Parser::<DefaultElement>::new();
    let mut reader = Reader::new(Cursor::new(bytes));
    let header = parser.read_header(&mut reader)?;
    // A Cursor never reports a position past its data; the fallback only avoids a panic path.
    let header_len = usize::try_from(reader.get_ref().position()).unwrap_or(bytes.len());
    let (header_bytes, after_header) = bytes.split_at_checked(header_len).unwrap_or((bytes, &[]));
    check_unique_element_names(header_bytes)?;
    check_element_counts(&header, after_header)?;
    Ok(parser.read_payload(&mut reader, &header)?)
}

/// Refuses a header that declares an element name twice. ply-rs-bw keys elements by name and
/// lets a later declaration replace an earlier one, so this is checked on the header text.
fn check_unique_element_names(header_bytes: &[u8]) -> Result<(), MeshError> {
    let is_separator = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    let text = String::from_utf8_lossy(header_bytes);
    let mut names = HashSet::new();
    for line in text.split('\n') {
        let Some(rest) = line.strip_prefix("element") else {
            continue;
        };
        if !rest.starts_with(is_separator) {
            continue;
        }
        if let Some(name) = rest.split(is_separator).find(|word| !word.is_empty()) {
            if !names.insert(name) {
                return Err(MeshError::PlyDuplicateElement(name.to_owned()));
            }
        }
    }
    Ok(())
}

/// Checks the header's element counts against `payload` (the bytes after `end_header`): every
/// element with instances has a property; binary: Σ count × minimum element size bytes fit;
/// ASCII: Σ count lines exist (ply-rs-bw reads exactly one line per instance). Sums saturate,
/// which only makes an impossible count larger.
fn check_element_counts(header: &Header, payload: &[u8]) -> Result<(), MeshError> {
    if let Some(element) = header
        .elements
        .values()
        .find(|e| e.count > 0 && e.properties.is_empty())
    {
        return Err(MeshError::PlyElementWithoutProperties {
            element: element.name.clone(),
            count: element.count,
        });
    }
    let count = |element: &ElementDef| u64::try_from(element.count).unwrap_or(u64::MAX);
    let (required, available, unit) = match header.encoding {
        Encoding::Ascii => (
            header
                .elements
                .values()
                .fold(0u64, |sum, e| sum.saturating_add(count(e))),
            payload.split_inclusive(|&b| b == b'\n').count(),
            "lines",
        ),
        Encoding::BinaryBigEndian | Encoding::BinaryLittleEndian => (
            header.elements.values().fold(0u64, |sum, e| {
                sum.saturating_add(count(e).saturating_mul(min_binary_element_size(e)))
            }),
            payload.len(),
            "bytes",
        ),
    };
    let available = u64::try_from(available).unwrap_or(u64::MAX);
    if required > available {
        return Err(MeshError::PlyPayloadTooShort {
            required,
            available,
            unit,
        });
    }
    Ok(())
}

/// The fewest bytes one binary instance of `element` can take: its scalars, plus only the length
/// field of each list (a list may be empty).
fn min_binary_element_size(element: &ElementDef) -> u64 {
    element
        .properties
        .values()
        .map(|p| match &p.data_type {
            PropertyType::Scalar(scalar) | PropertyType::List(scalar, _) => scalar_size(scalar),
        })
        .fold(0u64, u64::saturating_add)
}

/// Bytes of one binary PLY scalar.
fn scalar_size(scalar: &ScalarType) -> u64 {
    match scalar {
        ScalarType::Char | ScalarType::UChar => 1,
        ScalarType::Short | ScalarType::UShort => 2,
        ScalarType::Int | ScalarType::UInt | ScalarType::Float => 4,
        ScalarType::Double => 8,
    }
}

/// Triangulates one polygon as a fan from its first vertex.
fn push_fan(triangles: &mut Vec<[u32; 3]>, polygon: &[u32], face: usize) -> Result<(), MeshError> {
    let [first, rest @ ..] = polygon else {
        return Err(MeshError::FaceTooSmall { face, len: 0 });
    };
    if rest.len() < 2 {
        return Err(MeshError::FaceTooSmall {
            face,
            len: polygon.len(),
        });
    }
    triangles.extend(rest.windows(2).map(|pair| [*first, pair[0], pair[1]]));
    Ok(())
}

/// OBJ text reduced to what geometry needs: `vt`/`vn`/`vp` lines dropped and face corners
/// `v/vt/vn` cut to `v`.
fn obj_positions_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("vt" | "vn" | "vp") => {}
            Some("f") => {
                out.push('f');
                for corner in words {
                    out.push(' ');
                    out.push_str(corner.split('/').next().unwrap_or(corner));
                }
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}
