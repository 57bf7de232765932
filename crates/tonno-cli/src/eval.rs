//! `tonno eval`: heatmaps against masks, per case and overall.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;
use tonno_core::eval::folder::{
    AutoSummary, Classification, auto_summary, classification, evaluate_method, masks, methods_in,
    oracle_dice, pairs,
};
use tonno_core::eval::{AUTO_FRACTION, Evaluation, ThresholdSource};
use tonno_ml::methods::Method;

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
    /// The fraction of `tonno segment --threshold auto`'s per-scan rule, for
    /// the "auto" columns (default: each method's own, as `tonno segment`).
    #[arg(long)]
    auto_fraction: Option<f64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
pub struct MethodRow {
    pub method: String,
    #[serde(flatten)]
    pub eval: Evaluation,
    /// The scan-level answer of the model that made the heatmaps (the same
    /// for every method), from `--pred`'s `predictions.csv`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<Classification>,
    /// The masks of `tonno segment --threshold auto`: each scan's own
    /// threshold, gated by `predictions.csv` when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_rule: Option<AutoSummary>,
    /// Mean Dice at the oracle threshold (chosen on these test cases).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oracle_dice: Option<f64>,
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".to_string(), |x| format!("{x:.digits$}"))
}

/// The extra columns of the per-scan rule and the oracle Dice.
pub fn auto_columns(rows: &[MethodRow]) -> Vec<(&'static str, Vec<String>)> {
    let col = |f: &dyn Fn(&AutoSummary) -> String| {
        rows.iter()
            .map(|r| r.auto_rule.as_ref().map_or(String::new(), f))
            .collect::<Vec<String>>()
    };
    let gated = rows
        .iter()
        .any(|r| r.auto_rule.as_ref().is_some_and(|a| a.gated));
    vec![
        (
            if gated {
                "Dice (auto, gated)"
            } else {
                "Dice (auto)"
            },
            col(&|a| fmt(a.mean_dice, 3)),
        ),
        (
            "empty / median FP ml (auto)",
            col(&|a| {
                format!(
                    "{} / {}",
                    a.empty_predictions,
                    fmt(a.median_false_positive_ml, 2)
                )
            }),
        ),
        (
            "oracle Dice",
            rows.iter().map(|r| fmt(r.oracle_dice, 3)).collect(),
        ),
    ]
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
            ThresholdSource::Auto => "auto",
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
    let threshold = match a.threshold.as_str() {
        "auto" => None,
        t => Some(
            t.parse::<f32>()
                .ok()
                .filter(|t| t.is_finite())
                .with_context(|| format!("--threshold {t:?} is neither auto nor a number"))?,
        ),
    };
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
    let (classified, gate) = match classification(&a.pred, &cases)? {
        Some((c, g)) => (Some(c), (!g.is_empty()).then_some(g)),
        None => (None, None),
    };
    let mut rows = Vec::new();
    for m in &methods {
        let test = pairs(&a.pred, &a.truth, m)?;
        let val = match (&a.val_pred, &a.val_truth) {
            (Some(p), Some(t)) => Some(pairs(p, t, m)?),
            _ => None,
        };
        rows.push(MethodRow {
            method: m.clone(),
            eval: evaluate_method(&test, val.as_deref(), threshold)?,
            classification: classified.clone(),
            auto_rule: Some(auto_summary(
                &test,
                a.auto_fraction.unwrap_or_else(|| {
                    m.parse::<Method>()
                        .map_or(AUTO_FRACTION, |m| m.auto_fraction())
                }),
                gate.as_ref(),
            )?),
            oracle_dice: oracle_dice(&test),
        });
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        out!("{}", table(&rows, &auto_columns(&rows)));
        if rows
            .iter()
            .any(|r| r.eval.threshold_source == ThresholdSource::Oracle)
        {
            outln!(
                "\n(oracle: thresholds chosen on these test cases; pass --val-pred/--val-truth for honest ones)"
            );
        }
        outln!(
            "auto: each scan's threshold at {} of the way from its heatmap's median to its maximum{}",
            a.auto_fraction
                .map_or("the method's fraction".to_string(), |f| f.to_string()),
            if gate.is_some() {
                ", scans predictions.csv calls negative left empty"
            } else {
                ""
            }
        );
        if let Some(c) = &classified {
            outln!(
                "\nscan classification ({} scans, {} with a lesion; predictions.csv): AUROC {}, accuracy {}, sensitivity {}, specificity {}",
                c.cases,
                c.positives,
                fmt(c.auroc, 3),
                fmt(c.accuracy, 3),
                fmt(c.sensitivity, 3),
                fmt(c.specificity, 3)
            );
        }
        outln!(
            "Dice and HD95 (MONAI convention) over cases with a lesion, FP volume over cases without; AUROC and AP over all voxels."
        );
    }
    Ok(ExitCode::SUCCESS)
}
