//! 4x4 voxel-to-world affine transforms.
//!
//! World coordinates are RAS+ millimetres as in NIfTI: +x right, +y anterior,
//! +z superior. Voxel coordinates are `(i, j, k)` with `i` the fastest axis on
//! disk, and integer values at voxel centres.

use serde::{Deserialize, Serialize};

/// A 3D point or vector `[x, y, z]`.
pub type Vec3 = [f64; 3];

/// Dot product.
pub fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Cross product.
pub fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// Euclidean length.
pub fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}

/// `a * s`.
pub fn scale(a: Vec3, s: f64) -> Vec3 {
    [a[0] * s, a[1] * s, a[2] * s]
}

/// `a + b`.
pub fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

/// `a - b`.
pub fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

/// An affine map `world = A * [i, j, k, 1]`, stored row-major with the last
/// row `[0, 0, 0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Affine(pub [[f64; 4]; 4]);

impl Default for Affine {
    fn default() -> Self {
        Self::identity()
    }
}

impl Affine {
    /// The identity: 1 mm isotropic voxels, origin at voxel (0, 0, 0), RAS.
    pub fn identity() -> Self {
        Self::from_diagonal([1.0, 1.0, 1.0], [0.0; 3])
    }

    /// Axis-aligned affine with the given signed spacing per axis and origin.
    pub fn from_diagonal(spacing: Vec3, origin: Vec3) -> Self {
        let mut m = [[0.0; 4]; 4];
        for d in 0..3 {
            m[d][d] = spacing[d];
            m[d][3] = origin[d];
        }
        m[3][3] = 1.0;
        Self(m)
    }

    /// Affine from the three world-space column vectors of the voxel axes and
    /// the world position of voxel (0, 0, 0).
    pub fn from_columns(columns: [Vec3; 3], origin: Vec3) -> Self {
        let mut m = [[0.0; 4]; 4];
        for (c, col) in columns.iter().enumerate() {
            for r in 0..3 {
                m[r][c] = col[r];
            }
        }
        for r in 0..3 {
            m[r][3] = origin[r];
        }
        m[3][3] = 1.0;
        Self(m)
    }

    /// World-space step of one voxel along voxel axis `axis`.
    pub fn column(&self, axis: usize) -> Vec3 {
        [self.0[0][axis], self.0[1][axis], self.0[2][axis]]
    }

    /// World position of voxel (0, 0, 0).
    pub fn origin(&self) -> Vec3 {
        [self.0[0][3], self.0[1][3], self.0[2][3]]
    }

    /// Voxel spacing in mm: the length of each voxel axis in world space.
    pub fn spacing_mm(&self) -> Vec3 {
        [
            norm(self.column(0)),
            norm(self.column(1)),
            norm(self.column(2)),
        ]
    }

    /// Maps a voxel coordinate to world mm.
    pub fn apply(&self, p: Vec3) -> Vec3 {
        let m = &self.0;
        [
            m[0][0] * p[0] + m[0][1] * p[1] + m[0][2] * p[2] + m[0][3],
            m[1][0] * p[0] + m[1][1] * p[1] + m[1][2] * p[2] + m[1][3],
            m[2][0] * p[0] + m[2][1] * p[1] + m[2][2] * p[2] + m[2][3],
        ]
    }

    /// Maps a direction (no translation).
    pub fn apply_vector(&self, v: Vec3) -> Vec3 {
        let m = &self.0;
        [
            m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
            m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
            m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
        ]
    }

    /// Determinant of the 3x3 linear part (negative for a left-handed voxel grid).
    pub fn determinant(&self) -> f64 {
        let m = &self.0;
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    }

    /// The inverse map (world mm to voxel), or `None` when the linear part is
    /// singular (a zero spacing, collinear axes).
    pub fn inverse(&self) -> Option<Self> {
        let m = &self.0;
        let det = self.determinant();
        let scale_ = self.spacing_mm().iter().product::<f64>();
        if !det.is_finite() || scale_ == 0.0 || det.abs() < 1e-12 * scale_ {
            return None;
        }
        let inv_det = 1.0 / det;
        let mut r = [[0.0; 4]; 4];
        r[0][0] = (m[1][1] * m[2][2] - m[1][2] * m[2][1]) * inv_det;
        r[0][1] = (m[0][2] * m[2][1] - m[0][1] * m[2][2]) * inv_det;
        r[0][2] = (m[0][1] * m[1][2] - m[0][2] * m[1][1]) * inv_det;
        r[1][0] = (m[1][2] * m[2][0] - m[1][0] * m[2][2]) * inv_det;
        r[1][1] = (m[0][0] * m[2][2] - m[0][2] * m[2][0]) * inv_det;
        r[1][2] = (m[0][2] * m[1][0] - m[0][0] * m[1][2]) * inv_det;
        r[2][0] = (m[1][0] * m[2][1] - m[1][1] * m[2][0]) * inv_det;
        r[2][1] = (m[0][1] * m[2][0] - m[0][0] * m[2][1]) * inv_det;
        r[2][2] = (m[0][0] * m[1][1] - m[0][1] * m[1][0]) * inv_det;
        for row in 0..3 {
            r[row][3] = -(r[row][0] * m[0][3] + r[row][1] * m[1][3] + r[row][2] * m[2][3]);
        }
        r[3][3] = 1.0;
        Some(Self(r))
    }

    /// Composition `self * other` (apply `other` first).
    pub fn compose(&self, other: &Self) -> Self {
        let mut r = [[0.0; 4]; 4];
        for (i, row) in r.iter_mut().enumerate() {
            for (j, cell) in row.iter_mut().enumerate() {
                *cell = (0..4).map(|k| self.0[i][k] * other.0[k][j]).sum();
            }
        }
        Self(r)
    }

