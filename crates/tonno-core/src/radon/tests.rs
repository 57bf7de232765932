//! Tests of the Radon transform against analytic answers (docs/METHOD.md
//! section 2) and its algebraic properties.

use std::f64::consts::PI;
use std::sync::Arc;

use super::*;
use crate::affine::{Affine, Vec3, norm};
use crate::geometry::{Ball, TomoGeometry, extract_stack};
use crate::rng::Rng;
use crate::volume::Volume;

/// A unit-density ball of radius `r` mm centred at world `c`, with
/// partial-volume edges (4^3 supersampling) so that the discrete volume
/// approximates the continuous ball.
fn ball_volume(shape: [usize; 3], affine: Affine, c: Vec3, r: f64) -> Volume {
    let sub = 4;
    Volume::from_fn(shape, affine, |i, j, k| {
        let mut inside = 0;
        for a in 0..sub {
            for b in 0..sub {
                for d in 0..sub {
                    let off = |q: usize| (q as f64 + 0.5) / sub as f64 - 0.5;
                    let p = affine.apply([i as f64 + off(a), j as f64 + off(b), k as f64 + off(d)]);
                    if norm(crate::affine::sub(p, c)) <= r {
                        inside += 1;
                    }
                }
            }
        }
        inside as f32 / (sub * sub * sub) as f32
    })
    .unwrap()
}

fn geometry(v: &Volume, k: usize, s: usize, p: usize) -> Arc<TomoGeometry> {
    Arc::new(TomoGeometry::fibonacci(Ball::covering(v), k, s, p, 0.0).unwrap())
}

/// Mean and mean absolute error of `rec` against 1 inside `inner_r` and 0
/// outside `outer_r` of centre `c`.
struct BallErrors {
    mean_inside: f64,
    mae_inside: f64,
    mean_outside: f64,
    mae_outside: f64,
}

fn ball_errors(v: &Volume, rec: &[f32], c: Vec3, inner_r: f64, outer_r: f64) -> BallErrors {
    let (mut si, mut ai, mut ni, mut so, mut ao, mut no) = (0.0, 0.0, 0, 0.0, 0.0, 0);
    let [nx, ny, nz] = v.shape();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let d = norm(crate::affine::sub(
                    v.voxel_to_world([i as f64, j as f64, k as f64]),
                    c,
                ));
                let x = rec[v.index(i, j, k, 0)] as f64;
                if d < inner_r {
                    si += x;
                    ai += (x - 1.0).abs();
                    ni += 1;
                } else if d > outer_r {
                    so += x;
                    ao += x.abs();
                    no += 1;
                }
            }
        }
    }
    BallErrors {
        mean_inside: si / ni as f64,
        mae_inside: ai / ni as f64,
        mean_outside: so / no as f64,
        mae_outside: ao / no as f64,
    }
}

#[test]
fn plane_integrals_of_a_ball_are_pi_r2_minus_t2() {
    let r = 14.0;
    let v = ball_volume([40, 40, 40], Affine::identity(), [19.5, 19.5, 19.5], r);
    let g = geometry(&v, 12, 41, 72);
    let sino = plane_integrals(&v, 0, &g);
    let peak = PI * r * r;
    let offsets = g.offsets_mm();
    let (mut worst, mut total) = (0.0f64, 0.0f64);
    for k in 0..g.directions() {
        for (j, &t) in offsets.iter().enumerate() {
            let want = if t.abs() <= r {
                PI * (r * r - t * t)
            } else {
                0.0
            };
            let e = (sino.profile(k)[j] as f64 - want).abs() / peak;
            worst = worst.max(e);
            total += e;
        }
    }
    // Trilinear interpolation blurs the ball's edge over a voxel: the largest
    // errors sit at |t| = r, the typical one is far smaller.
    let mean = total / (g.directions() * g.slices) as f64;
    assert!(
        worst < 0.03 && mean < 0.005,
        "max error {worst}, mean {mean} of the peak"
    );
}

