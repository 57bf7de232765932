//! End-to-end tests of the `tonno` binary on tiny synthetic data.

mod common;

use common::{fixtures, python, synth_training_image, tonno};

#[test]
fn synth_writes_a_decathlon_folder_that_nibabel_reads_with_masks_matching_labels() {
    let dir = tempfile::tempdir().unwrap();
    let summary = tonno(
        dir.path(),
        &[
            "synth", "--out", "d", "--cases", "20", "--size", "32", "--json",
        ],
    )
    .json();
    assert_eq!(summary["cases"], 20);
    assert_eq!(summary["positives"], 10);
    for f in [
        "dataset.json",
        "labels.csv",
        "synth.json",
        "imagesTr",
        "labelsTr",
        "imagesTs",
        "labelsTs",
    ] {
        assert!(dir.path().join("d").join(f).exists(), "{f} missing");
    }
    let checked = python(
        r#"
import csv, glob, json, os
import nibabel as nib, numpy as np
labels = {r["case"]: int(r["label"]) for r in csv.DictReader(open("d/labels.csv"))}
ds = json.load(open("d/dataset.json"))
assert ds["numTraining"] + ds["numTest"] == 20 == len(labels)
n = 0
for split in ("Tr", "Ts"):
    for img_path in sorted(glob.glob(f"d/images{split}/*.nii.gz")):
        case = os.path.basename(img_path)[:-7]
        img = nib.load(img_path); msk = nib.load(f"d/labels{split}/{case}.nii.gz")
        assert img.shape == (32, 32, 32) and msk.shape == (32, 32, 32), img.shape
        assert np.allclose(img.affine, msk.affine)
        assert abs(img.header.get_zooms()[0] - 6.0) < 1e-6
        assert msk.get_data_dtype() == np.uint8
        m = np.asarray(msk.dataobj)
        assert (m.max() > 0) == (labels[case] == 1), case
        assert np.isfinite(img.get_fdata()).all()
        n += 1
print(n)
"#,
        dir.path(),
    );
    if let Some(n) = checked {
        assert_eq!(n.trim(), "20");
    }
}

#[test]
fn synth_is_deterministic_for_a_seed_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    tonno(
        dir.path(),
        &[
            "synth", "--out", "a", "--cases", "3", "--size", "16", "--seed", "7",
        ],
    )
    .ok();
    tonno(
        dir.path(),
        &[
            "synth", "--out", "b", "--cases", "3", "--size", "16", "--seed", "7",
        ],
    )
    .ok();
    for split in ["imagesTr", "labelsTr"] {
        for e in std::fs::read_dir(dir.path().join("a").join(split)).unwrap() {
            let p = e.unwrap().path();
            let q = dir
                .path()
                .join("b")
                .join(split)
                .join(p.file_name().unwrap());
            let (x, y) = (std::fs::read(&p).unwrap(), std::fs::read(&q).unwrap());
            assert_eq!(x, y, "{} differs between runs with one seed", p.display());
        }
    }
    tonno(
        dir.path(),
        &["synth", "--out", "a", "--cases", "3", "--size", "16"],
    )
    .fails_with(&["already exists", "--force"]);
    tonno(
        dir.path(),
        &[
            "synth", "--out", "a", "--cases", "3", "--size", "16", "--force",
        ],
    )
    .ok();
}

