//! The segmentation pipeline checked against the truth: with the exact
//! Radon "encoder" (the slice sum), ToNNO is the tomography core's
//! reconstruction, and heatmaps land where the object is in world space
//! whatever the affine.

use std::sync::Arc;

use tonno_core::affine::{Affine, Vec3};
use tonno_core::geometry::{Ball, TomoGeometry};
use tonno_core::radon::{
    Filter, Padding, Reconstruction, Sirt, plane_integrals, reconstruct_volume, sirt,
};
use tonno_core::sampler::PreparedVolume;
use tonno_core::volume::Volume;
use tonno_ml::methods::{Method, SegmentConfig, SliceModel, segment};

fn prepared(v: &Volume) -> PreparedVolume {
    PreparedVolume::from_parts("x", v.clone(), Ball::covering(v), 0.0, None)
}

/// A bright blob of radius `r` mm at world `c` on a dim textured background.
fn blob(shape: [usize; 3], affine: Affine, c: Vec3, r: f64) -> Volume {
    Volume::from_fn(shape, affine, |i, j, k| {
        let w = affine.apply([i as f64, j as f64, k as f64]);
        let d = ((w[0] - c[0]).powi(2) + (w[1] - c[1]).powi(2) + (w[2] - c[2]).powi(2)).sqrt();
        let texture = 0.1 * ((i * 7 + j * 3 + k * 5) % 4) as f32;
        (if d < r { 2.0 } else { 0.2 }) + texture
    })
    .unwrap()
}

#[test]
fn sum_encoder_tonno_equals_the_radon_reconstruction() {
    let v = blob(
        [20, 18, 22],
        Affine::from_diagonal([1.5, 1.2, 1.0], [0.0; 3]),
        [14.0, 10.0, 11.0],
        5.0,
    );
    let filter = Filter {
        padding: Padding::Zero,
        ..Filter::default()
    };
    // Also with rotated slice frames (`--rotation`): the map must follow
    // the geometry it was asked for, not the default one.
    let mut maps_by_angle = Vec::new();
    for angle in [0.0, 0.5] {
        let config = SegmentConfig {
            directions: 24,
            slices: 40,
            pixels: 40,
            filter,
            in_plane_angle: angle,
            ..SegmentConfig::default()
        };
        let (maps, _) =
            segment(&prepared(&v), &SliceModel::Sum, &[Method::Tonno], &config).unwrap();
        let g = Arc::new(TomoGeometry::fibonacci(Ball::covering(&v), 24, 40, 40, angle).unwrap());
        let want = reconstruct_volume(&v, 0, &g, &filter).unwrap();
        let scale = want.data().iter().fold(0.0f32, |a, b| a.max(b.abs()));
        for (a, b) in maps[0].volume.data().iter().zip(want.data()) {
            assert!((a - b).abs() < 1e-4 * scale, "angle {angle}: {a} vs {b}");
        }
        maps_by_angle.push((maps[0].volume.data().to_vec(), scale));
    }
    let (a, b) = (&maps_by_angle[0], &maps_by_angle[1]);
    let largest =
        a.0.iter()
            .zip(&b.0)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        largest > 1e-3 * a.1,
        "rotating the frames changed nothing ({largest})"
    );
}

#[test]
fn sum_encoder_tonno_with_sirt_equals_sirt_of_the_plane_integrals() {
    let v = blob(
        [20, 18, 22],
        Affine::from_diagonal([1.5, 1.2, 1.0], [0.0; 3]),
        [14.0, 10.0, 11.0],
        5.0,
    );
    let options = Sirt {
        iterations: 20,
        ..Sirt::default()
    };
    let config = SegmentConfig {
        directions: 16,
        slices: 40,
        pixels: 40,
        reconstruction: Reconstruction::Sirt(options),
        ..SegmentConfig::default()
    };
    let (maps, _) = segment(&prepared(&v), &SliceModel::Sum, &[Method::Tonno], &config).unwrap();
    let g = Arc::new(TomoGeometry::fibonacci(Ball::covering(&v), 16, 40, 40, 0.0).unwrap());
    let sino = plane_integrals(&v, 0, &g).without_end_trend();
    let want = sirt(&sino, &v.grid(), &options).unwrap().values;
    let scale = want.iter().fold(0.0f32, |a, b| a.max(b.abs()));
    assert!(scale > 0.0);
    for (a, b) in maps[0].volume.data().iter().zip(&want) {
        assert!((a - b).abs() < 1e-4 * scale, "{a} vs {b}");
    }
}

#[test]
fn sum_encoder_refuses_cam_methods() {
    let v = blob([8, 8, 8], Affine::identity(), [4.0; 3], 2.0);
    let e = segment(
        &prepared(&v),
        &SliceModel::Sum,
        &[Method::AveragedGradcam],
        &SegmentConfig::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("needs a trained network"), "{e}");
}

#[test]
fn heatmap_peaks_at_the_objects_world_position_for_flipped_and_oblique_affines() {
    let c = [12.0, -7.0, 20.0];
    let th = 0.5f64;
    let affines = [
        Affine::from_diagonal([2.0, 2.0, 2.0], [-18.0, -38.0, -10.0]),
        // x and z flipped, anisotropic (LPS-like storage).
        Affine::from_diagonal([-1.6, 2.2, -2.5], [40.0, -40.0, 55.0]),
        // Oblique: rotated 0.5 rad about z.
        Affine::from_columns(
            [
                [2.0 * th.cos(), 2.0 * th.sin(), 0.0],
                [-2.0 * th.sin(), 2.0 * th.cos(), 0.0],
                [0.0, 0.0, 2.0],
            ],
            [0.0, -40.0, -10.0],
        ),
    ];
    for a in affines {
        let v = blob([30, 30, 30], a, c, 5.0);
        let config = SegmentConfig {
            directions: 48,
            slices: 48,
            pixels: 48,
            ..SegmentConfig::default()
        };
        let (maps, _) =
            segment(&prepared(&v), &SliceModel::Sum, &[Method::Tonno], &config).unwrap();
        let h = &maps[0].volume;
        let (idx, _) = h
            .data()
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b });
        let [nx, ny, _] = h.shape();
        let vox = [
            (idx % nx) as f64,
            ((idx / nx) % ny) as f64,
            (idx / (nx * ny)) as f64,
        ];
        let w = h.voxel_to_world(vox);
        let dist = ((w[0] - c[0]).powi(2) + (w[1] - c[1]).powi(2) + (w[2] - c[2]).powi(2)).sqrt();
        assert!(dist < 5.0, "peak at {w:?}, object at {c:?} (affine\n{a})");
    }
}
