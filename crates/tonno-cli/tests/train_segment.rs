//! `tonno train` and `tonno segment` end to end on tiny synthetic data.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{synth_training_image, tonno};

const CONFIG: &str = r#"
cnn_width = 8
batch_size = 32
epochs = 4
steps_per_epoch = 12
warmup_steps = 8
lr = 0.003
val_directions = 6
val_slices = 8
seed = 5

[objective]
kind = "mil"
bag = 8
r = 4.0

[sampling]
slice_size = 32
"#;

fn setup(dir: &Path) {
    tonno(
        dir,
        &[
            "synth",
            "--out",
            "d",
            "--cases",
            "24",
            "--size",
            "24",
            "--contrast",
            "0.5,0.8",
            "--seed",
            "2",
        ],
    )
    .ok();
    std::fs::write(dir.join("train.toml"), CONFIG).unwrap();
}

/// [`setup`], then a run trained on it in `dir/run`.
fn setup_trained(dir: &Path) {
    setup(dir);
    tonno(
        dir,
        &[
            "train",
            "--data",
            "d",
            "--config",
            "train.toml",
            "--out",
            "run",
        ],
    )
    .ok();
}

/// `tonno segment` of the trained run on `input` into `out` at 4 directions
/// x 8 slices, with `extra` flags.
fn segment_small(dir: &Path, input: &str, out: &str, extra: &[&str]) -> common::Run {
    tonno(
        dir,
        &[
            &[
                "segment",
                "--model",
                "run",
                "--input",
                input,
                "--out",
                out,
                "--directions",
                "4",
                "--slices",
                "8",
            ][..],
            extra,
        ]
        .concat(),
    )
}

