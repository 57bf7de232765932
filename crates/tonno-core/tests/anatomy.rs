//! `synth --anatomy`'s library side on a tiny real-like head: lesions stay
//! inside the foreground, masks are where the lesions are, seeds reproduce.

use std::path::Path;

use tonno_core::affine::{Affine, norm, sub};
use tonno_core::io::{DataType, write_image};
use tonno_core::synth::anatomy::{self, AnatomyConfig, CasePlan};
use tonno_core::volume::Volume;

/// Semi-axes (mm) of the fake head's foreground, centred on the world origin.
const SEMI: [f64; 3] = [30.0, 36.0, 28.0];

/// A 2 mm head: an ellipsoid of "brain" with a darker core ("ventricles")
/// and a smooth texture, in air. Written as NIfTI to `dir/name.nii.gz`.
fn write_head(dir: &Path, name: &str, wobble: f64) -> std::path::PathBuf {
    let n = 40;
    let h = 2.0;
    let o = -(n as f64 - 1.0) / 2.0 * h;
    let affine = Affine::from_diagonal([h; 3], [o; 3]);
    let v = Volume::from_fn([n; 3], affine, |i, j, k| {
        let p = affine.apply([i as f64, j as f64, k as f64]);
        let r = (0..3).map(|a| (p[a] / SEMI[a]).powi(2)).sum::<f64>().sqrt();
        if r > 1.0 {
            return 0.0;
        }
        let core = if r < 0.3 { 0.4 } else { 1.0 };
        (core * (100.0 + 10.0 * (p[0] * 0.3 + wobble).sin() * (p[1] * 0.2).cos())) as f32
    })
    .unwrap();
    let path = dir.join(format!("{name}.nii.gz"));
    write_image(&path, &v, DataType::F32, None, false).unwrap();
    path
}

fn config() -> AnatomyConfig {
    AnatomyConfig {
        size: 24,
        spacing_mm: 3.0,
        cases: 8,
        radius_mm: (5.0, 8.0),
        margin_mm: 2.0,
        ..AnatomyConfig::default()
    }
}

/// No rotation, scale or shift (the output grid sees the head where it
/// was), and a positive case of the first source.
fn untransformed_positive() -> (AnatomyConfig, CasePlan) {
    let cfg = AnatomyConfig {
        max_rotation_deg: 0.0,
        scale: (1.0, 1.0),
        max_shift_mm: 0.0,
        ..config()
    };
    let plan = CasePlan {
        source: 0,
        positive: true,
        test: false,
    };
    (cfg, plan)
}