    /// True when every entry is finite and the last row is `[0, 0, 0, 1]`.
    pub fn is_valid(&self) -> bool {
        self.0.iter().flatten().all(|v| v.is_finite())
            && self.0[3] == [0.0, 0.0, 0.0, 1.0]
            && self.inverse().is_some()
    }

    /// Orientation code, as nibabel's `aff2axcodes`: for each voxel axis, the
    /// world direction it points to most (`R`/`L`, `A`/`P`, `S`/`I`).
    pub fn orientation_code(&self) -> String {
        const POS: [char; 3] = ['R', 'A', 'S'];
        const NEG: [char; 3] = ['L', 'P', 'I'];
        // Greedy assignment by the largest absolute direction cosine, as
        // nibabel's io_orientation does for non-oblique and mildly oblique grids.
        let cols: Vec<Vec3> = (0..3)
            .map(|a| {
                let c = self.column(a);
                let n = norm(c);
                if n > 0.0 { scale(c, 1.0 / n) } else { c }
            })
            .collect();
        let mut used_world = [false; 3];
        let mut used_axis = [false; 3];
        let mut code = ['?'; 3];
        for _ in 0..3 {
            let mut best = (0usize, 0usize, -1.0f64);
            for (a, col) in cols.iter().enumerate() {
                if used_axis[a] {
                    continue;
                }
                for w in 0..3 {
                    if !used_world[w] && col[w].abs() > best.2 {
                        best = (a, w, col[w].abs());
                    }
                }
            }
            let (a, w, _) = best;
            used_axis[a] = true;
            used_world[w] = true;
            code[a] = if cols[a][w] >= 0.0 { POS[w] } else { NEG[w] };
        }
        code.iter().collect()
    }

    /// Converts an affine expressed in LPS world coordinates (DICOM, NRRD
    /// "left-posterior-superior", ITK) to RAS by negating world x and y.
    pub fn lps_to_ras(&self) -> Self {
        let mut m = self.0;
        for c in 0..4 {
            m[0][c] = -m[0][c];
            m[1][c] = -m[1][c];
        }
        Self(m)
    }

    /// Largest absolute difference between two affines' entries.
    pub fn max_abs_diff(&self, other: &Self) -> f64 {
        self.0
            .iter()
            .flatten()
            .zip(other.0.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    }
}

impl std::fmt::Display for Affine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (r, row) in self.0.iter().enumerate() {
            if r > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "[{:>10.4} {:>10.4} {:>10.4} {:>10.4}]",
                row[0], row[1], row[2], row[3]
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique() -> Affine {
        // 0.8 x 1.1 x 2.5 mm voxels rotated 30 degrees about z and 20 about x.
        let (a, b) = (30f64.to_radians(), 20f64.to_radians());
        let rz = [
            [a.cos(), -a.sin(), 0.0],
            [a.sin(), a.cos(), 0.0],
            [0.0, 0.0, 1.0],
        ];
        let rx = [
            [1.0, 0.0, 0.0],
            [0.0, b.cos(), -b.sin()],
            [0.0, b.sin(), b.cos()],
        ];
        let sp = [0.8, 1.1, 2.5];
        let mut cols = [[0.0; 3]; 3];
        for (c, col) in cols.iter_mut().enumerate() {
            for (r, v) in col.iter_mut().enumerate() {
                *v = (0..3).map(|k| rz[r][k] * rx[k][c]).sum::<f64>() * sp[c];
            }
        }
        Affine::from_columns(cols, [-90.0, 12.5, 40.0])
    }

    #[test]
    fn voxel_world_voxel_is_identity() {
        let a = oblique();
        let inv = a.inverse().unwrap();
        for p in [[0.0, 0.0, 0.0], [3.5, -2.0, 17.25], [100.0, 50.0, 7.0]] {
            let q = inv.apply(a.apply(p));
            for d in 0..3 {
                assert!((p[d] - q[d]).abs() < 1e-9, "{p:?} -> {q:?}");
            }
        }
        assert!(a.compose(&inv).max_abs_diff(&Affine::identity()) < 1e-12);
    }

    #[test]
    fn spacing_is_column_length() {
        let s = oblique().spacing_mm();
        for (got, want) in s.iter().zip([0.8, 1.1, 2.5]) {
            assert!((got - want).abs() < 1e-12);
        }
    }

    #[test]
    fn orientation_codes_match_nibabel_conventions() {
        assert_eq!(Affine::identity().orientation_code(), "RAS");
        let lps = Affine::from_diagonal([-1.0, -1.0, 1.0], [0.0; 3]);
        assert_eq!(lps.orientation_code(), "LPS");
        // Axes permuted: i points superior, j right, k posterior.
        let perm = Affine::from_columns([[0., 0., 2.], [1., 0., 0.], [0., -3., 0.]], [0.0; 3]);
        assert_eq!(perm.orientation_code(), "SRP");
        assert_eq!(oblique().orientation_code(), "RAS");
    }

    #[test]
    fn lps_to_ras_flips_x_and_y() {
        let a = Affine::from_diagonal([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]).lps_to_ras();
        assert_eq!(a.apply([1.0, 1.0, 1.0]), [-11.0, -22.0, 33.0]);
    }

    #[test]
    fn singular_affine_has_no_inverse() {
        let a = Affine::from_diagonal([1.0, 0.0, 1.0], [0.0; 3]);
        assert!(a.inverse().is_none());
        assert!(!a.is_valid());
    }
}
