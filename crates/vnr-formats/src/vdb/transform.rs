//! Index-to-world transforms (OpenVDB's linear maps).

use super::bytes::{Cursor, PutLe};
use super::error::{Result, VdbError};

/// Which OpenVDB map a transform was stored as; kept so a written file uses the same map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    /// `UniformScaleMap`
    UniformScale,
    /// `UniformScaleTranslateMap`
    UniformScaleTranslate,
    /// `ScaleMap`
    Scale,
    /// `ScaleTranslateMap`
    ScaleTranslate,
    /// `TranslationMap`
    Translation,
    /// `AffineMap`
    Affine,
    /// `UnitaryMap` (stored as an affine matrix)
    Unitary,
}

impl MapKind {
    /// OpenVDB's registered map name.
    pub fn name(self) -> &'static str {
        match self {
            MapKind::UniformScale => "UniformScaleMap",
            MapKind::UniformScaleTranslate => "UniformScaleTranslateMap",
            MapKind::Scale => "ScaleMap",
            MapKind::ScaleTranslate => "ScaleTranslateMap",
            MapKind::Translation => "TranslationMap",
            MapKind::Affine => "AffineMap",
            MapKind::Unitary => "UnitaryMap",
        }
    }
}

/// A linear index→world map: `world = linear · ijk + translation` (column vectors).
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    kind: MapKind,
    linear: [[f64; 3]; 3],
    translation: [f64; 3],
    inverse: [[f64; 3]; 3],
}

fn diag(s: [f64; 3]) -> [[f64; 3]; 3] {
    [[s[0], 0.0, 0.0], [0.0, s[1], 0.0], [0.0, 0.0, s[2]]]
}

fn invert(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let c = |r: usize, k: usize| {
        let (r1, r2, k1, k2) = ((r + 1) % 3, (r + 2) % 3, (k + 1) % 3, (k + 2) % 3);
        m[r1][k1] * m[r2][k2] - m[r1][k2] * m[r2][k1]
    };
    let det = m[0][0] * c(0, 0) + m[0][1] * c(0, 1) + m[0][2] * c(0, 2);
    if !det.is_finite() || det.abs() < 1e-300 {
        return None;
    }
    let mut inv = [[0.0; 3]; 3];
    for (r, row) in inv.iter_mut().enumerate() {
        for (k, v) in row.iter_mut().enumerate() {
            *v = c(k, r) / det;
        }
    }
    Some(inv)
}

impl Transform {
    fn build(kind: MapKind, linear: [[f64; 3]; 3], translation: [f64; 3]) -> Result<Self> {
        let inverse = invert(&linear).ok_or_else(|| {
            VdbError::InvalidInput(format!("{} is not invertible: {linear:?}", kind.name()))
        })?;
        Ok(Transform {
            kind,
            linear,
            translation,
            inverse,
        })
    }

    /// Uniform voxel size, no translation (`UniformScaleMap`).
    pub fn uniform_scale(voxel_size: f64) -> Result<Self> {
        Self::build(MapKind::UniformScale, diag([voxel_size; 3]), [0.0; 3])
    }

    /// Uniform voxel size then translation (`UniformScaleTranslateMap`).
    pub fn uniform_scale_translate(voxel_size: f64, translation: [f64; 3]) -> Result<Self> {
        Self::build(
            MapKind::UniformScaleTranslate,
            diag([voxel_size; 3]),
            translation,
        )
    }

    /// Per-axis scale then translation (`ScaleTranslateMap`).
    pub fn scale_translate(scale: [f64; 3], translation: [f64; 3]) -> Result<Self> {
        Self::build(MapKind::ScaleTranslate, diag(scale), translation)
    }

    /// The stored map type.
    pub fn kind(&self) -> MapKind {
        self.kind
    }

    /// Lengths of the images of the index axes (OpenVDB's `voxelSize()`).
    pub fn voxel_size(&self) -> [f64; 3] {
        let col = |k: usize| {
            (0..3)
                .map(|r| self.linear[r][k].powi(2))
                .sum::<f64>()
                .sqrt()
        };
        [col(0), col(1), col(2)]
    }

    /// World translation of index (0, 0, 0).
    pub fn translation(&self) -> [f64; 3] {
        self.translation
    }

    /// The 3×3 linear part, `linear[row][col]`.
    pub fn linear(&self) -> [[f64; 3]; 3] {
        self.linear
    }

    /// Index space (continuous, voxel centres at integers) to world space.
    pub fn index_to_world(&self, ijk: [f64; 3]) -> [f64; 3] {
        let m = &self.linear;
        std::array::from_fn(|r| {
            m[r][0] * ijk[0] + m[r][1] * ijk[1] + m[r][2] * ijk[2] + self.translation[r]
        })
    }

    /// World space to continuous index space (the exact inverse of [`Self::index_to_world`]).
    pub fn world_to_index(&self, xyz: [f64; 3]) -> [f64; 3] {
        let d: [f64; 3] = std::array::from_fn(|r| xyz[r] - self.translation[r]);
        let m = &self.inverse;
        std::array::from_fn(|r| m[r][0] * d[0] + m[r][1] * d[1] + m[r][2] * d[2])
    }

