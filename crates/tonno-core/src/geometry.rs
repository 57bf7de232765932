//! Tomographic geometry (docs/METHOD.md section 1): direction sets, per-direction
//! frames, the reconstruction ball, and oblique slices of a volume.
//!
//! Everything is in world millimetres through the volume's affine, so
//! anisotropic spacing and oblique grids need no resampling. A slice for
//! direction `(u, v, n)` at offset `t` has `P x P` pixels; pixel `(a, b)`
//! lies at `x = c + t n + a u + b v` with `a, b, t` on the grid
//! `-rho + index * 2 rho / (count - 1)`. Slice layout: `[b][a]` (`a`
//! fastest); a stack of slices of one direction: `[t][b][a]`.

use serde::{Deserialize, Serialize};

use crate::affine::{Affine, Vec3, add, cross, dot, norm, scale, sub};
use crate::error::{Error, Result};
use crate::volume::Volume;

/// A voxel grid: shape `[nx, ny, nz]` (i fastest) and its voxel-to-world affine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    pub shape: [usize; 3],
    pub world_from_voxel: Affine,
}

impl Grid {
    /// Voxels in the grid.
    pub fn voxels(&self) -> usize {
        self.shape.iter().product()
    }
}

impl Volume {
    /// This volume's voxel grid.
    pub fn grid(&self) -> Grid {
        Grid {
            shape: self.shape(),
            world_from_voxel: *self.world_from_voxel(),
        }
    }
}

/// The reconstruction ball: centre (world mm) and radius (mm).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ball {
    pub center_mm: Vec3,
    pub radius_mm: f64,
}

impl Ball {
    /// The default ball: the grid centre and half the field of view's
    /// diagonal, which holds every voxel.
    pub fn covering(volume: &Volume) -> Self {
        Self {
            center_mm: volume.center_mm(),
            radius_mm: volume.half_diagonal_mm(),
        }
    }
}

/// An orthonormal, right-handed frame `(u, v, n)`: `n` the slice normal,
/// `u` and `v` the slice's pixel axes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub u: Vec3,
    pub v: Vec3,
    pub n: Vec3,
}

impl Frame {
    /// A frame for unit normal `n`, rotated in-plane by `angle` radians
    /// (positive: from `u` towards `v`). The unrotated `u` is the world x
    /// axis (or y, when `n` is close to x) made orthogonal to `n`.
    pub fn from_normal(n: Vec3, angle: f64) -> Self {
        let l = norm(n);
        let n = scale(n, 1.0 / l);
        let helper = if n[0].abs() < 0.9 {
            [1.0, 0.0, 0.0]
        } else {
            [0.0, 1.0, 0.0]
        };
        let u0 = sub(helper, scale(n, dot(helper, n)));
        let u0 = scale(u0, 1.0 / norm(u0));
        let v0 = cross(n, u0);
        let (s, c) = angle.sin_cos();
        Self {
            u: add(scale(u0, c), scale(v0, s)),
            v: add(scale(u0, -s), scale(v0, c)),
            n,
        }
    }
}

/// `K` unit normals on the upper hemisphere (z >= 0) on a Fibonacci
/// lattice: `z_k = (k + 1/2) / K`, azimuth `k * pi * (3 - sqrt 5)`.
/// Near-uniform and deterministic; each weighs `2 pi / K`.
pub fn fibonacci_hemisphere(k: usize) -> Vec<Vec3> {
    let golden = std::f64::consts::PI * (3.0 - 5f64.sqrt());
    (0..k)
        .map(|i| {
            let z = (i as f64 + 0.5) / k as f64;
            let r = (1.0 - z * z).max(0.0).sqrt();
            let phi = i as f64 * golden;
            [r * phi.cos(), r * phi.sin(), z]
        })
        .collect()
}

/// How a set of slice stacks is laid out: the ball, the frames (one per
/// direction), `S` offsets per direction and `P x P` pixels per slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TomoGeometry {
    pub ball: Ball,
    pub frames: Vec<Frame>,
    /// Slices per direction (`S`).
    pub slices: usize,
    /// Pixels per slice side (`P`).
    pub pixels: usize,
}

impl TomoGeometry {
    /// Fibonacci directions with frames rotated in-plane by `in_plane_angle`
    /// radians.
    pub fn fibonacci(
        ball: Ball,
        directions: usize,
        slices: usize,
        pixels: usize,
        in_plane_angle: f64,
    ) -> Result<Self> {
        let frames = fibonacci_hemisphere(directions)
            .into_iter()
            .map(|n| Frame::from_normal(n, in_plane_angle))
            .collect();
        let g = Self {
            ball,
            frames,
            slices,
            pixels,
        };
        g.validate()?;
        Ok(g)
    }

