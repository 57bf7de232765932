//! Segmentation metrics against trusted references: MONAI (Dice, HD95 with
//! spacing), scikit-learn (AUROC, average precision) and scipy (components),
//! on fixtures made by `fixtures/metrics/make_metric_fixtures.py`.

use std::path::Path;

use tonno_core::io::read_image;
use tonno_core::metrics::{
    auroc, average_precision, components, detection, dice, distance_transform, hd95,
};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metrics")
        .join(name)
}

#[test]
fn metrics_agree_with_monai_sklearn_and_scipy() {
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();
    let truth = read_image(&fixture("truth.nii.gz")).unwrap().volume;
    let heat = read_image(&fixture("heat.nii.gz")).unwrap().volume;
    let t: Vec<bool> = truth.data().iter().map(|&v| v > 0.0).collect();
    let th = want["threshold"].as_f64().unwrap() as f32;
    let p: Vec<bool> = heat.data().iter().map(|&v| v > th).collect();
    let shape = truth.shape();
    let spacing = truth.spacing_mm();
    let close = |a: f64, b: &serde_json::Value, tol: f64, what: &str| {
        let b = b.as_f64().unwrap();
        assert!((a - b).abs() <= tol, "{what}: tonno {a}, reference {b}");
    };
    close(dice(&p, &t), &want["dice"], 1e-6, "Dice (MONAI)");
    close(
        hd95(&p, &t, shape, spacing).unwrap(),
        &want["hd95_mm"],
        1e-6,
        "HD95 mm (MONAI)",
    );
    let scores: Vec<f64> = heat.data().iter().map(|&v| v as f64).collect();
    close(
        auroc(&scores, &t).unwrap(),
        &want["auroc"],
        1e-9,
        "AUROC (sklearn)",
    );
    close(
        average_precision(&scores, &t).unwrap(),
        &want["average_precision"],
        1e-9,
        "AP (sklearn)",
    );
    assert_eq!(
        components(&t, shape).1 as u64,
        want["truth_components"].as_u64().unwrap()
    );
    assert_eq!(
        components(&p, shape).1 as u64,
        want["pred_components"].as_u64().unwrap()
    );
    let d = detection(&p, &t, shape);
    assert_eq!(d.true_positives as u64, want["detected"].as_u64().unwrap());
    assert_eq!(
        d.false_positives as u64,
        want["false_positive_components"].as_u64().unwrap()
    );
}

#[test]
fn distance_transform_is_exact_against_brute_force() {
    let shape = [9, 7, 6];
    let spacing = [1.3, 0.7, 2.1];
    let mask: Vec<bool> = (0..9 * 7 * 6)
        .map(|i| i % 37 == 3 || i % 53 == 11)
        .collect();
    let d = distance_transform(&mask, shape, spacing);
    let pos = |i: usize| {
        [
            (i % 9) as f64 * spacing[0],
            ((i / 9) % 7) as f64 * spacing[1],
            (i / 63) as f64 * spacing[2],
        ]
    };
    for i in 0..mask.len() {
        let best = (0..mask.len())
            .filter(|&j| mask[j])
            .map(|j| {
                let (a, b) = (pos(i), pos(j));
                ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
            })
            .fold(f64::INFINITY, f64::min);
        assert!((d[i] - best).abs() < 1e-9, "voxel {i}: {} vs {best}", d[i]);
    }
}

#[test]
fn edge_cases_of_the_metrics() {
    let shape = [4, 4, 4];
    let empty = vec![false; 64];
    let mut one = empty.clone();
    one[21] = true;
    assert_eq!(dice(&empty, &empty), 1.0);
    assert_eq!(dice(&one, &empty), 0.0);
    assert_eq!(hd95(&empty, &one, shape, [1.0; 3]), None);
    assert_eq!(hd95(&one, &one, shape, [1.0; 3]), Some(0.0));
    let d = detection(&one, &empty, shape);
    assert_eq!((d.false_positives, d.f1()), (1, 0.0));
    assert_eq!(detection(&empty, &empty, shape).f1(), 1.0);
    // Two voxels touching at a corner are one 26-connected component.
    let mut corner = empty.clone();
    corner[0] = true;
    corner[1 + 4 + 16] = true;
    assert_eq!(components(&corner, shape).1, 1);
    assert_eq!(average_precision(&[0.1, 0.9], &[false, true]), Some(1.0));
}