#[test]
fn lesions_lie_inside_the_foreground_and_masks_are_where_the_lesions_are() {
    let dir = tempfile::tempdir().unwrap();
    write_head(dir.path(), "head", 0.0);
    let sources = anatomy::load_sources(dir.path()).unwrap();
    assert_eq!(sources.len(), 1);
    let (cfg, plan) = untransformed_positive();
    for index in 0..6 {
        let case = anatomy::generate_case(&cfg, &sources, index, plan).unwrap();
        assert!(!case.lesions.is_empty());
        let mask = case.mask.data();
        assert!(mask.iter().any(|&m| m > 0.0));
        let [n, _, _] = case.mask.shape();
        for (idx, _) in mask.iter().enumerate().filter(|(_, m)| **m > 0.0) {
            let p = case.mask.voxel_to_world([
                (idx % n) as f64,
                ((idx / n) % n) as f64,
                (idx / (n * n)) as f64,
            ]);
            // Inside the head's ellipsoid, and near a lesion's centre.
            let r = (0..3).map(|a| (p[a] / SEMI[a]).powi(2)).sum::<f64>().sqrt();
            assert!(
                r < 1.0,
                "case {index}: mask voxel at {p:?} outside the head"
            );
            let near = case
                .lesions
                .iter()
                .any(|l| norm(sub(p, l.center_mm)) <= l.radius_mm * 1.3 * 1.45 + 1e-9);
            assert!(
                near,
                "case {index}: mask voxel at {p:?} far from every lesion"
            );
        }
        for l in &case.lesions {
            // The voxel nearest each lesion's centre is in the mask.
            let v = case
                .mask
                .world_to_voxel(l.center_mm)
                .map(|x| x.round() as usize);
            assert_eq!(
                case.mask.get(v[0], v[1], v[2], 0),
                1.0,
                "case {index}: {l:?}"
            );
        }
        // The lesion changes the image where the mask is, and nothing far
        // from it: without noise, bias and gamma, the positive and the
        // lesion-free draw of the same case differ by their gain alone outside.
        let clean = AnatomyConfig {
            noise: 0.0,
            bias: 0.0,
            gamma: 0.0,
            ..cfg.clone()
        };
        let pos = anatomy::generate_case(&clean, &sources, index, plan).unwrap();
        let neg = anatomy::generate_case(
            &clean,
            &sources,
            index,
            CasePlan {
                positive: false,
                ..plan
            },
        )
        .unwrap();
        assert!(neg.lesions.is_empty() && neg.mask.data().iter().all(|&m| m == 0.0));
        let ratio: Vec<Option<f64>> = pos
            .image
            .data()
            .iter()
            .zip(neg.image.data())
            .map(|(&a, &b)| (b > 1e-3).then(|| a as f64 / b as f64))
            .collect();
        let (mut far, mut inside) = (Vec::new(), Vec::new());
        for (idx, r) in ratio.iter().enumerate() {
            let Some(r) = *r else { continue };
            let p = pos.mask.voxel_to_world([
                (idx % n) as f64,
                ((idx / n) % n) as f64,
                (idx / (n * n)) as f64,
            ]);
            let distance = pos
                .lesions
                .iter()
                .map(|l| norm(sub(p, l.center_mm)) / l.radius_mm)
                .fold(f64::INFINITY, f64::min);
            if distance > 3.5 {
                far.push(r);
            } else if pos.mask.data()[idx] > 0.0 {
                inside.push(r);
            }
        }
        let gain = far[0];
        assert!(
            far.iter().all(|r| (r / gain - 1.0).abs() < 1e-4),
            "case {index}: far voxels changed"
        );
        let change =
            inside.iter().map(|r| (r / gain - 1.0).abs()).sum::<f64>() / inside.len() as f64;
        assert!(
            change > 0.1,
            "case {index}: lesion voxels changed by {change} on average"
        );
    }
}

#[test]
fn same_seed_same_voxels_other_seed_differs() {
    let dir = tempfile::tempdir().unwrap();
    write_head(dir.path(), "head", 0.0);
    let sources = anatomy::load_sources(dir.path()).unwrap();
    let plan = CasePlan {
        source: 0,
        positive: true,
        test: false,
    };
    let a = anatomy::generate_case(&config(), &sources, 3, plan).unwrap();
    let b = anatomy::generate_case(&config(), &sources, 3, plan).unwrap();
    assert_eq!(a.image.data(), b.image.data());
    assert_eq!(a.mask.data(), b.mask.data());
    let c = anatomy::generate_case(
        &AnatomyConfig {
            seed: 1,
            ..config()
        },
        &sources,
        3,
        plan,
    )
    .unwrap();
    assert_ne!(a.image.data(), c.image.data());
}

#[test]
fn split_by_source_never_puts_a_source_in_both_splits() {
    let dir = tempfile::tempdir().unwrap();
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        write_head(dir.path(), name, i as f64);
    }
    let sources = anatomy::load_sources(dir.path()).unwrap();
    let out = dir.path().join("out");
    let cfg = AnatomyConfig {
        cases: 16,
        split_by_source: true,
        ..config()
    };
    let records = anatomy::write_dataset(&out, &cfg, &sources, false, &|_, _| {}).unwrap();
    let synth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("synth.json")).unwrap()).unwrap();
    let cases = synth["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 16);
    for s in ["a", "b", "c", "d"] {
        let splits: std::collections::BTreeSet<&str> = cases
            .iter()
            .filter(|c| c["source"] == s)
            .map(|c| c["split"].as_str().unwrap())
            .collect();
        assert_eq!(splits.len(), 1, "source {s} in {splits:?}");
    }
    assert!(
        records.iter().any(|r| r.split == "test") && records.iter().any(|r| r.split == "train")
    );
    // labels.csv names each case's subject, so that training can hold out subjects.
    let csv = std::fs::read_to_string(out.join("labels.csv")).unwrap();
    assert!(csv.starts_with("case,label,subject\n"), "{csv}");
}