    /// Checks counts and the ball.
    pub fn validate(&self) -> Result<()> {
        if self.frames.is_empty() {
            return Err(Error::invalid("directions", "need at least one direction"));
        }
        if self.slices < 3 {
            return Err(Error::invalid(
                "slices",
                format!("{} per direction; need at least 3", self.slices),
            ));
        }
        if self.pixels < 2 {
            return Err(Error::invalid(
                "pixels",
                format!("{} per side; need at least 2", self.pixels),
            ));
        }
        let finite_centre = self.ball.center_mm.iter().all(|v| v.is_finite());
        if !(self.ball.radius_mm.is_finite() && self.ball.radius_mm > 0.0 && finite_centre) {
            return Err(Error::invalid("ball", format!("{:?}", self.ball)));
        }
        Ok(())
    }

    /// Number of directions `K`.
    pub fn directions(&self) -> usize {
        self.frames.len()
    }

    /// Spacing of slice offsets, `dt = 2 rho / (S - 1)` (mm).
    pub fn dt_mm(&self) -> f64 {
        2.0 * self.ball.radius_mm / (self.slices - 1) as f64
    }

    /// Pixel spacing within a slice, `2 rho / (P - 1)` (mm).
    pub fn pixel_mm(&self) -> f64 {
        2.0 * self.ball.radius_mm / (self.pixels - 1) as f64
    }

    /// The slice offsets `t_j` (mm from the centre along the normal).
    pub fn offsets_mm(&self) -> Vec<f64> {
        let dt = self.dt_mm();
        (0..self.slices)
            .map(|j| -self.ball.radius_mm + j as f64 * dt)
            .collect()
    }

    /// The plane of slice `j` of direction `k`.
    pub fn plane(&self, k: usize, j: usize) -> Plane {
        let f = &self.frames[k];
        let rho = self.ball.radius_mm;
        let t = -rho + j as f64 * self.dt_mm();
        Plane::centered(self.ball.center_mm, f, t, rho, self.pixels)
    }
}

/// A sampled plane: pixel `(a, b)` at `origin + a * du + b * dv` (world mm).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plane {
    pub origin: Vec3,
    pub du: Vec3,
    pub dv: Vec3,
    pub pixels: usize,
}

impl Plane {
    /// `P x P` pixels covering `[-half_width, half_width]^2` around
    /// `center + t n` in frame `f`.
    pub fn centered(center: Vec3, f: &Frame, t: f64, half_width: f64, pixels: usize) -> Self {
        let step = 2.0 * half_width / (pixels.max(2) - 1) as f64;
        let origin = add(
            add(center, scale(f.n, t)),
            add(scale(f.u, -half_width), scale(f.v, -half_width)),
        );
        Self {
            origin,
            du: scale(f.u, step),
            dv: scale(f.v, step),
            pixels,
        }
    }

    /// The same plane with its pixel steps scaled by `[su, sv]` about its
    /// centre pixel (a zoom out when above 1).
    pub fn zoomed(&self, [su, sv]: [f64; 2]) -> Self {
        if su == 1.0 && sv == 1.0 {
            return *self;
        }
        let half = (self.pixels.max(1) - 1) as f64 / 2.0;
        let centre = add(self.origin, scale(add(self.du, self.dv), half));
        let (du, dv) = (scale(self.du, su), scale(self.dv, sv));
        Self {
            origin: add(centre, scale(add(du, dv), -half)),
            du,
            dv,
            pixels: self.pixels,
        }
    }

    /// Area of one pixel (mm^2).
    pub fn pixel_area_mm2(&self) -> f64 {
        norm(cross(self.du, self.dv))
    }
}

/// Samples channel `channel` of `volume` on `plane` by trilinear
/// interpolation (`background` outside), writing `[b][a]` into `out`
/// (`P * P` values).
pub fn sample_plane(
    volume: &Volume,
    channel: usize,
    plane: &Plane,
    background: f32,
    out: &mut [f32],
) {
    let p = plane.pixels;
    assert_eq!(out.len(), p * p, "sample_plane: output holds P*P values");
    let inv = volume.voxel_from_world();
    let o = inv.apply(plane.origin);
    let du = inv.apply_vector(plane.du);
    let dv = inv.apply_vector(plane.dv);
    let data = volume.channel(channel);
    for (b, row) in out.chunks_exact_mut(p).enumerate() {
        let start = add(o, scale(dv, b as f64));
        sample_line(data, volume.shape(), start, du, background, row);
    }
}

