//! Hessian channels: the smallest and the largest eigenvalue of a volume's
//! Hessian at one scale, as extra input channels for the encoder (off by
//! default; `[sampling] hessian_sigma_mm`, docs/METHOD.md section 4).
//!
//! Why: a 2D slice cannot tell a dark tumour from CSF. Both are dark in T1,
//! and a slice through a sulcus or a ventricle shows a dark blob too. In 3D
//! they differ in shape. A dark ball is a minimum along every direction, so
//! all three eigenvalues of its Hessian are positive and the smallest one is
//! large. A sulcus (a dark sheet) or a ventricle horn (a dark tube) is flat
//! along one or two directions, so its smallest eigenvalue is near zero.
//! Likewise a bright ball has a large negative largest eigenvalue. Each
//! slice then carries this 3D shape evidence at every pixel.
//!
//! Units: derivatives per mm along orthonormal world axes (voxel derivatives
//! divided by the spacing, so the eigenvalues do not depend on how the
//! voxel axes are rotated or scaled), times `sigma^2` in mm^2, the scale
//! normalisation that makes a ball's response comparable across scales.
//! Axis order: `x` fastest, as [`crate::volume::Volume`] stores channels.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::volume::Volume;

/// The largest smoothing scale accepted (mm): beyond a head's radius the
/// channels carry nothing local.
pub const MAX_SIGMA_MM: f64 = 100.0;

/// Checks a smoothing scale.
pub fn check_sigma(sigma_mm: f64) -> Result<()> {
    if sigma_mm.is_finite() && sigma_mm > 0.0 && sigma_mm <= MAX_SIGMA_MM {
        Ok(())
    } else {
        Err(Error::invalid(
            "hessian_sigma_mm",
            format!("{sigma_mm}; use a scale in (0, {MAX_SIGMA_MM}] mm"),
        ))
    }
}

/// `volume` with two channels appended per channel: the smallest and the
/// largest Hessian eigenvalue of that channel at `sigma_mm`, times
/// `sigma_mm^2`, set to zero outside `keep` (voxels outside the body carry
/// the air's edge, not anatomy). Channel order: the input channels, then
/// (smallest, largest) of channel 0, of channel 1, ...
pub fn with_hessian_channels(volume: &Volume, sigma_mm: f64, keep: &[bool]) -> Result<Volume> {
    check_sigma(sigma_mm)?;
    let n = volume.voxels();
    if keep.len() != n {
        return Err(Error::Shape {
            what: "Hessian mask".into(),
            expected: format!("{n} voxels"),
            got: format!("{}", keep.len()),
        });
    }
    let mut data = volume.data().to_vec();
    for c in 0..volume.channels() {
        let [lo, hi] = eigen_extremes(
            volume.channel(c),
            volume.shape(),
            volume.spacing_mm(),
            sigma_mm,
        );
        for mut e in [lo, hi] {
            e.iter_mut().zip(keep).for_each(|(v, &k)| {
                if !k {
                    *v = 0.0;
                }
            });
            data.extend(e);
        }
    }
    Volume::new(
        data,
        volume.shape(),
        3 * volume.channels(),
        *volume.world_from_voxel(),
    )
}

/// Per voxel, the smallest and the largest eigenvalue of the Hessian of
/// `data` (`shape`, `x` fastest) smoothed by a Gaussian of `sigma_mm`, in
/// world units (`spacing` mm per voxel along each axis), times `sigma_mm^2`.
pub fn eigen_extremes(
    data: &[f32],
    shape: [usize; 3],
    spacing: [f64; 3],
    sigma_mm: f64,
) -> [Vec<f32>; 2] {
    let kernels: Vec<[Vec<f64>; 3]> = (0..3)
        .map(|a| derivative_kernels(sigma_mm / spacing[a]))
        .collect();
    // d[a][b]: the second derivative along axes a and b (a <= b), per mm^2.
    let order = |a: usize, b: usize| {
        let mut o = [0usize; 3];
        o[a] += 1;
        o[b] += 1;
        o
    };
    let pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)];
    let d: Vec<Vec<f32>> = pairs
        .par_iter()
        .map(|&(a, b)| {
            let o = order(a, b);
            let mut v = data.to_vec();
            for (axis, &k) in o.iter().enumerate() {
                convolve_axis(&mut v, shape, axis, &kernels[axis][k]);
            }
            let per_mm2 = (sigma_mm * sigma_mm / (spacing[a] * spacing[b])) as f32;
            v.iter_mut().for_each(|x| *x *= per_mm2);
            v
        })
        .collect();
    let n = data.len();
    let mut lo = vec![0.0f32; n];
    let mut hi = vec![0.0f32; n];
    lo.par_iter_mut()
        .zip(hi.par_iter_mut())
        .enumerate()
        .for_each(|(i, (l, h))| {
            let e = symmetric_eigenvalues([
                d[0][i] as f64,
                d[1][i] as f64,
                d[2][i] as f64,
                d[3][i] as f64,
                d[4][i] as f64,
                d[5][i] as f64,
            ]);
            *l = e[0] as f32;
            *h = e[2] as f32;
        });
    [lo, hi]
}