#[test]
fn info_agrees_with_nibabel_and_pynrrd_on_the_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap())
            .unwrap();
    for (name, want) in expected.as_object().unwrap() {
        let path = fixtures().join(name);
        let info = tonno(dir.path(), &["info", path.to_str().unwrap(), "--json"]).json();
        assert_eq!(info["shape"], want["shape"], "{name}");
        assert_eq!(info["channels"], want["channels"], "{name}");
        assert_eq!(info["datatype"], want["datatype"], "{name}");
        for r in 0..4 {
            for c in 0..4 {
                let (g, w) = (
                    info["affine"][r][c].as_f64().unwrap(),
                    want["affine"][r][c].as_f64().unwrap(),
                );
                assert!((g - w).abs() < 1e-5, "{name}: affine[{r}][{c}] {g} vs {w}");
            }
        }
        let spacing: Vec<f64> = (0..3)
            .map(|c| {
                (0..3)
                    .map(|r| want["affine"][r][c].as_f64().unwrap().powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        for a in 0..3 {
            assert!(
                (info["spacing_mm"][a].as_f64().unwrap() - spacing[a]).abs() < 1e-5,
                "{name}"
            );
        }
    }
    let text = tonno(
        dir.path(),
        &[
            "info",
            fixtures().join("lps_i16_scaled.nii.gz").to_str().unwrap(),
        ],
    )
    .ok();
    assert!(text.contains("LPS") && text.contains("6 x 5 x 4"), "{text}");
}

#[test]
fn bad_inputs_exit_non_zero_with_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    tonno(dir.path(), &["info", "nope.nii.gz"]).fails_with(&["nope.nii.gz", "No such file"]);
    let gz = std::fs::read(fixtures().join("multichannel_f32.nii.gz")).unwrap();
    std::fs::write(dir.path().join("cut.nii.gz"), &gz[..gz.len() - 30]).unwrap();
    tonno(dir.path(), &["info", "cut.nii.gz"]).fails_with(&["cut.nii.gz", "truncated"]);
    std::fs::write(dir.path().join("scan.dcm"), b"DICM").unwrap();
    tonno(dir.path(), &["info", "scan.dcm"]).fails_with(&["scan.dcm", "not a readable DICOM file"]);
    std::fs::write(dir.path().join("scan.mha"), b"ObjectType = Image").unwrap();
    tonno(dir.path(), &["info", "scan.mha"]).fails_with(&["scan.mha", "unknown image format"]);
    let r = tonno(dir.path(), &["info", "cut.nii.gz"]);
    assert_eq!(r.out.status.code(), Some(2));
    tonno(dir.path(), &["synth", "--out", "x", "--cases", "0"]).fails_with(&["cases"]);
}

#[test]
fn radon_reconstructs_a_synthetic_scan_from_its_own_plane_integrals() {
    let dir = tempfile::tempdir().unwrap();
    let input = synth_training_image(dir.path(), 32);
    let input = input.as_str();
    let coarse = tonno(
        dir.path(),
        &[
            "radon",
            "--input",
            input,
            "--out",
            "r8.nii.gz",
            "--directions",
            "8",
            "--json",
        ],
    )
    .json();
    let fine = tonno(
        dir.path(),
        &[
            "radon",
            "--input",
            input,
            "--out",
            "r.nii.gz",
            "--directions",
            "128",
            "--json",
        ],
    )
    .json();
    let (e8, e128) = (
        coarse["relative_l2_error"].as_f64().unwrap(),
        fine["relative_l2_error"].as_f64().unwrap(),
    );
    // The floor is resolution, not the inverse: trilinear slicing and linear
    // backprojection blur by under a voxel, and a 0.7-voxel Gaussian blur of
    // these noisy, textured scans alone is a 21% relative error (measured with
    // numpy). The ball tests in tonno-core check the inverse to 1%.
    assert!(
        e128 < 0.4 && e128 < 0.6 * e8,
        "relative errors: K=8 {e8}, K=128 {e128}"
    );
    // SIRT makes more of eight directions than the second derivative does.
    let sirt8 = tonno(
        dir.path(),
        &[
            "radon",
            "--input",
            input,
            "--out",
            "s8.nii.gz",
            "--directions",
            "8",
            "--reconstruction",
            "sirt",
            "--json",
        ],
    )
    .json()["relative_l2_error"]
        .as_f64()
        .unwrap();
    assert!(sirt8 < 0.8 * e8, "K=8: SIRT {sirt8}, FBP {e8}");
    tonno(
        dir.path(),
        &[
            "radon",
            "--input",
            input,
            "--out",
            "bad.nii.gz",
            "--reconstruction",
            "sirt",
            "--iterations",
            "0",
        ],
    )
    .fails_with(&["SIRT iterations"]);
    // Same grid and affine as the input.
    let a = tonno(dir.path(), &["info", input, "--json"]).json();
    let b = tonno(dir.path(), &["info", "r.nii.gz", "--json"]).json();
    assert_eq!(a["shape"], b["shape"]);
    assert_eq!(a["affine"], b["affine"]);
    assert_eq!(b["datatype"], "f32");
    tonno(
        dir.path(),
        &["radon", "--input", input, "--out", "r.nii.gz"],
    )
    .fails_with(&["r.nii.gz", "already exists"]);
    tonno(
        dir.path(),
        &[
            "radon",
            "--input",
            input,
            "--out",
            "bad.nii.gz",
            "--cutoff",
            "2",
        ],
    )
    .fails_with(&["cutoff"]);
}

#[test]
fn bench_radon_prints_json_figures() {
    let dir = tempfile::tempdir().unwrap();
    let r = tonno(
        dir.path(),
        &[
            "bench",
            "radon",
            "--size",
            "16",
            "--directions",
            "8",
            "--slices",
            "16",
            "--repeats",
            "1",
        ],
    )
    .json();
    let steps = r["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "slice_extraction",
            "plane_integrals",
            "filter",
            "backprojection"
        ]
    );
    assert!(
        steps
            .iter()
            .all(|s| s["throughput"].as_f64().unwrap() > 0.0)
    );
    // The output is always JSON: a --json flag that did nothing is gone,
    // and the benchmarks refuse it instead of ignoring it.
    for bench in ["radon", "encoder", "segment"] {
        tonno(dir.path(), &["bench", bench, "--json"]).fails_with(&["--json"]);
    }
}