/// Samples the points `p0 + m * step` (voxel coordinates), `m = 0..out.len()`,
/// of a `[nx, ny, nz]` grid (i fastest) by trilinear interpolation, with
/// `background` for the missing neighbours outside the grid.
///
/// The hot loop of slicing and of stack backprojection. The points whose
/// eight neighbours all lie in the grid form one interval of `m` (the line
/// meets a convex box once), found up front so that the loop over it has no
/// bounds tests.
pub fn sample_line(
    data: &[f32],
    shape: [usize; 3],
    p0: Vec3,
    step: Vec3,
    background: f32,
    out: &mut [f32],
) {
    let n = out.len();
    // Points with any neighbour in the grid: coordinates in (-1, n_d).
    let (olo, ohi) = line_interval(shape, p0, step, n, |d| {
        (-1.0 + 1e-6, shape[d] as f64 - 1e-6)
    });
    // Points with all eight neighbours in the grid: coordinates in [0, n_d - 1].
    let (lo, hi) = if shape.iter().all(|&d| d >= 2) {
        line_interval(shape, p0, step, n, |d| (1e-6, shape[d] as f64 - 1.0 - 1e-6))
    } else {
        (0, 0)
    };
    let (lo, hi) = if hi > lo {
        (lo.max(olo), hi.min(ohi))
    } else {
        (olo, olo)
    };
    out[..olo].fill(background);
    for (m, o) in out.iter_mut().enumerate().take(lo).skip(olo) {
        *o = crate::volume::trilinear_padded(
            data,
            shape,
            add(p0, scale(step, m as f64)),
            background,
        );
    }
    if hi > lo {
        sample_interior(data, shape, p0, step, lo, &mut out[lo..hi]);
    }
    for (m, o) in out.iter_mut().enumerate().take(ohi).skip(hi.max(lo)) {
        *o = crate::volume::trilinear_padded(
            data,
            shape,
            add(p0, scale(step, m as f64)),
            background,
        );
    }
    out[ohi.max(olo)..].fill(background);
}

/// The range `[lo, hi)` of `m` for which `p0 + m * step` lies in
/// `bounds(d)` (inclusive) on every axis `d`: one interval, since the line
/// meets a box once.
fn line_interval(
    shape: [usize; 3],
    p0: Vec3,
    step: Vec3,
    n: usize,
    bounds: impl Fn(usize) -> (f64, f64),
) -> (usize, usize) {
    let mut t_lo = 0.0f64;
    let mut t_hi = n as f64 - 1.0;
    for d in 0..shape.len() {
        let (lo, hi) = bounds(d);
        if step[d].abs() < 1e-12 {
            if p0[d] < lo || p0[d] > hi {
                return (0, 0);
            }
            continue;
        }
        let a = (lo - p0[d]) / step[d];
        let b = (hi - p0[d]) / step[d];
        t_lo = t_lo.max(a.min(b));
        t_hi = t_hi.min(a.max(b));
    }
    if t_hi < t_lo {
        return (0, 0);
    }
    let lo = t_lo.ceil().max(0.0) as usize;
    let hi = ((t_hi.floor() + 1.0).max(0.0) as usize).min(n);
    (lo.min(hi), hi)
}

/// Trilinear sampling where all eight neighbours exist (see `sample_line`).
fn sample_interior(
    data: &[f32],
    shape: [usize; 3],
    p0: Vec3,
    step: Vec3,
    m0: usize,
    out: &mut [f32],
) {
    let [nx, ny, nz] = shape;
    let sxy = nx * ny;
    let start = add(p0, scale(step, m0 as f64));
    let (x0, y0, z0) = (start[0] as f32, start[1] as f32, start[2] as f32);
    let (sx, sy, sz) = (step[0] as f32, step[1] as f32, step[2] as f32);
    let (mx, my, mz) = (nx - 2, ny - 2, nz - 2);
    for (m, o) in out.iter_mut().enumerate() {
        let mf = m as f32;
        let (x, y, z) = (x0 + mf * sx, y0 + mf * sy, z0 + mf * sz);
        // The interval guarantees 0 <= x <= nx - 1 up to rounding; the clamps
        // make every index valid whatever the rounding did.
        let i = (x.max(0.0) as usize).min(mx);
        let j = (y.max(0.0) as usize).min(my);
        let k = (z.max(0.0) as usize).min(mz);
        let (fx, fy, fz) = (x - i as f32, y - j as f32, z - k as f32);
        let base = i + nx * j + sxy * k;
        let c000 = data[base];
        let c100 = data[base + 1];
        let c010 = data[base + nx];
        let c110 = data[base + nx + 1];
        let c001 = data[base + sxy];
        let c101 = data[base + sxy + 1];
        let c011 = data[base + sxy + nx];
        let c111 = data[base + sxy + nx + 1];
        let c00 = c000 + (c100 - c000) * fx;
        let c10 = c010 + (c110 - c010) * fx;
        let c01 = c001 + (c101 - c001) * fx;
        let c11 = c011 + (c111 - c011) * fx;
        let c0 = c00 + (c10 - c00) * fy;
        let c1 = c01 + (c11 - c01) * fy;
        *o = c0 + (c1 - c0) * fz;
    }
}