#[test]
fn ball_reconstruction_is_one_inside_and_zero_outside() {
    // docs/METHOD.md section 2: at 64^3 with K = 128 the mean inside is within 1% of 1 and
    // the mean absolute error inside 0.8 r below 5%.
    let r = 20.0;
    let c = [31.5, 31.5, 31.5];
    let v = ball_volume([64, 64, 64], Affine::identity(), c, r);
    let g = geometry(&v, 128, 128, 128);
    let rec = reconstruct_volume(&v, 0, &g, &Filter::default()).unwrap();
    let e = ball_errors(&v, rec.data(), c, 0.8 * r, 1.2 * r);
    assert!(
        (e.mean_inside - 1.0).abs() < 0.01,
        "mean inside {}",
        e.mean_inside
    );
    assert!(e.mae_inside < 0.05, "MAE inside {}", e.mae_inside);
    // Outside, K = 128 directions leave unbiased streaks (angular aliasing of
    // the edge's shells) of about 8%; they shrink as K grows (measured: 4% at
    // K = 256, 1.6% at K = 512; see the next test).
    assert!(
        e.mean_outside.abs() < 0.01,
        "mean outside {}",
        e.mean_outside
    );
    assert!(e.mae_outside < 0.1, "MAE outside {}", e.mae_outside);
}

#[test]
fn central_difference_filter_also_reconstructs_the_ball() {
    let r = 12.0;
    let c = [19.5, 19.5, 19.5];
    let v = ball_volume([40, 40, 40], Affine::identity(), c, r);
    let g = geometry(&v, 96, 80, 80);
    let filter = Filter {
        kind: FilterKind::CentralDifference,
        padding: Padding::Zero,
        ..Filter::default()
    };
    let rec = reconstruct_volume(&v, 0, &g, &filter).unwrap();
    let e = ball_errors(&v, rec.data(), c, 0.8 * r, 1.2 * r);
    assert!(
        (e.mean_inside - 1.0).abs() < 0.03,
        "mean inside {}",
        e.mean_inside
    );
    assert!(e.mae_outside < 0.08, "MAE outside {}", e.mae_outside);
}

#[test]
fn reconstruction_error_falls_as_directions_and_slices_grow() {
    let r = 10.0;
    let c = [15.5, 15.5, 15.5];
    let v = ball_volume([32, 32, 32], Affine::identity(), c, r);
    let errs: Vec<f64> = [(8, 24), (32, 48), (128, 96)]
        .iter()
        .map(|&(k, s)| {
            let g = geometry(&v, k, s, s);
            let rec = reconstruct_volume(&v, 0, &g, &Filter::default()).unwrap();
            let e = ball_errors(&v, rec.data(), c, 0.8 * r, 1.2 * r);
            e.mae_inside + e.mae_outside
        })
        .collect();
    assert!(errs[0] > errs[1] && errs[1] > errs[2], "errors {errs:?}");
}

#[test]
fn backprojection_is_the_adjoint_of_voxel_projection() {
    // <P f, g> == <f, B g> on an oblique, anisotropic grid.
    let mut rng = Rng::new(11);
    let (ax, ay) = (0.3f64, -0.5f64);
    let cols = [
        [1.2 * ax.cos(), 1.2 * ax.sin(), 0.0],
        [
            -0.8 * ax.sin() * ay.cos(),
            0.8 * ax.cos() * ay.cos(),
            0.8 * ay.sin(),
        ],
        [0.0, -1.5 * ay.sin(), 1.5 * ay.cos()],
    ];
    let grid = Grid {
        shape: [17, 13, 11],
        world_from_voxel: Affine::from_columns(cols, [-3.0, 5.0, 2.0]),
    };
    let f: Vec<f32> = (0..grid.voxels()).map(|_| rng.normal() as f32).collect();
    let v = Volume::new(f.clone(), grid.shape, 1, grid.world_from_voxel).unwrap();
    let mut ball = Ball::covering(&v);
    ball.radius_mm *= 0.8; // some voxels beyond the ball: the guards matter
    let geom = Arc::new(TomoGeometry::fibonacci(ball, 23, 19, 8, 0.0).unwrap());
    let g: Vec<f32> = (0..23 * 19).map(|_| rng.normal() as f32).collect();
    let sino = Sinogram::new(geom.clone(), g.clone()).unwrap();
    let pf = project_voxels(&f, &grid, &geom, 0.7);
    let bg = backproject(&sino, &grid, 0.7);
    let lhs: f64 = pf
        .values
        .iter()
        .zip(&g)
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum();
    let rhs: f64 = f.iter().zip(&bg).map(|(a, b)| *a as f64 * *b as f64).sum();
    let norm_scale = (pf.values.iter().map(|x| (*x as f64).powi(2)).sum::<f64>()
        * g.iter().map(|x| (*x as f64).powi(2)).sum::<f64>())
    .sqrt();
    assert!(
        (lhs - rhs).abs() < 1e-5 * norm_scale,
        "{lhs} vs {rhs} (scale {norm_scale})"
    );
}