/// Gaussian kernels of `sigma` voxels and its first and second derivatives
/// (taps `-r..=r`, `r = round(4 sigma)`), their moments corrected so that
/// they smooth a constant, differentiate a line and twice differentiate a
/// parabola exactly.
fn derivative_kernels(sigma: f64) -> [Vec<f64>; 3] {
    let r = (4.0 * sigma + 0.5).floor().max(1.0) as i64;
    let xs: Vec<f64> = (-r..=r).map(|i| i as f64).collect();
    let s2 = sigma * sigma;
    let g: Vec<f64> = xs.iter().map(|x| (-x * x / (2.0 * s2)).exp()).collect();
    let sum: f64 = g.iter().sum();
    let g0: Vec<f64> = g.iter().map(|v| v / sum).collect();
    // Convolution flips the kernel: (f * k)(x) = sum_j f(x - j) k(j), so a
    // first derivative needs sum_j -j k(j) = 1.
    let g1: Vec<f64> = xs.iter().zip(&g0).map(|(x, v)| -x / s2 * v).collect();
    let m1: f64 = xs.iter().zip(&g1).map(|(x, v)| -x * v).sum();
    let g1 = g1.iter().map(|v| v / m1).collect();
    let raw: Vec<f64> = xs
        .iter()
        .zip(&g0)
        .map(|(x, v)| (x * x / (s2 * s2) - 1.0 / s2) * v)
        .collect();
    // Zero sum (a constant has no curvature), then sum_j j^2 k(j) / 2 = 1.
    let mean = raw.iter().sum::<f64>() / raw.len() as f64;
    let g2: Vec<f64> = raw.iter().map(|v| v - mean).collect();
    let m2: f64 = xs.iter().zip(&g2).map(|(x, v)| x * x * v / 2.0).sum();
    let g2 = g2.iter().map(|v| v / m2).collect();
    [g0, g1, g2]
}

/// Mirrors an index into `0..n` the way the edge is half-sample symmetric
/// (`d c b a | a b c d | d c b a`).
fn reflect(mut i: i64, n: i64) -> usize {
    loop {
        if i < 0 {
            i = -i - 1;
        } else if i >= n {
            i = 2 * n - i - 1;
        } else {
            return i as usize;
        }
    }
}

/// Convolves `v` (`shape`, `x` fastest) with `kernel` (odd length, centred)
/// along `axis`, edges mirrored.
fn convolve_axis(v: &mut [f32], shape: [usize; 3], axis: usize, kernel: &[f64]) {
    let [nx, ny, _] = shape;
    let stride = [1, nx, nx * ny][axis];
    let len = shape[axis];
    let r = (kernel.len() / 2) as i64;
    // A line along `axis` starts at every index whose coordinate on that
    // axis is 0: `stride` consecutive starts in each block of `stride * len`.
    let out: Vec<(usize, Vec<f32>)> = (0..v.len() / len)
        .into_par_iter()
        .map(|k| (k / stride) * stride * len + k % stride)
        .map(|start| {
            let line: Vec<f64> = (0..len).map(|m| v[start + m * stride] as f64).collect();
            let conv = (0..len as i64)
                .map(|m| {
                    kernel
                        .iter()
                        .enumerate()
                        .map(|(j, k)| k * line[reflect(m - (j as i64 - r), len as i64)])
                        .sum::<f64>() as f32
                })
                .collect();
            (start, conv)
        })
        .collect();
    for (start, conv) in out {
        for (m, x) in conv.into_iter().enumerate() {
            v[start + m * stride] = x;
        }
    }
}