#[test]
fn bench_segment_times_each_method_and_all_together() {
    let dir = tempfile::tempdir().unwrap();
    let r = tonno(
        dir.path(),
        &[
            "bench",
            "segment",
            "--sizes",
            "16",
            "--method",
            "tonno,gradcam2d",
            "--directions",
            "4",
            "--slices",
            "8",
        ],
    )
    .json();
    let rows = r["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|s| s["method"].as_str().unwrap()).collect();
    assert_eq!(names, ["tonno", "gradcam2d", "all"]);
    for row in rows {
        let total = row["seconds"].as_f64().unwrap();
        let parts: f64 = ["slicing_s", "encoder_s", "reconstruction_s"]
            .iter()
            .map(|k| row[*k].as_f64().unwrap())
            .sum();
        assert!(row["encoder_s"].as_f64().unwrap() > 0.0, "{row}");
        assert!(parts <= total * 1.0001 + 1e-6, "{row}");
    }
}

#[test]
fn eval_reports_monai_dice_and_hd95_and_names_missing_heatmaps() {
    let dir = tempfile::tempdir().unwrap();
    let m = fixtures().join("metrics");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(m.join("expected.json")).unwrap()).unwrap();
    std::fs::create_dir_all(dir.path().join("pred")).unwrap();
    std::fs::create_dir_all(dir.path().join("truth")).unwrap();
    std::fs::copy(
        m.join("heat.nii.gz"),
        dir.path().join("pred/c1_tonno.nii.gz"),
    )
    .unwrap();
    std::fs::copy(m.join("truth.nii.gz"), dir.path().join("truth/c1.nii.gz")).unwrap();
    let rows = tonno(
        dir.path(),
        &[
            "eval",
            "--pred",
            "pred",
            "--truth",
            "truth",
            "--threshold",
            "0.5",
            "--json",
        ],
    )
    .json();
    let r = &rows[0];
    assert_eq!(r["method"], "tonno");
    assert_eq!(r["threshold_source"], "given");
    assert!((r["mean_dice"].as_f64().unwrap() - want["dice"].as_f64().unwrap()).abs() < 1e-6);
    assert!((r["mean_hd95_mm"].as_f64().unwrap() - want["hd95_mm"].as_f64().unwrap()).abs() < 1e-6);
    assert!((r["voxel_auroc"].as_f64().unwrap() - want["auroc"].as_f64().unwrap()).abs() < 1e-9);
    // The oracle threshold is labelled as such.
    let text = tonno(dir.path(), &["eval", "--pred", "pred", "--truth", "truth"]).ok();
    assert!(text.contains("oracle"), "{text}");
    // The scan-level answer of `tonno segment`'s predictions.csv is scored
    // against the masks (c1's holds a lesion).
    let eval_json = |csv: &str| {
        std::fs::write(dir.path().join("pred/predictions.csv"), csv).unwrap();
        tonno(
            dir.path(),
            &["eval", "--pred", "pred", "--truth", "truth", "--json"],
        )
    };
    let c = &eval_json("case,score,predicted\nc1,2.5,1\n").json()[0]["classification"];
    assert_eq!(
        (c["cases"].as_u64(), c["positives"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (c["accuracy"].as_f64(), c["sensitivity"].as_f64()),
        (Some(1.0), Some(1.0))
    );
    assert!(c["auroc"].is_null() && c["specificity"].is_null(), "{c}");
    let c = &eval_json("case,score,predicted\nc1,-3,0\n").json()[0]["classification"];
    assert_eq!(c["accuracy"].as_f64(), Some(0.0));
    eval_json("case,score,predicted\nc1,abc,1\n").fails_with(&["predictions.csv", "line 2"]);
    eval_json("case,score,predicted\nc9,1,1\n").fails_with(&["no row for case c1"]);
    std::fs::remove_file(dir.path().join("pred/predictions.csv")).unwrap();
    // A case without a heatmap is an error naming it.
    std::fs::copy(m.join("truth.nii.gz"), dir.path().join("truth/c2.nii.gz")).unwrap();
    tonno(
        dir.path(),
        &[
            "eval", "--pred", "pred", "--truth", "truth", "--method", "tonno",
        ],
    )
    .fails_with(&["c2", "missing"]);
}

#[test]
fn synth_anatomy_implants_lesions_into_given_scans_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    // Healthy "scans": synthetic heads stand in for real ones here.
    tonno(
        dir.path(),
        &[
            "synth",
            "--out",
            "src",
            "--cases",
            "4",
            "--size",
            "24",
            "--test-fraction",
            "0",
        ],
    )
    .ok();
    let summary = tonno(
        dir.path(),
        &[
            "synth",
            "--anatomy",
            "src/imagesTr",
            "--out",
            "d",
            "--cases",
            "12",
            "--size",
            "20",
            "--spacing",
            "4",
            "--radius",
            "5,8",
            "--margin",
            "2",
            "--split-by-source",
            "--json",
        ],
    )
    .json();
    assert_eq!(summary["cases"], 12);
    let synth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("d/synth.json")).unwrap())
            .unwrap();
    assert_eq!(synth["anatomy"].as_array().unwrap().len(), 4);
    for c in synth["cases"].as_array().unwrap() {
        assert!(c["source"].as_str().unwrap().starts_with("case_"), "{c}");
        assert_eq!(
            c["label"].as_bool().unwrap(),
            !c["lesions"].as_array().unwrap().is_empty()
        );
    }
    let csv = std::fs::read_to_string(dir.path().join("d/labels.csv")).unwrap();
    assert!(csv.starts_with("case,label,subject\n"), "{csv}");

    // Bad input: a clear error naming the problem, exit 2, nothing written.
    std::fs::write(dir.path().join("broken.nii.gz"), b"not a gzip stream").unwrap();
    let bad: [(&[&str], &str); 5] = [
        (&["--anatomy", "broken.nii.gz"], "broken.nii.gz"),
        (&["--anatomy", "nowhere"], "nowhere"),
        (&["--anatomy", "src/imagesTr", "--size", "0"], "size"),
        (&["--anatomy", "src/imagesTr", "--spacing", "0"], "spacing"),
        (&["--anatomy", "src/imagesTr", "--spacing=-2"], "spacing"),
    ];
    for (extra, needle) in bad {
        let mut args = vec!["synth", "--out", "bad", "--cases", "4"];
        args.extend_from_slice(extra);
        let r = tonno(dir.path(), &args);
        r.fails_with(&[needle]);
        assert_eq!(r.out.status.code(), Some(2), "{args:?}");
        assert!(
            !dir.path().join("bad").exists(),
            "{args:?} wrote its output folder"
        );
    }
    // --spacing means nothing for synthetic heads.
    tonno(dir.path(), &["synth", "--out", "x", "--spacing", "2"]).fails_with(&["--anatomy"]);
}