#[test]
fn voxel_projection_approximates_plane_integrals() {
    // Two discretisations of the same transform: splatting voxels into t bins
    // (times voxel volume / dt) and summing slice pixels.
    let r = 9.0;
    let v = ball_volume([28, 28, 28], Affine::identity(), [13.5, 13.5, 13.5], r);
    let g = geometry(&v, 6, 40, 64);
    let slices = plane_integrals(&v, 0, &g);
    let voxels = project_voxels(v.data(), &v.grid(), &g, (1.0 / g.dt_mm()) as f32);
    let peak = PI * r * r;
    for (a, b) in slices.values.iter().zip(&voxels.values) {
        assert!(((a - b) as f64).abs() < 0.03 * peak, "{a} vs {b}");
    }
}

#[test]
fn reconstruction_is_the_same_in_world_coordinates_for_any_affine() {
    // The same physical ball stored on a flipped, anisotropic, oblique grid
    // reconstructs to the same world-space function.
    let r = 11.0;
    let c = [2.0, -3.0, 5.0];
    let base = Affine::from_diagonal([1.0; 3], [-17.5 + 2.0, -17.5 - 3.0, -17.5 + 5.0]);
    let va = ball_volume([36, 36, 36], base, c, r);
    let th = 0.35f64;
    let cols = [
        [-1.25 * th.cos(), -1.25 * th.sin(), 0.0],
        [-0.9 * th.sin(), 0.9 * th.cos(), 0.0],
        [0.0, 0.0, 1.1],
    ];
    // Place the oblique grid so that it covers the ball.
    let shape_b = [30, 42, 34];
    let centre_vox = shape_b.map(|n| (n as f64 - 1.0) / 2.0);
    let lin = Affine::from_columns(cols, [0.0; 3]);
    let off = lin.apply(centre_vox);
    let vb = ball_volume(
        shape_b,
        Affine::from_columns(cols, [c[0] - off[0], c[1] - off[1], c[2] - off[2]]),
        c,
        r,
    );
    // One geometry in world mm for both.
    let ball = Ball {
        center_mm: c,
        radius_mm: 26.0,
    };
    let geom = Arc::new(TomoGeometry::fibonacci(ball, 96, 96, 96, 0.0).unwrap());
    let sa = plane_integrals(&va, 0, &geom);
    let sb = plane_integrals(&vb, 0, &geom);
    let peak = (PI * r * r) as f32;
    let worst = sa
        .values
        .iter()
        .zip(&sb.values)
        .map(|(a, b)| (a - b).abs() / peak)
        .fold(0.0, f32::max);
    assert!(worst < 0.03, "sinograms differ by {worst} of the peak");
    let filter = Filter::default();
    let ra = va
        .same_grid(reconstruct(&sa, &filter, &va.grid()).unwrap())
        .unwrap();
    let rb = vb
        .same_grid(reconstruct(&sb, &filter, &vb.grid()).unwrap())
        .unwrap();
    // Compare at world points inside and outside the ball.
    let mut rng = Rng::new(5);
    let mut worst = 0.0f32;
    for _ in 0..300 {
        let d = rng.unit_vector();
        let rad = rng.range(0.0, 0.75) * r;
        let rad = if rng.uniform() < 0.3 {
            rng.range(1.3, 1.6) * r
        } else {
            rad
        };
        let p = [c[0] + d[0] * rad, c[1] + d[1] * rad, c[2] + d[2] * rad];
        let (a, b) = (
            ra.sample_world(p, 0, f32::NAN),
            rb.sample_world(p, 0, f32::NAN),
        );
        worst = worst.max((a - b).abs());
        let want = if rad < r { 1.0 } else { 0.0 };
        assert!(
            (a - want).abs() < 0.2 && (b - want).abs() < 0.2,
            "at {p:?}: {a}, {b}, want {want}"
        );
    }
    assert!(
        worst < 0.15,
        "world-space reconstructions differ by {worst}"
    );
}