/// Starts tonno in `dir` without waiting for it (to kill it mid-run).
fn spawn_tonno(dir: &Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_tonno"))
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn killed_training_resumes_from_its_last_checkpoint_and_matches_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let args = ["train", "--data", "d", "--config", "train.toml"];
    // Uninterrupted reference.
    tonno(dir.path(), &[&args[..], &["--out", "full"]].concat()).ok();
    // Start, kill -9 once the first epoch's checkpoint exists, resume.
    let mut child = spawn_tonno(dir.path(), &[&args[..], &["--out", "cut"]].concat());
    let state = dir.path().join("cut/checkpoint.json");
    let t0 = Instant::now();
    while !state.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no checkpoint after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = metrics(&dir.path().join("cut")).len();
    assert!(done < 4, "killed too late: {done} epochs already done");
    tonno(
        dir.path(),
        &["train", "--data", "d", "--out", "cut", "--resume"],
    )
    .ok();
    let (full, cut) = (
        metrics(&dir.path().join("full")),
        metrics(&dir.path().join("cut")),
    );
    assert_eq!(
        cut.iter()
            .map(|m| m["epoch"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    for (a, b) in full.iter().zip(&cut) {
        assert_eq!(a["train_loss"], b["train_loss"], "epoch {}", a["epoch"]);
        assert_eq!(
            a["val_auroc_max"], b["val_auroc_max"],
            "epoch {}",
            a["epoch"]
        );
    }
    // The weight average resumed too: the best model's validation logits,
    // hence its decision threshold, are the uninterrupted run's.
    let decision = |run: &str| {
        let d: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(run).join("decision.json")).unwrap(),
        )
        .unwrap();
        d["threshold"].as_f64().unwrap()
    };
    assert_eq!(decision("full"), decision("cut"));
    let log = std::fs::read_to_string(dir.path().join("cut/train.log")).unwrap();
    assert!(log.contains("resumed after epoch"), "{log}");
    // An existing run is not replaced without --force.
    tonno(dir.path(), &[&args[..], &["--out", "full"]].concat()).fails_with(&[
        "already exists",
        "--resume",
        "--force",
    ]);
    // A resumed run keeps its stored settings: a flag that would be ignored
    // is refused, and so are other labels than it was trained on.
    let resume = ["train", "--data", "d", "--out", "full", "--resume"];
    for extra in [["--epochs", "9"], ["--device", "cpu"], ["--seed", "3"]] {
        tonno(dir.path(), &[&resume[..], &extra[..]].concat())
            .fails_with(&["cannot be used with", extra[0]]);
    }
    tonno(
        dir.path(),
        &[&resume[..], &["--labels-from-masks"]].concat(),
    )
    .fails_with(&["trained with labels", "resume with the same labels"]);
    // A history or a state that cannot be read stops the resume instead of
    // restarting from nothing.
    let run = dir.path().join("full");
    let history = std::fs::read_to_string(run.join("metrics.json")).unwrap();
    std::fs::write(run.join("metrics.json"), "[{\"epoch\": 1,").unwrap();
    tonno(dir.path(), &resume).fails_with(&["metrics.json", "corrupt"]);
    std::fs::write(run.join("metrics.json"), &history).unwrap();
    std::fs::rename(run.join("checkpoint.json"), run.join("state.bak")).unwrap();
    std::fs::create_dir(run.join("checkpoint.json")).unwrap();
    tonno(dir.path(), &resume).fails_with(&["checkpoint.json"]);
    std::fs::remove_dir(run.join("checkpoint.json")).unwrap();
    std::fs::rename(run.join("state.bak"), run.join("checkpoint.json")).unwrap();
    // Resuming a finished run changes nothing.
    tonno(dir.path(), &resume).ok();
    assert_eq!(metrics(&run), full);
}

#[test]
fn segment_writes_every_method_on_the_inputs_grid_and_reports_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    setup_trained(dir.path());
    // A folder of inputs with one corrupt file among good ones.
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir.path().join("d/imagesTs"))
        .unwrap()
        .take(2)
    {
        let p = e.unwrap().path();
        names.push(tonno_core_case(&p));
        std::fs::copy(&p, inputs.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(inputs.join("broken.nii.gz"), b"\x1f\x8bnot really gzip").unwrap();
    let r = tonno(
        dir.path(),
        &[
            "segment",
            "--model",
            "run",
            "--input",
            "in",
            "--out",
            "seg",
            "--method",
            "all",
            "--directions",
            "12",
            "--slices",
            "16",
            "--threshold",
            "0",
            "--json",
        ],
    );
    assert_eq!(
        r.out.status.code(),
        Some(1),
        "a bad file makes the exit non-zero\n{}",
        r.stderr()
    );
    assert!(r.stderr().contains("broken.nii.gz"), "{}", r.stderr());
    let summary: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    assert_eq!(summary["failures"], 1);
    for case in &names {
        let input = dir.path().join("d/imagesTs").join(format!("{case}.nii.gz"));
        let want = tonno(dir.path(), &["info", input.to_str().unwrap(), "--json"]).json();
        for m in [
            "tonno",
            "gradcam2d",
            "layercam2d",
            "averaged-gradcam",
            "averaged-layercam",
            "tomographic-gradcam",
            "tomographic-layercam",
        ] {
            let heat = dir.path().join(format!("seg/{case}_{m}.nii.gz"));
            let got = tonno(dir.path(), &["info", heat.to_str().unwrap(), "--json"]).json();
            assert_eq!(got["shape"], want["shape"], "{m}");
            assert_eq!(got["affine"], want["affine"], "{m}");
            assert_eq!(got["datatype"], "f32");
            let mask = dir.path().join(format!("seg/{case}_{m}_mask.nii.gz"));
            assert_eq!(
                tonno(dir.path(), &["info", mask.to_str().unwrap(), "--json"]).json()["datatype"],
                "u8"
            );
        }
    }
    // Every scored scan is in predictions.csv, with the run's threshold.
    let decision: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("run/decision.json")).unwrap(),
    )
    .unwrap();
    let threshold = decision["threshold"].as_f64().unwrap();
    let csv = std::fs::read_to_string(dir.path().join("seg/predictions.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("case,score,predicted"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), names.len(), "{csv}");
    for (row, case) in summary["cases"].as_array().unwrap().iter().zip(&rows) {
        let score: f64 = case[1].parse().unwrap();
        assert_eq!(row["case"].as_str(), Some(case[0]));
        assert!((row["score"].as_f64().unwrap() - score).abs() < 1e-5);
        assert_eq!(case[2], if score > threshold { "1" } else { "0" }, "{csv}");
    }
    // Existing outputs are not replaced without --force.
    let one = dir
        .path()
        .join("d/imagesTs")
        .join(format!("{}.nii.gz", names[0]));
    tonno(
        dir.path(),
        &[
            "segment",
            "--model",
            "run",
            "--input",
            one.to_str().unwrap(),
            "--out",
            "seg",
            "--directions",
            "4",
            "--slices",
            "8",
        ],
    )
    .fails_with(&["already exists"]);
    // A scan with other channels than the training data's: a clear error
    // naming it, not a panic in the encoder.
    let two = dir.path().join("two_channels.nii.gz");
    let n = 24 * 24 * 24;
    let data: Vec<f32> = (0..2 * n).map(|i| ((i * 7919) % 101) as f32).collect();
    let volume = tonno_core::volume::Volume::new(
        data,
        [24, 24, 24],
        2,
        tonno_core::affine::Affine::identity(),
    )
    .unwrap();
    tonno_core::io::write_image(&two, &volume, tonno_core::io::DataType::F32, None, false).unwrap();
    let run = tonno(
        dir.path(),
        &[
            "segment",
            "--model",
            "run",
            "--input",
            two.to_str().unwrap(),
            "--out",
            "seg_two",
            "--directions",
            "4",
            "--slices",
            "8",
        ],
    );
    run.fails_with(&["two_channels.nii.gz", "has 2 channel(s)", "trained on 1"]);
}

fn intensity_max(dir: &Path, file: &str) -> f64 {
    tonno(dir, &["info", file, "--json"]).json()["intensity_max"]
        .as_f64()
        .unwrap()
}

#[test]
fn the_gate_empties_the_masks_of_scans_called_negative_and_needs_a_stored_threshold() {
    let dir = tempfile::tempdir().unwrap();
    setup_trained(dir.path());
    let input = std::fs::read_dir(dir.path().join("d/imagesTs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let case = tonno_core_case(&input);
    let segment =
        |out: &str, extra: &[&str]| segment_small(dir.path(), input.to_str().unwrap(), out, extra);
    // A threshold above any score calls the scan negative: an empty mask,
    // while its heatmap is kept as it is.
    let path = dir.path().join("run/decision.json");
    let mut d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    d["threshold"] = serde_json::json!(1e30);
    std::fs::write(&path, d.to_string()).unwrap();
    segment("gated", &["--threshold", "-1e30"]).ok();
    let mask = format!("gated/{case}_tonno_mask.nii.gz");
    assert_eq!(intensity_max(dir.path(), &mask), 0.0);
    let csv = std::fs::read_to_string(dir.path().join("gated/predictions.csv")).unwrap();
    assert!(csv.lines().nth(1).unwrap().ends_with(",0"), "{csv}");
    // --no-gate keeps the mask (every voxel is above -1e30).
    segment("open", &["--no-gate", "--threshold", "-1e30"]).ok();
    let mask = format!("open/{case}_tonno_mask.nii.gz");
    assert_eq!(intensity_max(dir.path(), &mask), 1.0);
    // --threshold auto: each heatmap's own threshold, never an empty mask
    // when the heatmap has a peak; bad values are refused by name.
    segment(
        "auto",
        &["--no-gate", "--threshold", "auto", "--method", "all"],
    )
    .ok();
    let mut peaked = 0;
    for m in [
        "tonno",
        "averaged-gradcam",
        "averaged-layercam",
        "tomographic-gradcam",
    ] {
        let heat = format!("auto/{case}_{m}.nii.gz");
        let info = tonno(dir.path(), &["info", &heat, "--json"]).json();
        let mask = format!("auto/{case}_{m}_mask.nii.gz");
        // A CAM can be 0 everywhere (nothing survives its ReLU): no peak, no mask.
        if info["intensity_max"].as_f64() > info["intensity_min"].as_f64() {
            assert_eq!(intensity_max(dir.path(), &mask), 1.0, "{m}");
            peaked += 1;
        }
    }
    assert!(peaked > 0, "no heatmap with a peak");
    segment("bad", &["--threshold", "foo"]).fails_with(&["foo", "neither auto nor"]);
    segment("bad", &["--threshold", "auto", "--auto-fraction", "1.5"])
        .fails_with(&["--auto-fraction"]);
    // predictions.csv is not replaced without --force.
    std::fs::remove_file(dir.path().join(format!("open/{case}_tonno.nii.gz"))).unwrap();
    segment("open", &["--no-gate"]).fails_with(&["predictions.csv", "--force"]);
    // Without a stored threshold the gate refuses to guess; --no-gate still
    // scores the scan, with no predicted label.
    std::fs::remove_file(&path).unwrap();
    segment("none", &[]).fails_with(&["decision.json", "--no-gate"]);
    segment("none", &["--no-gate"]).ok();
    let csv = std::fs::read_to_string(dir.path().join("none/predictions.csv")).unwrap();
    let row = csv.lines().nth(1).unwrap();
    assert!(
        row.starts_with(&format!("{case},")) && row.ends_with(','),
        "{csv}"
    );
}

fn tonno_core_case(p: &Path) -> String {
    let n = p.file_name().unwrap().to_string_lossy().into_owned();
    n.trim_end_matches(".nii.gz").to_string()
}

#[test]
fn segment_with_the_sum_encoder_reconstructs_the_input_like_radon() {
    let dir = tempfile::tempdir().unwrap();
    let input = synth_training_image(dir.path(), 20);
    let input = input.as_str();
    tonno(
        dir.path(),
        &[
            "segment",
            "--encoder",
            "sum",
            "--input",
            input,
            "--out",
            "seg",
            "--directions",
            "32",
            "--slices",
            "40",
        ],
    )
    .ok();
    tonno(
        dir.path(),
        &[
            "radon",
            "--input",
            input,
            "--out",
            "radon.nii.gz",
            "--directions",
            "32",
            "--slices",
            "40",
        ],
    )
    .ok();
    let case = tonno_core_case(Path::new(input));
    let a = tonno_core::io::read_image(&dir.path().join(format!("seg/{case}_tonno.nii.gz")))
        .unwrap()
        .volume;
    let b = tonno_core::io::read_image(&dir.path().join("radon.nii.gz"))
        .unwrap()
        .volume;
    let scale = b.data().iter().fold(0.0f32, |m, x| m.max(x.abs()));
    for (x, y) in a.data().iter().zip(b.data()) {
        assert!((x - y).abs() < 1e-4 * scale, "{x} vs {y}");
    }
    tonno(
        dir.path(),
        &[
            "segment",
            "--encoder",
            "sum",
            "--input",
            input,
            "--out",
            "seg2",
            "--method",
            "gradcam2d",
        ],
    )
    .fails_with(&["needs a trained network"]);
}

/// The files of a folder that a reader would see (not the hidden temporary
/// files of an interrupted write), by name.
fn visible_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_killed_segment_leaves_only_whole_files_and_skip_existing_finishes_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    setup_trained(dir.path());
    let args = [
        "segment",
        "--model",
        "run",
        "--input",
        "d/imagesTs",
        "--method",
        "tonno,gradcam2d",
        "--threshold",
        "auto",
        "--directions",
        "16",
    ];
    tonno(dir.path(), &[&args[..], &["--out", "full"]].concat()).ok();
    let full = visible_files(&dir.path().join("full"));
    // kill -9 as soon as the first file is there.
    let cut = dir.path().join("cut");
    let mut child = spawn_tonno(dir.path(), &[&args[..], &["--out", "cut"]].concat());
    let t0 = Instant::now();
    while !cut.is_dir() || visible_files(&cut).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no output");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let left = visible_files(&cut);
    assert!(
        left.len() < full.len(),
        "killed too late: {} of {} files already written",
        left.len(),
        full.len()
    );
    // Every file that is there is complete: it reads, and it is the file
    // the uninterrupted run wrote.
    for (name, bytes) in &left {
        tonno_core::io::read_image(&cut.join(name))
            .unwrap_or_else(|e| panic!("{name} is not a whole image: {e}"));
        let reference = &full.iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(bytes, reference, "{name}");
    }
    // A rerun does not overwrite them unasked, and --skip-existing finishes
    // the folder as the uninterrupted run left it.
    tonno(dir.path(), &[&args[..], &["--out", "cut"]].concat()).fails_with(&[
        "already exists",
        "--skip-existing",
        "--force",
    ]);
    let r = tonno(
        dir.path(),
        &[&args[..], &["--out", "cut", "--skip-existing"]].concat(),
    );
    r.ok();
    let done = visible_files(&cut);
    assert_eq!(
        done.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        full.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    assert!(
        done == full,
        "the continued folder differs from the uninterrupted one"
    );
    // Run once more: every case is kept, and said so.
    let again = tonno(
        dir.path(),
        &[&args[..], &["--out", "cut", "--skip-existing"]].concat(),
    );
    assert!(
        again.stdout().contains("already there"),
        "{}",
        again.stdout()
    );
    assert!(visible_files(&cut) == full);
}

#[test]
fn shards_segment_each_case_once_and_eval_reads_their_answers_together() {
    let dir = tempfile::tempdir().unwrap();
    setup_trained(dir.path());
    let d = dir.path();
    let cases = std::fs::read_dir(d.join("d/imagesTs")).unwrap().count();
    // More parts than cases: some parts get none and say so with an empty
    // answer file.
    let parts = cases + 2;
    let segment = |out: &str, extra: &[&str]| segment_small(d, "d/imagesTs", out, extra);
    segment("whole", &[]).ok();
    let mut seen = Vec::new();
    for i in 0..parts {
        let out = segment("parts", &["--shard", &format!("{i}/{parts}")]).ok();
        seen.extend(
            out.lines()
                .filter(|l| l.contains("heatmap(s) in"))
                .map(|l| l.split(':').next().unwrap().to_string()),
        );
    }
    seen.sort();
    let mut all: Vec<String> = std::fs::read_dir(d.join("d/imagesTs"))
        .unwrap()
        .map(|e| tonno_core_case(&e.unwrap().path()))
        .collect();
    all.sort();
    assert_eq!(seen, all, "every case segmented exactly once");
    // The same heatmaps as one process, and eval reads the parts' answers
    // as one predictions.csv.
    assert_eq!(visible_files(&d.join("parts")).len(), cases + parts);
    for (name, bytes) in visible_files(&d.join("whole")) {
        if name.ends_with(".nii.gz") {
            assert_eq!(std::fs::read(d.join("parts").join(&name)).unwrap(), bytes);
        }
    }
    let eval = |pred: &str| {
        tonno(
            d,
            &["eval", "--pred", pred, "--truth", "d/labelsTs", "--json"],
        )
    };
    let (whole, parted) = (eval("whole").json(), eval("parts").json());
    assert_eq!(whole[0]["classification"], parted[0]["classification"]);
    assert_eq!(
        parted[0]["classification"]["cases"].as_u64(),
        Some(cases as u64)
    );
    // A part again is refused without --force, naming its own file.
    segment("parts", &["--shard", &format!("0/{parts}")])
        .fails_with(&[&format!("predictions.shard-0-of-{parts}.csv"), "--force"]);
    segment("parts", &["--shard", &format!("{parts}/{parts}")]).fails_with(&["count from 0"]);
    // A part that did not finish, or the same case in two files, is named.
    let first = d.join(format!("parts/predictions.shard-0-of-{parts}.csv"));
    let text = std::fs::read_to_string(&first).unwrap();
    std::fs::remove_file(&first).unwrap();
    eval("parts").fails_with(&["1 of", "did those tasks of the array finish"]);
    std::fs::write(&first, &text).unwrap();
    std::fs::copy(
        d.join("whole/predictions.csv"),
        d.join("parts/predictions.csv"),
    )
    .unwrap();
    eval("parts").fails_with(&["answered in both"]);
}

/// The README's main job, in its short form: every step runs, the test scans
/// are scored and called (`predictions.csv`) as `tonno segment` does, and
/// the per-scan rule's column is gated by that answer.
#[test]
fn demo_quick_runs_every_step_and_gates_the_per_scan_rule() {
    let dir = tempfile::tempdir().unwrap();
    let table = tonno(dir.path(), &["demo", "--quick", "--out", "demo"]).ok();
    let demo = dir.path().join("demo");
    let tests = std::fs::read_dir(demo.join("data/imagesTs"))
        .unwrap()
        .count();
    assert!(tests >= 2);
    assert!(table.contains("Dice (auto, gated)"), "{table}");
    assert!(
        table.contains(&format!("scan classification ({tests} scans")),
        "{table}"
    );
    for m in [
        "gradcam2d",
        "layercam2d",
        "tonno",
        "averaged-gradcam",
        "averaged-layercam",
        "tomographic-gradcam",
        "tomographic-layercam",
    ] {
        assert!(table.contains(&format!("| {m} |")), "{m} missing:\n{table}");
    }
    let csv = std::fs::read_to_string(demo.join("heatmaps/predictions.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "case,score,predicted");
    assert_eq!(rows.len(), tests + 1, "{csv}");
    for row in &rows[1..] {
        let f: Vec<&str> = row.split(',').collect();
        assert!(f[1].parse::<f64>().unwrap().is_finite(), "{row}");
        assert!(f[2] == "0" || f[2] == "1", "{row}");
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo.join("report/results.json")).unwrap())
            .unwrap();
    assert_eq!(results["classification"]["cases"], tests);
    assert!(demo.join("report/report.html").exists());
    assert!(demo.join("report/report.md").exists());
    // What a user already has stays unless asked.
    tonno(dir.path(), &["demo", "--quick", "--out", "demo"])
        .fails_with(&["already exists", "--force"]);
}