    pub(crate) fn read(cur: &mut Cursor<'_>) -> Result<Self> {
        let offset = cur.offset();
        let name = cur.string("transform map type")?;
        let scale_fields = |cur: &mut Cursor<'_>| -> Result<[f64; 3]> {
            // ScaleMap stores scale, voxel size, inverse scale, 1/scale², 1/(2·scale): the last
            // four are derived, so only the first is used.
            let scale = cur.vec3d("map scale")?;
            cur.take(4 * 24, "derived map scale values")?;
            Ok(scale)
        };
        let (kind, linear, translation) = match name.as_str() {
            "UniformScaleMap" => (MapKind::UniformScale, diag(scale_fields(cur)?), [0.0; 3]),
            "ScaleMap" => (MapKind::Scale, diag(scale_fields(cur)?), [0.0; 3]),
            "UniformScaleTranslateMap" | "ScaleTranslateMap" => {
                let t = cur.vec3d("map translation")?;
                let kind = if name.starts_with("Uniform") {
                    MapKind::UniformScaleTranslate
                } else {
                    MapKind::ScaleTranslate
                };
                (kind, diag(scale_fields(cur)?), t)
            }
            "TranslationMap" => (
                MapKind::Translation,
                diag([1.0; 3]),
                cur.vec3d("map translation")?,
            ),
            "AffineMap" | "UnitaryMap" => {
                // Mat4d, row-major, row-vector convention: world = [i j k 1] · M.
                let mut m = [[0.0; 4]; 4];
                for row in m.iter_mut() {
                    for v in row.iter_mut() {
                        *v = cur.f64("affine matrix")?;
                    }
                }
                let linear = std::array::from_fn(|r| std::array::from_fn(|k| m[k][r]));
                let kind = if name == "AffineMap" {
                    MapKind::Affine
                } else {
                    MapKind::Unitary
                };
                (kind, linear, [m[3][0], m[3][1], m[3][2]])
            }
            _ => return Err(VdbError::UnsupportedTransform(name)),
        };
        Self::build(kind, linear, translation)
            .map_err(|e| VdbError::corrupt(offset, format!("transform: {e}")))
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.put_string(self.kind.name());
        let scale = [self.linear[0][0], self.linear[1][1], self.linear[2][2]];
        let put3 = |out: &mut Vec<u8>, v: [f64; 3]| v.iter().for_each(|c| out.put_f64(*c));
        let scale_fields = |out: &mut Vec<u8>| {
            put3(out, scale);
            put3(out, scale.map(f64::abs));
            put3(out, scale.map(|s| 1.0 / s));
            put3(out, scale.map(|s| 1.0 / (s * s)));
            put3(out, scale.map(|s| 0.5 / s));
        };
        match self.kind {
            MapKind::UniformScale | MapKind::Scale => scale_fields(out),
            MapKind::UniformScaleTranslate | MapKind::ScaleTranslate => {
                put3(out, self.translation);
                scale_fields(out);
            }
            MapKind::Translation => put3(out, self.translation),
            MapKind::Affine | MapKind::Unitary => {
                for k in 0..3 {
                    for r in 0..3 {
                        out.put_f64(self.linear[r][k]);
                    }
                    out.put_f64(0.0);
                }
                put3(out, self.translation);
                out.put_f64(1.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(t: &Transform) -> Transform {
        let mut out = Vec::new();
        t.write(&mut out);
        Transform::read(&mut Cursor::new(&out, 0)).unwrap()
    }

    #[test]
    fn maps_round_trip_and_invert() {
        let affine = Transform::build(
            MapKind::Affine,
            [[0.0, -2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0]],
            [1.0, 2.0, 3.0],
        )
        .unwrap();
        for t in [
            Transform::uniform_scale(0.05).unwrap(),
            Transform::uniform_scale_translate(0.2, [0.0, 2.0, 0.0]).unwrap(),
            Transform::scale_translate([1.0, 2.0, 4.0], [-1.0, 0.5, 3.0]).unwrap(),
            Transform::build(MapKind::Translation, diag([1.0; 3]), [5.0, 6.0, 7.0]).unwrap(),
            affine,
        ] {
            assert_eq!(round_trip(&t), t);
            let p = [3.0, -4.0, 5.5];
            let back = t.world_to_index(t.index_to_world(p));
            for k in 0..3 {
                assert!((back[k] - p[k]).abs() < 1e-12);
            }
        }
        let t = Transform::uniform_scale_translate(0.2, [0.0, 2.0, 0.0]).unwrap();
        assert_eq!(t.index_to_world([1.0, 1.0, 1.0]), [0.2, 2.2, 0.2]);
    }

    #[test]
    fn frustum_is_unsupported() {
        let mut out = Vec::new();
        out.put_string("NonlinearFrustumMap");
        let err = Transform::read(&mut Cursor::new(&out, 0)).unwrap_err();
        assert!(matches!(err, VdbError::UnsupportedTransform(ref n) if n == "NonlinearFrustumMap"));
    }
}