/// Samples every channel of `volume` on each of `planes` (all of `P x P`
/// pixels), layout `(N, C, P, P)`, into `out`, in parallel over planes:
/// the one slice extraction of tonno, used by training, validation,
/// scoring, segmentation and the benchmarks alike.
pub fn sample_planes(volume: &Volume, planes: &[Plane], background: f32, out: &mut [f32]) {
    let Some(first) = planes.first() else {
        return;
    };
    let pp = first.pixels * first.pixels;
    let per = volume.channels() * pp;
    assert_eq!(
        out.len(),
        planes.len() * per,
        "sample_planes: output holds N*C*P*P values"
    );
    let one = |plane: &Plane, slice: &mut [f32]| {
        assert_eq!(
            plane.pixels, first.pixels,
            "sample_planes: planes of one size"
        );
        for (c, chunk) in slice.chunks_exact_mut(pp).enumerate() {
            sample_plane(volume, c, plane, background, chunk);
        }
    };
    if planes.len() == 1 {
        one(first, out);
    } else {
        use rayon::prelude::*;
        out.par_chunks_mut(per)
            .zip(planes)
            .for_each(|(slice, plane)| one(plane, slice));
    }
}

/// The whole stack of direction `k`: `S` slices, layout `(S, C, P, P)`
/// ([`sample_planes`] on the geometry's planes of that direction).
pub fn extract_stack(
    volume: &Volume,
    geometry: &TomoGeometry,
    k: usize,
    background: f32,
    out: &mut [f32],
) {
    let planes: Vec<Plane> = (0..geometry.slices).map(|j| geometry.plane(k, j)).collect();
    sample_planes(volume, &planes, background, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zoomed_plane_keeps_its_centre_and_normal_and_scales_each_axis() {
        let n = [0.3, -0.5, 0.8];
        let f = Frame::from_normal(scale(n, 1.0 / norm(n)), 0.7);
        let p = Plane::centered([1.0, 2.0, 3.0], &f, 4.0, 50.0, 33);
        let z = p.zoomed([0.8, 1.25]);
        let centre = |q: &Plane| add(q.origin, scale(add(q.du, q.dv), 16.0));
        let (a, b) = (centre(&p), centre(&z));
        assert!((0..3).all(|i| (a[i] - b[i]).abs() < 1e-9), "{a:?} {b:?}");
        assert!((norm(z.du) - 0.8 * norm(p.du)).abs() < 1e-12);
        assert!((norm(z.dv) - 1.25 * norm(p.dv)).abs() < 1e-12);
        // Still the plane through the same point with the same normal.
        assert!(dot(cross(z.du, z.dv), f.u).abs() < 1e-9);
        assert!((dot(sub(z.origin, a), f.n)).abs() < 1e-9);
        assert_eq!(p.zoomed([1.0, 1.0]), p);
    }

    #[test]
    fn fibonacci_directions_are_unit_upper_and_near_uniform() {
        let dirs = fibonacci_hemisphere(256);
        assert!(
            dirs.iter()
                .all(|d| (norm(*d) - 1.0).abs() < 1e-12 && d[2] > 0.0)
        );
        // The mean of z over a uniform hemisphere is 1/2; of x and y, 0.
        let mean = |a: usize| dirs.iter().map(|d| d[a]).sum::<f64>() / 256.0;
        assert!((mean(2) - 0.5).abs() < 1e-3 && mean(0).abs() < 0.01 && mean(1).abs() < 0.01);
        // Integral of z^2 over the hemisphere is 2 pi / 3: the quadrature with
        // weights 2 pi / K must get it.
        let q: f64 =
            dirs.iter().map(|d| d[2] * d[2]).sum::<f64>() * 2.0 * std::f64::consts::PI / 256.0;
        assert!((q - 2.0 * std::f64::consts::PI / 3.0).abs() < 1e-3, "{q}");
    }

    #[test]
    fn frames_are_orthonormal_right_handed_and_rotate_in_plane() {
        for n in fibonacci_hemisphere(50)
            .into_iter()
            .chain([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        {
            for angle in [0.0, 0.7, -2.0] {
                let f = Frame::from_normal(n, angle);
                for (a, b) in [(f.u, f.v), (f.u, f.n), (f.v, f.n)] {
                    assert!(dot(a, b).abs() < 1e-12);
                }
                assert!((norm(f.u) - 1.0).abs() < 1e-12 && (norm(f.v) - 1.0).abs() < 1e-12);
                let c = cross(f.u, f.v);
                assert!(norm(sub(c, f.n)) < 1e-12, "right-handed");
                // Rotating by theta then -theta gives the unrotated frame back.
                let f0 = Frame::from_normal(n, 0.0);
                let (s, co) = (-angle).sin_cos();
                let back = add(scale(f.u, co), scale(f.v, s));
                assert!(norm(sub(back, f0.u)) < 1e-12);
            }
        }
    }

    #[test]
    fn line_interval_matches_brute_force() {
        let shape = [7, 5, 9];
        let cases = [
            ([-3.0, 2.0, 4.0], [0.37, 0.0, 0.05]),
            ([6.5, -1.0, 8.9], [-0.3, 0.21, -0.4]),
            ([2.0, 2.0, 2.0], [0.0, 0.0, 0.0]),
            ([2.0, 4.0, 2.0], [0.1, 0.0, 0.0]),
            ([-10.0, -10.0, -10.0], [0.05, 0.05, 0.05]),
        ];
        for (p0, step) in cases {
            let n = 60;
            let (lo, hi) =
                line_interval(shape, p0, step, n, |d| (1e-6, shape[d] as f64 - 1.0 - 1e-6));
            for m in 0..n {
                let p = add(p0, scale(step, m as f64));
                let inside = (0..3).all(|d| p[d] >= 1e-6 && p[d] <= shape[d] as f64 - 1.0 - 1e-6);
                assert_eq!(
                    inside,
                    m >= lo && m < hi,
                    "{p0:?} {step:?} m={m} [{lo},{hi})"
                );
            }
        }
    }

    #[test]
    fn sample_line_agrees_with_pointwise_trilinear() {
        let v = Volume::from_fn([9, 8, 7], Affine::identity(), |i, j, k| {
            ((i * 7 + j * 3 + k * 11) % 13) as f32
        })
        .unwrap();
        let p0 = [-1.7, 3.2, -0.5];
        let step = [0.31, 0.07, 0.23];
        let mut out = vec![0.0; 40];
        sample_line(v.channel(0), v.shape(), p0, step, -2.0, &mut out);
        for (m, o) in out.iter().enumerate() {
            let want = v.sample_voxel(add(p0, scale(step, m as f64)), 0, -2.0);
            assert!((o - want).abs() < 1e-4, "m={m}: {o} vs {want}");
        }
    }

    #[test]
    fn slices_at_opposite_normals_are_mirror_images() {
        // The plane (n, t) is the plane (-n, -t); with u kept and v flipped,
        // pixel (a, b) maps to (a, P-1-b).
        let v = Volume::from_fn(
            [12, 12, 12],
            Affine::from_diagonal([1.5, 1.0, 2.0], [3.0, -2.0, 1.0]),
            |i, j, k| (i as f32 - 5.0).powi(2) + 0.3 * j as f32 * k as f32,
        )
        .unwrap();
        let f = Frame::from_normal([0.3, -0.4, 0.8], 0.4);
        let g = Frame {
            u: f.u,
            v: scale(f.v, -1.0),
            n: scale(f.n, -1.0),
        };
        let c = v.center_mm();
        let p = 15;
        let (mut a, mut b) = (vec![0.0; p * p], vec![0.0; p * p]);
        sample_plane(&v, 0, &Plane::centered(c, &f, 2.5, 9.0, p), 0.0, &mut a);
        sample_plane(&v, 0, &Plane::centered(c, &g, -2.5, 9.0, p), 0.0, &mut b);
        for row in 0..p {
            for col in 0..p {
                let (x, y) = (a[row * p + col], b[(p - 1 - row) * p + col]);
                assert!((x - y).abs() < 1e-3, "({row},{col}) {x} vs {y}");
            }
        }
    }
}