#[test]
fn central_difference_is_exact_on_parabolas_and_edge_padding_kills_constants() {
    let v = Volume::filled([8, 8, 8], Affine::identity(), 0.0).unwrap();
    let g = geometry(&v, 2, 21, 4);
    let dt = g.dt_mm();
    let t = g.offsets_mm();
    // g(t) = 3 t^2 + 2 t + 1: g'' = 6 away from the ends.
    let prof: Vec<f32> = t.iter().flat_map(|_| [0.0]).collect::<Vec<_>>();
    let _ = prof;
    let vals: Vec<f32> = (0..2)
        .flat_map(|_| t.iter().map(|&x| (3.0 * x * x + 2.0 * x + 1.0) as f32))
        .collect();
    let sino = Sinogram::new(g.clone(), vals).unwrap();
    let cd = Filter {
        kind: FilterKind::CentralDifference,
        ..Filter::default()
    };
    let out = cd.apply(&sino).unwrap();
    for j in 1..20 {
        assert!(
            (out.profile(0)[j] - 6.0).abs() < 1e-2,
            "j={j}: {}",
            out.profile(0)[j]
        );
    }
    // A constant profile (an encoder's bias): edge padding gives 0 everywhere,
    // zero padding a large spike at both ends (the "bright shell").
    let konst = Sinogram::new(g.clone(), vec![2.5; 42]).unwrap();
    for kind in [FilterKind::CentralDifference, FilterKind::Spectral] {
        let edge = Filter {
            kind,
            padding: Padding::Edge,
            ..Filter::default()
        }
        .apply(&konst)
        .unwrap();
        let zero = Filter {
            kind,
            padding: Padding::Zero,
            ..Filter::default()
        }
        .apply(&konst)
        .unwrap();
        let max_edge = edge.values.iter().map(|v| v.abs()).fold(0.0, f32::max);
        let end_zero = zero.profile(0)[0].abs();
        assert!(
            max_edge < 1e-3 * 2.5 / (dt * dt) as f32,
            "{kind:?}: edge padding leaves {max_edge}"
        );
        assert!(
            end_zero > 0.3 * 2.5 / (dt * dt) as f32,
            "{kind:?}: zero padding end value {end_zero}"
        );
    }
}

