//! Training on tiny synthetic datasets: it learns, it is reproducible, and
//! it refuses data it cannot train on.

mod common;

use std::path::Path;

use common::{dataset, small_config};
use tonno_core::io::dataset::LabelSource;
use tonno_ml::config::Objective;
use tonno_ml::decision::Aggregate;
use tonno_ml::run::EpochMetrics;
use tonno_ml::train::{DataSpec, RunMode, Silent, train};

fn metrics(run: &Path) -> Vec<EpochMetrics> {
    serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn learns_lesions_from_volume_labels_and_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(&tmp.path().join("data"), 24, (0.5, 0.8));
    let a = train(
        &data,
        &tmp.path().join("a"),
        small_config(),
        RunMode::New,
        &Silent,
    )
    .unwrap();
    assert!(
        a.best_score >= 0.9,
        "best validation AUROC {}",
        a.best_score
    );
    // Same seed, same CPU: the same numbers, epoch after epoch.
    train(
        &data,
        &tmp.path().join("b"),
        small_config(),
        RunMode::New,
        &Silent,
    )
    .unwrap();
    let (ma, mb) = (
        metrics(&tmp.path().join("a")),
        metrics(&tmp.path().join("b")),
    );
    assert_eq!(ma.len(), mb.len());
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!(
            (x.train_loss, x.val_auroc_max),
            (y.train_loss, y.val_auroc_max),
            "epoch {}",
            x.epoch
        );
    }
    for f in [
        "config.toml",
        "model.bpk",
        "metrics.json",
        "train.log",
        "checkpoint.json",
    ] {
        assert!(tmp.path().join("a").join(f).exists(), "{f}");
    }
}

#[test]
fn the_relative_objective_learns_and_scores_scans_by_the_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(&tmp.path().join("data"), 24, (0.5, 0.8));
    let mut config = small_config();
    config.objective = Objective::Mil {
        bag: 8,
        r: 4.0,
        relative: true,
    };
    config.selection = Aggregate::Gap;
    let run = tmp.path().join("rel");
    let summary = train(&data, &run, config, RunMode::New, &Silent).unwrap();
    assert!(
        summary.best_score >= 0.9,
        "best validation AUROC {}",
        summary.best_score
    );
    let m = metrics(&run);
    assert!(m.iter().all(|e| e.val_auroc_gap.is_some()));
    let decision: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("decision.json")).unwrap()).unwrap();
    assert_eq!(decision["aggregate"], "gap", "{decision}");
}

#[test]
fn refuses_runs_and_data_it_cannot_use() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(&tmp.path().join("data"), 6, (0.3, 0.5));
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::write(run.join("keep.txt"), "mine").unwrap();
    let e = train(&data, &run, small_config(), RunMode::New, &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("already exists") && e.contains("--resume"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("keep.txt")).unwrap(),
        "mine"
    );

    // One-class labels.
    let csv = tmp.path().join("one.csv");
    let names: Vec<String> = (0..6).map(|i| format!("case_{i:03},1")).collect();
    std::fs::write(&csv, format!("case,label\n{}\n", names.join("\n"))).unwrap();
    let one = DataSpec {
        root: data.root.clone(),
        labels: LabelSource::Csv(csv),
    };
    let e = train(
        &one,
        &tmp.path().join("r1"),
        small_config(),
        RunMode::New,
        &Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("6 positive and 0 negative"), "{e}");

    // Fewer than two volumes of a class.
    let csv = tmp.path().join("few.csv");
    std::fs::write(
        &csv,
        "case,label\ncase_000,1\ncase_001,0\ncase_002,0\ncase_003,0\n",
    )
    .unwrap();
    let few = DataSpec {
        root: data.root.clone(),
        labels: LabelSource::Csv(csv),
    };
    let e = train(
        &few,
        &tmp.path().join("r2"),
        small_config(),
        RunMode::New,
        &Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("at least 2 of each"), "{e}");

    // No labels at all.
    let bare = tmp.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    std::fs::copy(
        data.root.join("imagesTr/case_000.nii.gz"),
        bare.join("case_000.nii.gz"),
    )
    .unwrap();
    let e = train(
        &DataSpec {
            root: bare,
            labels: LabelSource::Default,
        },
        &tmp.path().join("r3"),
        small_config(),
        RunMode::New,
        &Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--labels"), "{e}");

    // A run folder that cannot be written.
    let blocked = tmp.path().join("file-not-folder");
    std::fs::write(&blocked, "x").unwrap();
    let e = train(
        &data,
        &blocked.join("run"),
        small_config(),
        RunMode::New,
        &Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("file-not-folder"), "{e}");
}