#[test]
fn a_reader_that_goes_away_stops_tonno_quietly_and_a_misspelt_simd_kernel_is_refused() {
    use std::process::{Command, Stdio};
    let image = fixtures().join("multichannel_f32.nii.gz");
    let image = image.to_str().unwrap();
    // `tonno info --json x | head`: the read end is closed before tonno
    // writes to it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tonno"))
        .args(["info", "--json", image])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("panicked"),
        "{:?}: {err}",
        out.status
    );

    let out = Command::new(env!("CARGO_BIN_EXE_tonno"))
        .args(["info", image])
        .env("TONNO_SIMD", "avx3")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("TONNO_SIMD") && err.contains("avx3"), "{err}");
}

#[test]
fn info_lists_the_devices_and_torch_runs_from_the_binary_when_built() {
    let dir = tempfile::tempdir().unwrap();
    let rows = tonno(dir.path(), &["info", "--devices", "--json"]).json();
    let row = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["device"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {rows}"))
            .clone()
    };
    assert_eq!(row("cpu")["usable"], true);
    let torch = row("torch");
    assert_eq!(torch["built"], cfg!(feature = "torch"), "{torch}");
    let bench = [
        "bench",
        "encoder",
        "--device",
        "torch",
        "--compare-cpu",
        "--encoders",
        "cnn",
        "--steps",
        "1",
        "--batch",
        "24",
        "--infer-batch",
        "8",
        "--slice-size",
        "32",
    ];
    if cfg!(feature = "torch") {
        // The rpath finds libtorch: the test environment sets no library path.
        assert_eq!(torch["usable"], true, "{torch}");
        let report = tonno(dir.path(), &bench).json();
        let check = &report["encoders"][0]["check_against_cpu"];
        let diff = check["max_abs_logit_diff"].as_f64().unwrap();
        assert!(diff < 1e-4, "{check}");
        assert!(
            report["encoders"][0]["train_slices_per_s"]
                .as_f64()
                .unwrap()
                > 0.0
        );
    } else {
        assert_eq!(torch["usable"], false);
        tonno(dir.path(), &bench).fails_with(&["torch", "--features torch"]);
    }
    tonno(dir.path(), &["info"]).fails_with(&["FILE"]);
}