#[test]
fn a_scan_without_foreground_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let flat = Volume::filled([16; 3], Affine::identity(), 5.0).unwrap();
    let path = dir.path().join("flat.nii.gz");
    write_image(&path, &flat, DataType::F32, None, false).unwrap();
    let e = anatomy::load_sources(&path).unwrap_err().to_string();
    assert!(
        e.contains("flat.nii.gz") && e.contains("no foreground"),
        "{e}"
    );
    let e = anatomy::load_sources(&dir.path().join("missing.nii.gz"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.nii.gz"), "{e}");
    for bad in [
        AnatomyConfig {
            spacing_mm: 0.0,
            ..config()
        },
        AnatomyConfig {
            spacing_mm: -1.0,
            ..config()
        },
        AnatomyConfig {
            size: 0,
            ..config()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

/// Writes a mask of the fake head's `x > 0` half (a "hemisphere") on its own
/// grid: 1.5 mm voxels, unlike the head's 2 mm, since masks are matched in
/// world coordinates.
fn write_half_mask(dir: &Path, name: &str) -> std::path::PathBuf {
    let (n, h) = (56, 1.5);
    let o = -(n as f64 - 1.0) / 2.0 * h;
    let affine = Affine::from_diagonal([h; 3], [o; 3]);
    let v = Volume::from_fn([n; 3], affine, |i, j, k| {
        let p = affine.apply([i as f64, j as f64, k as f64]);
        f32::from(p[0] > 0.0)
    })
    .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{name}.nii.gz"));
    write_image(&path, &v, DataType::U8, None, false).unwrap();
    path
}

#[test]
fn a_lesion_mask_keeps_every_lesion_inside_it() {
    let dir = tempfile::tempdir().unwrap();
    let scans = dir.path().join("scans");
    std::fs::create_dir_all(&scans).unwrap();
    write_head(&scans, "head", 0.0);
    let masks = dir.path().join("masks");
    write_half_mask(&masks, "head");
    let mut sources = anatomy::load_sources(&scans).unwrap();
    anatomy::attach_masks(&mut sources, &masks).unwrap();
    assert_eq!(
        sources[0].region_path.as_deref(),
        Some(&*masks.join("head.nii.gz"))
    );
    let (cfg, plan) = untransformed_positive();
    let mut without_mask = anatomy::load_sources(&scans).unwrap();
    let mut left_without_mask = 0;
    for index in 0..12 {
        let case = anatomy::generate_case(&cfg, &sources, index, plan).unwrap();
        for l in &case.lesions {
            // The whole lesion (its centre at least its radius from the cut).
            assert!(
                l.center_mm[0] >= l.radius_mm,
                "case {index}: lesion at {:?} (radius {:.1} mm) crosses the mask's edge x = 0",
                l.center_mm,
                l.radius_mm
            );
        }
        let free = anatomy::generate_case(&cfg, &without_mask, index, plan).unwrap();
        left_without_mask += free.lesions.iter().filter(|l| l.center_mm[0] < 0.0).count();
    }
    // Without the mask the same draws use both halves, so the test can fail.
    assert!(left_without_mask > 0);

    // A mask that names no scan, and one that covers none of its scan, are refused by name.
    write_half_mask(&masks, "other");
    let e = anatomy::attach_masks(&mut without_mask, &masks)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("other.nii.gz") && e.contains("no anatomy scan"),
        "{e}"
    );
    std::fs::remove_file(masks.join("other.nii.gz")).unwrap();
    let empty = Volume::filled([8; 3], Affine::identity(), 0.0).unwrap();
    write_image(&masks.join("head.nii.gz"), &empty, DataType::U8, None, true).unwrap();
    let e = anatomy::attach_masks(&mut without_mask, &masks)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("head.nii.gz") && e.contains("covers none"),
        "{e}"
    );
    let e = anatomy::attach_masks(&mut without_mask, &dir.path().join("nowhere"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nowhere"), "{e}");
}
