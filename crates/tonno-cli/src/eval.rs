//! `tonno eval`: heatmaps against masks, per case and overall.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;
use tonno_core::eval::folder::{
    AutoSummary, Classification, auto_summary, classification, evaluate_method, masks, methods_in,
    oracle_dice, pairs,
};
use tonno_core::eval::{AUTO_FRACTION, Evaluation, ThresholdSource};
use tonno_ml::methods::Method;

use crate::html;

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
    /// Also write DIR/report.html: the table and, for each case, three
    /// planes through its lesion with every method's heatmap (one
    /// self-contained page, pictures inline).
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// The scans (CASE.nii.gz, ...) under the report's heatmaps; without
    /// them the heatmaps are drawn over black.
    #[arg(long, requires = "report")]
    images: Option<PathBuf>,
    /// At most this many cases in the report (by name).
    #[arg(long, default_value_t = 50, requires = "report")]
    report_cases: usize,
    /// Replace an existing report.html.
    #[arg(long, requires = "report")]
    force: bool,
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

/// The methods' summaries as a header and rows of cells (for the
/// Markdown table and the HTML report alike).
pub fn table_cells(
    rows: &[MethodRow],
    extra: &[(&str, Vec<String>)],
) -> (Vec<String>, Vec<Vec<String>>) {
    let mut header: Vec<String> = [
        "method",
        "threshold",
        "Dice",
        "HD95 (mm)",
        "FP volume (ml)",
        "detection F1",
        "voxel AUROC",
        "voxel AP",
    ]
    .map(String::from)
    .to_vec();
    header.extend(extra.iter().map(|(h, _)| h.to_string()));
    let cells = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let e = &r.eval;
            let src = match e.threshold_source {
                ThresholdSource::Validation => "val",
                ThresholdSource::Oracle => "oracle",
                ThresholdSource::Given => "given",
                ThresholdSource::Auto => "auto",
            };
            let mut row = vec![
                r.method.clone(),
                format!("{:.3e} ({src})", e.threshold),
                fmt(e.mean_dice, 3),
                format!(
                    "{}{}",
                    fmt(e.mean_hd95_mm, 1),
                    if e.empty_predictions > 0 {
                        format!(" ({} empty)", e.empty_predictions)
                    } else {
                        String::new()
                    }
                ),
                fmt(e.mean_false_positive_ml, 2),
                format!("{:.3}", e.detection_f1),
                fmt(e.voxel_auroc, 3),
                fmt(e.voxel_average_precision, 3),
            ];
            row.extend(
                extra
                    .iter()
                    .map(|(_, col)| col.get(i).cloned().unwrap_or_default()),
            );
            row
        })
        .collect();
    (header, cells)
}

/// A markdown table of the methods' summaries.
pub fn table(rows: &[MethodRow], extra: &[(&str, Vec<String>)]) -> String {
    let (header, cells) = table_cells(rows, extra);
    let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    let mut s = line(&header);
    s += &format!("|{}\n", "---|".repeat(header.len()));
    for row in &cells {
        s += &line(row);
    }
    s
}

/// Each case's call, `true` for a lesion: the gate of the per-scan rule.
pub(crate) type Gate = BTreeMap<String, bool>;

/// The scan-level answer in `pred`'s `predictions.csv` for the cases of
/// `truth`: its figures, and each case's call for the gate (`None` where the
/// file calls no case, as when no decision threshold was stored).
pub(crate) fn scan_answer(
    pred: &Path,
    truth: &BTreeMap<String, PathBuf>,
) -> anyhow::Result<(Option<Classification>, Option<Gate>)> {
    Ok(match classification(pred, truth)? {
        Some((c, g)) => (Some(c), (!g.is_empty()).then_some(g)),
        None => (None, None),
    })
}

/// The scan-level answer's figures in a sentence.
pub(crate) fn classification_line(c: &Classification) -> String {
    format!(
        "scan classification ({} scans, {} with a lesion; predictions.csv): AUROC {}, accuracy {}, sensitivity {}, specificity {}",
        c.cases,
        c.positives,
        fmt(c.auroc, 3),
        fmt(c.accuracy, 3),
        fmt(c.sensitivity, 3),
        fmt(c.specificity, 3)
    )
}

/// `DIR/report.html` of an evaluation.
fn write_report(
    a: &Args,
    dir: &std::path::Path,
    rows: &[MethodRow],
    methods: &[String],
    classified: Option<&Classification>,
) -> anyhow::Result<PathBuf> {
    let path = dir.join("report.html");
    anyhow::ensure!(
        a.force || !path.exists(),
        "{} already exists; pass --force to replace it",
        path.display()
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (header, cells) = table_cells(rows, &auto_columns(rows));
    let mut intro = vec![format!(
        "Heatmaps in {} against the masks in {}.",
        a.pred.display(),
        a.truth.display()
    )];
    if let Some(c) = classified {
        intro.push(format!("{}.", classification_line(c)));
    }
    intro.push(COLUMNS.to_string());
    let page = html::Page {
        title: "tonno evaluation".into(),
        intro,
        tables: vec![html::Table {
            id: "results".into(),
            caption: "Methods".into(),
            header,
            rows: cells,
        }],
        plots: Vec::new(),
        cases: html::folder_views(
            a.images.as_deref(),
            &a.truth,
            &a.pred,
            methods,
            a.report_cases,
        )?,
        cases_note: html::CASES_NOTE.into(),
    };
    html::write(&path, &page, a.force)?;
    Ok(path)
}

/// What the table's columns are (the report's words).
pub const COLUMNS: &str = "Dice and HD95 (MONAI's convention, mm) are means over scans with a lesion at the threshold in the second column; \
FP volume is the mean predicted volume on scans without one; detection F1 counts a lesion found when a predicted connected component overlaps it; \
voxel AUROC and average precision pool every voxel and need no threshold. 'auto' is each scan's own threshold (tonno segment --threshold auto), \
gated by the scan-level predictions when there are any; 'oracle Dice' uses the best threshold on these scans themselves.";

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
    let (classified, gate) = scan_answer(&a.pred, &cases)?;
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
    if let Some(dir) = &a.report {
        let path = write_report(&a, dir, &rows, &methods, classified.as_ref())?;
        eprintln!("report: {}", path.display());
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
            outln!("\n{}", classification_line(c));
        }
        outln!(
            "Dice and HD95 (MONAI convention) over cases with a lesion, FP volume over cases without; AUROC and AP over all voxels."
        );
    }
    Ok(ExitCode::SUCCESS)
}