/// Eigenvalues, ascending, of the symmetric matrix `[[a, b, c], [b, d, e],
/// [c, e, f]]` given as `[a, b, c, d, e, f]` (closed form by the
/// trigonometric method: no iteration, exact for diagonal matrices).
pub fn symmetric_eigenvalues(m: [f64; 6]) -> [f64; 3] {
    let [a, b, c, d, e, f] = m;
    let off = b * b + c * c + e * e;
    let q = (a + d + f) / 3.0;
    let p2 = (a - q).powi(2) + (d - q).powi(2) + (f - q).powi(2) + 2.0 * off;
    if off <= 1e-30 * p2.max(1e-300) || p2 == 0.0 {
        let mut v = [a, d, f];
        v.sort_by(f64::total_cmp);
        return v;
    }
    let p = (p2 / 6.0).sqrt();
    let (ba, bd, bf) = ((a - q) / p, (d - q) / p, (f - q) / p);
    let (bb, bc, be) = (b / p, c / p, e / p);
    let det = ba * (bd * bf - be * be) - bb * (bb * bf - be * bc) + bc * (bb * be - bd * bc);
    let phi = (det / 2.0).clamp(-1.0, 1.0).acos() / 3.0;
    let largest = q + 2.0 * p * phi.cos();
    let smallest = q + 2.0 * p * (phi + 2.0 * std::f64::consts::PI / 3.0).cos();
    [smallest, 3.0 * q - largest - smallest, largest]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affine::Affine;

    #[test]
    fn eigenvalues_of_a_rotated_diagonal_matrix() {
        // R diag(-1, 2, 5) R^T with R a rotation about z by 30 degrees then x by 50.
        let (s1, c1) = 30f64.to_radians().sin_cos();
        let (s2, c2) = 50f64.to_radians().sin_cos();
        let rz = [[c1, -s1, 0.0], [s1, c1, 0.0], [0.0, 0.0, 1.0]];
        let rx = [[1.0, 0.0, 0.0], [0.0, c2, -s2], [0.0, s2, c2]];
        let mul = |p: [[f64; 3]; 3], q: [[f64; 3]; 3]| {
            let mut o = [[0.0; 3]; 3];
            for i in 0..3 {
                for j in 0..3 {
                    o[i][j] = (0..3).map(|k| p[i][k] * q[k][j]).sum();
                }
            }
            o
        };
        let r = mul(rx, rz);
        let diag = [[-1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 5.0]];
        let rt = [0, 1, 2].map(|i| [0, 1, 2].map(|j| r[j][i]));
        let m = mul(mul(r, diag), rt);
        let got = symmetric_eigenvalues([m[0][0], m[0][1], m[0][2], m[1][1], m[1][2], m[2][2]]);
        for (g, w) in got.iter().zip([-1.0, 2.0, 5.0]) {
            assert!((g - w).abs() < 1e-9, "{got:?}");
        }
        // Repeated and diagonal cases.
        assert_eq!(
            symmetric_eigenvalues([3.0, 0.0, 0.0, 1.0, 0.0, 2.0]),
            [1.0, 2.0, 3.0]
        );
        let iso = symmetric_eigenvalues([2.0, 0.0, 0.0, 2.0, 0.0, 2.0]);
        assert!(iso.iter().all(|v| (v - 2.0).abs() < 1e-12));
    }

    #[test]
    fn a_quadratic_forms_hessian_is_exact_inside_the_volume() {
        // f = x^2 + 3 xy - 2 z^2 in mm, on an anisotropic grid (2, 1, 3 mm):
        // Hessian [[2, 3, 0], [3, 0, 0], [0, 0, -4]] everywhere.
        let spacing = [2.0, 1.0, 3.0];
        let shape = [24, 28, 20];
        let affine = Affine([
            [2.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 3.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]);
        let v = Volume::from_fn(shape, affine, |i, j, k| {
            let (x, y, z) = (
                i as f64 * spacing[0] - 20.0,
                j as f64 * spacing[1] - 14.0,
                k as f64 * spacing[2] - 30.0,
            );
            (x * x + 3.0 * x * y - 2.0 * z * z) as f32 / 100.0
        })
        .unwrap();
        let sigma = 2.0;
        let [lo, hi] = eigen_extremes(v.data(), shape, spacing, sigma);
        let want = symmetric_eigenvalues([2.0, 3.0, 0.0, 0.0, 0.0, -4.0]);
        let at = |i: usize, j: usize, k: usize| i + shape[0] * (j + shape[1] * k);
        // Far enough from every edge that the kernels (r = 4 sigma / spacing) see no mirror.
        for idx in [at(12, 14, 10), at(10, 16, 9), at(13, 12, 11)] {
            let s2 = sigma * sigma / 100.0;
            assert!(
                (lo[idx] as f64 - want[0] * s2).abs() < 1e-4,
                "{} {}",
                lo[idx],
                want[0] * s2
            );
            assert!(
                (hi[idx] as f64 - want[2] * s2).abs() < 1e-4,
                "{} {}",
                hi[idx],
                want[2] * s2
            );
        }
    }

    #[test]
    fn a_dark_ball_is_a_minimum_in_every_direction_and_a_sheet_is_not() {
        // A dark Gaussian ball (sigma 3 voxels) and a dark slab (thickness
        // alike) in a bright 32^3 volume, 1 mm voxels, Hessian at 3 mm.
        let shape = [32, 32, 32];
        let ball = Volume::from_fn(shape, Affine::identity(), |i, j, k| {
            let r2 = [i, j, k]
                .iter()
                .map(|&a| (a as f64 - 16.0).powi(2))
                .sum::<f64>();
            (1.0 - 0.5 * (-r2 / 18.0).exp()) as f32
        })
        .unwrap();
        let slab = Volume::from_fn(shape, Affine::identity(), |_, _, k| {
            (1.0 - 0.5 * (-(k as f64 - 16.0).powi(2) / 18.0).exp()) as f32
        })
        .unwrap();
        let centre = 16 + 32 * (16 + 32 * 16);
        let [b_lo, _] = eigen_extremes(ball.data(), shape, [1.0; 3], 3.0);
        let [s_lo, s_hi] = eigen_extremes(slab.data(), shape, [1.0; 3], 3.0);
        // Analytic: the ball's smoothed profile 1 - 0.5 (s/t)^3 exp(-r^2 / 2t^2)
        // with s^2 = 9, t^2 = 18: each second derivative at the centre is
        // 0.5 (s/t)^3 / t^2, times sigma^2 = 9.
        let want = 0.5 * (9.0f64 / 18.0).powf(1.5) / 18.0 * 9.0;
        assert!(
            (b_lo[centre] as f64 - want).abs() < 0.02 * want,
            "{} {want}",
            b_lo[centre]
        );
        // The slab curves along z only (1D: (s/t) instead of (s/t)^3).
        let want_slab = 0.5 * (9.0f64 / 18.0).sqrt() / 18.0 * 9.0;
        assert!(
            s_lo[centre].abs() < 1e-4 && (s_hi[centre] as f64 - want_slab).abs() < 0.02 * want_slab
        );
    }

    #[test]
    fn channels_are_appended_zeroed_outside_the_mask_and_bad_scales_refused() {
        let v = Volume::from_fn([16, 16, 16], Affine::identity(), |i, j, k| {
            ((i * 7 + j * 3 + k) % 5) as f32
        })
        .unwrap();
        let keep: Vec<bool> = (0..v.voxels()).map(|i| i % 2 == 0).collect();
        let h = with_hessian_channels(&v, 2.0, &keep).unwrap();
        assert_eq!(h.channels(), 3);
        assert_eq!(h.channel(0), v.channel(0));
        for c in 1..3 {
            assert!(h.channel(c).iter().zip(&keep).all(|(x, &k)| k || *x == 0.0));
            assert!(h.channel(c).iter().any(|x| *x != 0.0));
        }
        for bad in [0.0, -1.0, f64::NAN, 1e9] {
            assert!(with_hessian_channels(&v, bad, &keep).is_err());
        }
        assert!(with_hessian_channels(&v, 2.0, &keep[1..]).is_err());
    }
}