#[test]
fn spectral_filter_matches_the_analytic_second_derivative_of_a_gaussian() {
    let v = Volume::filled([8, 8, 8], Affine::identity(), 0.0).unwrap();
    let g = Arc::new(
        TomoGeometry::fibonacci(
            Ball {
                center_mm: [0.0; 3],
                radius_mm: 30.0,
            },
            1,
            121,
            4,
            0.0,
        )
        .unwrap(),
    );
    let _ = v;
    let sigma = 4.0;
    let t = g.offsets_mm();
    let vals: Vec<f32> = t
        .iter()
        .map(|&x| (-x * x / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let sino = Sinogram::new(g.clone(), vals).unwrap();
    for window in [Window::None, Window::SheppLogan] {
        let f = Filter {
            window,
            padding: Padding::Zero,
            ..Filter::default()
        };
        let out = f.apply(&sino).unwrap();
        for (j, &x) in t.iter().enumerate() {
            let want =
                ((x * x - sigma * sigma) / sigma.powi(4)) * (-x * x / (2.0 * sigma * sigma)).exp();
            assert!(
                (out.values[j] as f64 - want).abs() < 2e-3,
                "{window:?} t={x}: {} vs {want}",
                out.values[j]
            );
        }
    }
    // Hann smooths: the peak magnitude shrinks but the sign pattern stays.
    let hann = Filter {
        padding: Padding::Zero,
        ..Filter::default()
    }
    .apply(&sino)
    .unwrap();
    assert!(hann.values[60] < 0.0 && hann.values[60] > -1.0 / sigma.powi(2) as f32);
}

#[test]
fn stack_backprojection_of_profile_stacks_equals_profile_backprojection() {
    // A stack constant across each slice carries only a profile: resampling
    // it trilinearly is linear interpolation in t.
    let v = ball_volume(
        [20, 18, 16],
        Affine::from_diagonal([1.2, 1.0, 1.4], [0.0; 3]),
        [12.0, 9.0, 10.0],
        5.0,
    );
    let g = geometry(&v, 7, 25, 9);
    let mut rng = Rng::new(2);
    let prof: Vec<f32> = (0..7 * 25).map(|_| rng.normal() as f32).collect();
    let sino = Sinogram::new(g.clone(), prof.clone()).unwrap();
    let want = backproject(&sino, &v.grid(), 0.5);
    let stacks: Vec<Vec<f32>> = (0..7)
        .map(|k| {
            prof[k * 25..(k + 1) * 25]
                .iter()
                .flat_map(|&x| std::iter::repeat_n(x, 81))
                .collect()
        })
        .collect();
    let views: Vec<Stack<'_>> = stacks
        .iter()
        .enumerate()
        .map(|(k, s)| Stack {
            direction: k,
            values: s,
        })
        .collect();
    let mut got = vec![0.0; v.voxels()];
    backproject_stack(&g, &views, &v.grid(), 0.5, &mut got);
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

#[test]
fn averaging_a_volumes_own_stacks_gives_the_volume_back() {
    // Averaged CAM of stacks that are the same object in every direction:
    // each direction's stack resampled onto the grid is the (smoothed) volume.
    let c = [15.5, 15.5, 15.5];
    let v = ball_volume([32, 32, 32], Affine::identity(), c, 9.0);
    let g = geometry(&v, 10, 64, 64);
    let (s, p) = (g.slices, g.pixels);
    let stacks: Vec<Vec<f32>> = (0..10)
        .map(|k| {
            let mut st = vec![0.0; s * p * p];
            extract_stack(&v, &g, k, 0.0, &mut st);
            st
        })
        .collect();
    let views: Vec<Stack<'_>> = stacks
        .iter()
        .enumerate()
        .map(|(k, s)| Stack {
            direction: k,
            values: s,
        })
        .collect();
    let mut avg = vec![0.0; v.voxels()];
    backproject_stack(&g, &views, &v.grid(), 0.1, &mut avg);
    let mae = avg
        .iter()
        .zip(v.data())
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / v.voxels() as f32;
    assert!(mae < 0.01, "mean abs difference {mae}");
}

#[test]
fn sinogram_rejects_wrong_length_and_filter_rejects_bad_cutoff() {
    let v = Volume::filled([8, 8, 8], Affine::identity(), 0.0).unwrap();
    let g = geometry(&v, 3, 5, 4);
    assert!(Sinogram::new(g.clone(), vec![0.0; 14]).is_err());
    let s = Sinogram::new(g, vec![0.0; 15]).unwrap();
    assert!(
        Filter {
            cutoff: 0.0,
            ..Filter::default()
        }
        .apply(&s)
        .is_err()
    );
}

#[test]
fn every_simd_backprojection_kernel_matches_the_scalar_loop() {
    // Oblique grid, odd row length (SIMD tails), voxels beyond the ball (clamps).
    let mut rng = Rng::new(4);
    let grid = Grid {
        shape: [37, 9, 7],
        world_from_voxel: Affine::from_columns(
            [[0.9, 0.2, 0.0], [-0.1, 1.1, 0.3], [0.0, -0.2, 1.7]],
            [-20.0, -5.0, -6.0],
        ),
    };
    let v = Volume::filled(grid.shape, grid.world_from_voxel, 0.0).unwrap();
    let mut ball = Ball::covering(&v);
    ball.radius_mm *= 0.6;
    let geom = Arc::new(TomoGeometry::fibonacci(ball, 13, 21, 4, 0.0).unwrap());
    let sino = Sinogram::new(
        geom.clone(),
        (0..13 * 21).map(|_| rng.normal() as f32).collect(),
    )
    .unwrap();
    let tables: Vec<LerpTable> = (0..13)
        .map(|k| LerpTable::new(sino.profile(k), 1.0))
        .collect();
    let coefs: Vec<[f64; 4]> = (0..13).map(|k| tau_coefficients(&geom, &grid, k)).collect();
    let reference = backproject_with(RowKernel::Scalar, &tables, &coefs, &grid);
    let kernels = RowKernel::available();
    for kernel in kernels {
        let got = backproject_with(kernel, &tables, &coefs, &grid);
        for (a, b) in got.iter().zip(&reference) {
            assert!(
                (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                "{}: {a} vs {b}",
                kernel.name()
            );
        }
    }
}

#[test]
fn tomographic_cam_is_sharper_than_averaged_cam_for_slice_level_responses() {
    // A "CAM" that responds to a whole slice in proportion to how much of a
    // ball it cuts (the plane integral), flat across the slice: averaging
    // its stacks gives the unfiltered backprojection (a blur), the
    // tomographic form the filtered one (the ball). Measured: the steepest
    // fall of the radial profile and the error against the ball.
    let r = 8.0;
    let c = [15.5, 15.5, 15.5];
    let v = ball_volume([32, 32, 32], Affine::identity(), c, r);
    // Plane integrals need fine pixels; the flat stacks need only a few.
    let sino = plane_integrals(&v, 0, &geometry(&v, 64, 48, 48));
    let g = geometry(&v, 64, 48, 6);
    let (s, pp) = (g.slices, g.pixels * g.pixels);
    let stacks: Vec<Vec<f32>> = (0..64)
        .map(|k| {
            sino.profile(k)
                .iter()
                .flat_map(|&x| std::iter::repeat_n(x, pp))
                .collect()
        })
        .collect();
    let mut avg = vec![0.0; v.voxels()];
    let mut tomo = vec![0.0; v.voxels()];
    let filter = Filter {
        padding: Padding::Zero,
        ..Filter::default()
    };
    for (k, st) in stacks.iter().enumerate() {
        backproject_stack(
            &g,
            &[Stack {
                direction: k,
                values: st,
            }],
            &v.grid(),
            1.0 / 64.0,
            &mut avg,
        );
        let f = filter_stack(&g, &filter, st).unwrap();
        assert_eq!(f.len(), s * pp);
        backproject_stack(
            &g,
            &[Stack {
                direction: k,
                values: &f,
            }],
            &v.grid(),
            inverse_scale(64),
            &mut tomo,
        );
    }
    // Radial profiles, normalised to their centre value.
    let profile = |h: &[f32]| -> Vec<f64> {
        let mut sums = vec![(0.0, 0usize); 16];
        for (idx, &x) in h.iter().enumerate() {
            let p = [
                (idx % 32) as f64,
                ((idx / 32) % 32) as f64,
                (idx / 1024) as f64,
            ];
            let d = norm(crate::affine::sub(p, c));
            let b = d as usize;
            if b < 16 {
                sums[b].0 += x as f64;
                sums[b].1 += 1;
            }
        }
        let prof: Vec<f64> = sums.iter().map(|(a, n)| a / *n as f64).collect();
        prof.iter().map(|x| x / prof[0]).collect()
    };
    // Sharpness: the steepest drop of the normalised radial profile per voxel.
    let steepest = |p: &[f64]| p.windows(2).map(|w| w[0] - w[1]).fold(0.0, f64::max);
    let (sa, st) = (steepest(&profile(&avg)), steepest(&profile(&tomo)));
    assert!(
        st > 2.0 * sa,
        "steepest edge: tomographic {st:.3} per voxel, averaged {sa:.3}"
    );
    let direct = reconstruct(&sino, &filter, &v.grid()).unwrap();
    let e0 = ball_errors(&v, &direct, c, 0.8 * r, 1.2 * r);
    let e = ball_errors(&v, &tomo, c, 0.8 * r, 1.2 * r);
    assert!(
        (e.mean_inside - 1.0).abs() < 0.05,
        "tomographic mean inside {}, direct {}",
        e.mean_inside,
        e0.mean_inside
    );
}

#[test]
fn a_misspelt_simd_kernel_is_refused_by_name() {
    let e = RowKernel::choose(Some("avx3")).unwrap_err().to_string();
    assert!(
        e.contains("TONNO_SIMD") && e.contains("avx3") && e.contains("not a kernel"),
        "{e}"
    );
    assert_eq!(RowKernel::choose(Some("scalar")).unwrap().name(), "scalar");
    assert_eq!(
        RowKernel::choose(None).unwrap().name(),
        RowKernel::available()[0].name()
    );
}

#[test]
fn sirt_reconstructs_a_ball_and_its_residual_falls_every_iteration() {
    // The ball of docs/METHOD.md section 2, from its own plane integrals.
    let r = 10.0;
    let c = [15.5, 15.5, 15.5];
    let v = ball_volume([32, 32, 32], Affine::identity(), c, r);
    let g = geometry(&v, 32, 48, 48);
    let sino = plane_integrals(&v, 0, &g);
    let out = sirt(&sino, &v.grid(), &Sirt::default()).unwrap();
    let e = ball_errors(&v, &out.values, c, 0.8 * r, 1.2 * r);
    assert!(
        (e.mean_inside - 1.0).abs() < 0.02,
        "mean inside {}",
        e.mean_inside
    );
    assert!(e.mae_outside < 0.02, "MAE outside {}", e.mae_outside);
    assert_eq!(out.residuals.len(), Sirt::default().iterations + 1);
    for (i, w) in out.residuals.windows(2).enumerate() {
        assert!(w[1] < w[0], "iteration {i}: residual {} -> {}", w[0], w[1]);
    }
    assert!(*out.residuals.last().unwrap() < 0.05, "{:?}", out.residuals);
    assert!(out.values.iter().all(|&x| x >= 0.0));
}

#[test]
fn sirt_with_few_directions_beats_filtered_backprojection() {
    // Eight directions: too few for the second derivative's sum over the
    // sphere, enough for the least-squares solution to find the ball.
    let r = 10.0;
    let c = [15.5, 15.5, 15.5];
    let v = ball_volume([32, 32, 32], Affine::identity(), c, r);
    let g = geometry(&v, 8, 48, 48);
    let sino = plane_integrals(&v, 0, &g);
    let fbp = reconstruct(&sino, &Filter::default(), &v.grid()).unwrap();
    let alg = sirt(&sino, &v.grid(), &Sirt::default()).unwrap().values;
    let total = |rec: &[f32]| {
        let e = ball_errors(&v, rec, c, 0.8 * r, 1.2 * r);
        e.mae_inside + e.mae_outside
    };
    assert!(
        total(&alg) < 0.5 * total(&fbp),
        "SIRT {} vs FBP {}",
        total(&alg),
        total(&fbp)
    );
}

#[test]
fn sirt_of_an_encoders_bias_is_zero_once_the_end_trend_is_removed() {
    // A profile with no structure, only a bias and a tilt (what slices that
    // cut no region give a network): the line through the ends is all of it.
    let v = ball_volume([24, 24, 24], Affine::identity(), [11.5, 11.5, 11.5], 6.0);
    let g = geometry(&v, 12, 32, 32);
    let s = g.slices;
    let values: Vec<f32> = (0..g.directions() * s)
        .map(|q| 2.5 + 0.1 * (q % s) as f32 + 0.01 * (q / s) as f32)
        .collect();
    let flat = Sinogram::new(g.clone(), values)
        .unwrap()
        .without_end_trend();
    assert!(
        flat.values.iter().all(|x| x.abs() < 1e-4),
        "{:?}",
        &flat.values[..s]
    );
    let out = sirt(&flat, &v.grid(), &Sirt::default()).unwrap();
    assert!(out.values.iter().all(|x| x.abs() < 1e-4));
    // Plane integrals of a volume already end at 0: nothing changes.
    let sino = plane_integrals(&v, 0, &g);
    for (a, b) in sino.values.iter().zip(&sino.without_end_trend().values) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
}

#[test]
fn sirt_refuses_bad_options_and_non_finite_profiles() {
    let v = ball_volume([16, 16, 16], Affine::identity(), [7.5, 7.5, 7.5], 4.0);
    let g = geometry(&v, 4, 16, 16);
    let sino = plane_integrals(&v, 0, &g);
    for bad in [
        Sirt {
            iterations: 0,
            ..Sirt::default()
        },
        Sirt {
            relaxation: 1.5,
            ..Sirt::default()
        },
        Sirt {
            relaxation: f64::NAN,
            ..Sirt::default()
        },
    ] {
        let err = sirt(&sino, &v.grid(), &bad).unwrap_err().to_string();
        assert!(err.contains("SIRT"), "{err}");
    }
    let mut nan = sino.clone();
    nan.values[3] = f32::NAN;
    let err = sirt(&nan, &v.grid(), &Sirt::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("finite"), "{err}");
}
