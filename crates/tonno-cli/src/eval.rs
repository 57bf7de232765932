//! `tonno eval`: heatmaps against masks, per case and overall.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;
use tonno_core::eval::{Evaluation, Pair, ThresholdSource, best_threshold, evaluate};
use tonno_core::io::{case_name, is_image_file, read_image};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder of heatmaps named CASE_METHOD.nii.gz (as `tonno segment` writes them).
    #[arg(long)]
    pred: PathBuf,
    /// Folder of masks named CASE.nii.gz (e.g. labelsTs).
    #[arg(long)]
    truth: PathBuf,
    /// Methods to evaluate (default: every method found).
    #[arg(long = "method", value_delimiter = ',')]
    methods: Vec<String>,
    /// "auto" (best mean Dice on --val-pred/--val-truth, else on the test set itself) or a value.
    #[arg(long, default_value = "auto")]
    threshold: String,
    /// Validation heatmaps for choosing the threshold.
    #[arg(long, requires = "val_truth")]
    val_pred: Option<PathBuf>,
    /// Validation masks.
    #[arg(long, requires = "val_pred")]
    val_truth: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The masks of a folder, by case.
fn masks(dir: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    anyhow::ensure!(dir.is_dir(), "{}: not a folder", dir.display());
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e?.path();
        if p.is_file() && is_image_file(&p) {
            out.insert(case_name(&p), p);
        }
    }
    anyhow::ensure!(!out.is_empty(), "{}: no masks", dir.display());
    Ok(out)
}

/// Methods with a heatmap in `pred` for the cases of `truth`.
pub fn methods_in(pred: &Path, cases: &BTreeMap<String, PathBuf>) -> anyhow::Result<Vec<String>> {
    let mut found = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(pred).with_context(|| format!("listing {}", pred.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".nii.gz") else {
            continue;
        };
        if stem.ends_with("_mask") {
            continue;
        }
        if let Some(case) = cases
            .keys()
            .filter(|c| stem.starts_with(&format!("{c}_")))
            .max_by_key(|c| c.len())
        {
            found.insert(stem[case.len() + 1..].to_string());
        }
    }
    Ok(found.into_iter().collect())
}

/// Heatmap/mask pairs of one method.
pub fn pairs(pred: &Path, truth: &Path, method: &str) -> anyhow::Result<Vec<Pair>> {
    let masks = masks(truth)?;
    masks
        .iter()
        .map(|(case, mask)| {
            let heat = pred.join(format!("{case}_{method}.nii.gz"));
            anyhow::ensure!(
                heat.is_file(),
                "{}: missing the {method} heatmap of case {case}",
                heat.display()
            );
            let h = read_image(&heat)
                .with_context(|| format!("reading {}", heat.display()))?
                .volume;
            let m = read_image(mask)
                .with_context(|| format!("reading {}", mask.display()))?
                .volume;
            Ok(Pair::new(case, h, m)?)
        })
        .collect()
}

/// Evaluates one method: the threshold from `val` if given, else the oracle.
pub fn evaluate_method(
    test: &[Pair],
    val: Option<&[Pair]>,
    threshold: &str,
) -> anyhow::Result<Evaluation> {
    let (t, source) = if threshold == "auto" {
        match val {
            Some(v) => (best_threshold(v)?, ThresholdSource::Validation),
            None => (best_threshold(test)?, ThresholdSource::Oracle),
        }
    } else {
        let t: f32 = threshold
            .parse()
            .with_context(|| format!("--threshold {threshold:?} is neither auto nor a number"))?;
        (t, ThresholdSource::Given)
    };
    Ok(evaluate(test, t, source))
}

#[derive(Debug, Serialize)]
pub struct MethodRow {
    pub method: String,
    #[serde(flatten)]
    pub eval: Evaluation,
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".to_string(), |x| format!("{x:.digits$}"))
}

/// A markdown table of the methods' summaries.
pub fn table(rows: &[MethodRow], extra: &[(&str, Vec<String>)]) -> String {
    let mut s = String::from(
        "| method | threshold | Dice | HD95 (mm) | FP volume (ml) | detection F1 | voxel AUROC | voxel AP |",
    );
    for (h, _) in extra {
        s += &format!(" {h} |");
    }
    s += "\n|---|---|---|---|---|---|---|---|";
    for _ in extra {
        s += "---|";
    }
    s += "\n";
    for (i, r) in rows.iter().enumerate() {
        let e = &r.eval;
        let src = match e.threshold_source {
            ThresholdSource::Validation => "val",
            ThresholdSource::Oracle => "oracle",
            ThresholdSource::Given => "given",
        };
        s += &format!(
            "| {} | {:.3e} ({src}) | {} | {}{} | {} | {:.3} | {} | {} |",
            r.method,
            e.threshold,
            fmt(e.mean_dice, 3),
            fmt(e.mean_hd95_mm, 1),
            if e.empty_predictions > 0 {
                format!(" ({} empty)", e.empty_predictions)
            } else {
                String::new()
            },
            fmt(e.mean_false_positive_ml, 2),
            e.detection_f1,
            fmt(e.voxel_auroc, 3),
            fmt(e.voxel_average_precision, 3),
        );
        for (_, col) in extra {
            s += &format!(" {} |", col.get(i).map_or("", String::as_str));
        }
        s += "\n";
    }
    s
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let cases = masks(&a.truth)?;
    let methods = if a.methods.is_empty() {
        methods_in(&a.pred, &cases)?
    } else {
        a.methods.clone()
    };
    anyhow::ensure!(
        !methods.is_empty(),
        "{}: no heatmaps named CASE_METHOD.nii.gz for the cases in {}",
        a.pred.display(),
        a.truth.display()
    );
    let mut rows = Vec::new();
    for m in &methods {
        let test = pairs(&a.pred, &a.truth, m)?;
        let val = match (&a.val_pred, &a.val_truth) {
            (Some(p), Some(t)) => Some(pairs(p, t, m)?),
            _ => None,
        };
        rows.push(MethodRow {
            method: m.clone(),
            eval: evaluate_method(&test, val.as_deref(), &a.threshold)?,
        });
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&rows, &[]));
        if rows
            .iter()
            .any(|r| r.eval.threshold_source == ThresholdSource::Oracle)
        {
            println!(
                "\n(oracle: thresholds chosen on these test cases; pass --val-pred/--val-truth for honest ones)"
            );
        }
        println!(
            "Dice and HD95 (MONAI convention) over cases with a lesion, FP volume over cases without; AUROC and AP over all voxels."
        );
    }
    Ok(ExitCode::SUCCESS)
}
