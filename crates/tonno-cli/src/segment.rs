//! `tonno segment`: 3D heatmaps (and masks) from a trained encoder, by ToNNO
//! and the CAM methods, on the input's own grid.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tonno_core::io::{dicom, list_images, read_image_series};
use tonno_core::normalize::Normalization;
use tonno_core::radon::Padding;
use tonno_core::sampler::{BallFit, SamplingConfig};
use tonno_ml::decision::{Decision, ScoreRule};
use tonno_ml::device::DeviceChoice;
use tonno_ml::methods::{Method, ProfileValue, SegmentConfig, SliceModel};
use tonno_ml::pipeline::{CaseResult, Job, MaskThreshold, segment_file};
use tonno_ml::run::TrainedModel;

use crate::progress;
use crate::shard::{Shard, ShardArg};
use crate::tomo_args::TomoArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EncoderArg {
    /// The exact Radon "encoder" (a slice's pixel sum): reconstructs the input.
    Sum,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run folder written by `tonno train`.
    #[arg(long, required_unless_present = "encoder")]
    model: Option<PathBuf>,
    /// Use a built-in encoder instead of a trained one.
    #[arg(long, value_enum, conflicts_with = "model")]
    encoder: Option<EncoderArg>,
    /// An image (NIfTI, NRRD, an Enhanced DICOM file, or a folder holding a
    /// DICOM series), or a folder of images (DICOM series as sub-folders).
    #[arg(long)]
    input: PathBuf,
    /// The DICOM series (SeriesInstanceUID) to read when the input folder
    /// holds several.
    #[arg(long)]
    series: Option<String>,
    /// Output folder: CASE_METHOD.nii.gz heatmaps (and CASE_METHOD_mask.nii.gz).
    #[arg(long)]
    out: PathBuf,
    /// Methods to run (repeat or comma-separate): tonno, gradcam2d, layercam2d,
    /// averaged-gradcam, averaged-layercam, tomographic-gradcam, tomographic-layercam, or all.
    #[arg(long = "method", value_delimiter = ',', default_value = "tonno")]
    methods: Vec<String>,
    #[command(flatten)]
    tomo: TomoArgs,
    /// ToNNO profile values: the logit (paper) or its sigmoid.
    #[arg(long, value_enum, default_value_t = ProfileArg::Logit)]
    profile: ProfileArg,
    /// Also write a uint8 mask of heatmap > T: a value, or `auto` (each
    /// scan's own threshold, a method's fraction of the way from its heatmap's
    /// median to its maximum over the body; no mask needed to choose it).
    #[arg(long, value_parser = parse_threshold, allow_negative_numbers = true)]
    threshold: Option<MaskThreshold>,
    /// The fraction of `--threshold auto` (0 to 1; default: each method's
    /// own, measured on the real-anatomy benchmark's validation subjects).
    #[arg(long)]
    auto_fraction: Option<f64>,
    /// Keep the masks of scans the model calls negative (by default they are
    /// empty: the decision threshold stored in the run says which scans hold
    /// a lesion).
    #[arg(long)]
    no_gate: bool,
    /// Keep heatmap values outside the body (by default every heatmap is set
    /// to its lowest value outside the scan's foreground, holes filled).
    #[arg(long)]
    no_body_mask: bool,
    /// cpu, torch, torch-cuda[:N], vulkan or cuda.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Slices per forward pass (default: 128 on CPU, 1024 on a GPU).
    #[arg(long)]
    batch: Option<usize>,
    /// Replace existing outputs.
    #[arg(long, conflicts_with = "skip_existing")]
    force: bool,
    /// Continue a folder that an earlier run left unfinished (killed, say):
    /// a case whose outputs are all there is only scored, the others are
    /// segmented again. Every file is written whole under a temporary name
    /// and then renamed, so a file that is there is complete.
    #[arg(long)]
    skip_existing: bool,
    /// Stop at the first bad input instead of reporting it and going on.
    #[arg(long)]
    fail_fast: bool,
    /// Process only part I of N of the inputs (I from 0; by sorted name), or
    /// `slurm`: the part of this task of a SLURM job array (`sbatch
    /// --array=A-B`, consecutive ids). Parts write into one --out without clashing: each its
    /// own predictions.shard-I-of-N.csv, which `tonno eval` reads together.
    #[arg(long, value_parser = crate::shard::parse)]
    shard: Option<ShardArg>,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

fn parse_threshold(s: &str) -> Result<MaskThreshold, String> {
    if s == "auto" {
        return Ok(MaskThreshold::Auto);
    }
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(MaskThreshold::Value(v)),
        _ => Err(format!("{s:?} is neither auto nor a finite number")),
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ProfileArg {
    Logit,
    Probability,
}

fn inputs(input: &Path, series: Option<&str>) -> anyhow::Result<Vec<PathBuf>> {
    if input.is_file() || dicom::is_series_dir(input) {
        return Ok(vec![input.to_path_buf()]);
    }
    anyhow::ensure!(
        series.is_none(),
        "{}: --series chooses among the series of one DICOM folder, and this is not one",
        input.display()
    );
    anyhow::ensure!(
        input.is_dir(),
        "{}: no such file or folder",
        input.display()
    );
    if input.join("dataset.json").is_file() {
        anyhow::bail!(
            "{} is a dataset folder; point --input at one of its image folders (e.g. {})",
            input.display(),
            input.join("imagesTs").display()
        );
    }
    let files = list_images(input)?;
    anyhow::ensure!(
        !files.is_empty(),
        "{}: no images (.nii, .nii.gz, .nrrd, .nhdr, .dcm, or folders holding DICOM series)",
        input.display()
    );
    Ok(files)
}

pub fn parse_methods(names: &[String]) -> anyhow::Result<Vec<Method>> {
    let mut out = Vec::new();
    for n in names {
        if n == "all" {
            out.extend(Method::ALL);
        } else {
            out.push(n.parse::<Method>()?);
        }
    }
    Ok(out)
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if let Some(f) = a.auto_fraction {
        anyhow::ensure!(
            f > 0.0 && f < 1.0,
            "--auto-fraction {f}: must be between 0 and 1"
        );
    }
    let methods = parse_methods(&a.methods)?;
    let files = inputs(&a.input, a.series.as_deref())?;
    let shard = a
        .shard
        .map(|s| s.resolve(|k| std::env::var(k).ok()))
        .transpose()?;
    let files = match shard {
        Some(s) => {
            let total = files.len();
            let part = s.select(files);
            eprintln!(
                "part {} of {} (from 0): {} of {total} input(s)",
                s.index,
                s.count,
                part.len()
            );
            part
        }
        None => files,
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let device = a.device.open()?;
    let trained = match &a.model {
        Some(run) => Some(
            TrainedModel::load(run, &device)
                .with_context(|| format!("loading the model in {}", run.display()))?,
        ),
        None => None,
    };
    let encoder = trained.as_ref().map(|t| t.inference_encoder());
    let batch = a.batch.unwrap_or(a.device.default_inference_batch());
    let model = match &encoder {
        Some(e) => SliceModel::Net {
            encoder: e,
            device: device.clone(),
            batch,
        },
        None => SliceModel::Sum,
    };
    let sampling = slicing(trained.as_ref(), a.tomo.pixels)?;
    let sum = trained.is_none();
    let predictions = a.out.join(
        shard
            .as_ref()
            .map_or("predictions.csv".to_string(), Shard::predictions_file),
    );
    let (rule, decision) = scan_rule(&a, trained.as_ref(), &predictions)?;
    let bar = progress::bar(files.len() as u64, "segment");
    let mut results = Vec::new();
    let mut failures = 0usize;
    for file in &files {
        let config = segment_config(&a, &sampling, file, sum);
        let job = Job {
            model: &model,
            sampling: &sampling,
            methods: &methods,
            threshold: a.threshold,
            auto_fraction: a.auto_fraction,
            force: a.force,
            skip_existing: a.skip_existing,
            sum,
            rule: rule.as_ref(),
            decision: decision.as_ref(),
            gate: !a.no_gate,
            // The sum encoder checks the transform itself: nothing is masked.
            body_mask: !a.no_body_mask && !sum,
            series: a.series.as_deref(),
        };
        match config.and_then(|c| Ok(segment_file(file, &a.out, &job, &c)?)) {
            Ok(r) => results.push(r),
            Err(e) => {
                failures += 1;
                bar.suspend(|| eprintln!("error: {e:#}"));
                if a.fail_fast {
                    return Err(e);
                }
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    // A part with no inputs (more tasks than cases) still writes its
    // (empty) answers, so that `tonno eval` can tell that every part ran.
    if rule.is_some() && (!results.is_empty() || (shard.is_some() && failures == 0)) {
        write_predictions(&predictions, &results)?;
    }
    print_results(&a, &results, failures)?;
    Ok(if failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// How slices are made: as the model's training slices (same
/// normalisation, ball fit and size), or raw over the covering ball for
/// the sum encoder.
fn slicing(
    trained: Option<&TrainedModel>,
    pixels: Option<usize>,
) -> anyhow::Result<SamplingConfig> {
    let Some(t) = trained else {
        return Ok(SamplingConfig {
            normalization: Normalization::None,
            ball: BallFit::Covering,
            ..SamplingConfig::default()
        });
    };
    if let Some(p) = pixels {
        anyhow::ensure!(
            p == t.config.sampling.slice_size,
            "--pixels {p}, but the model was trained on {0}x{0} slices",
            t.config.sampling.slice_size
        );
    }
    Ok(t.config.sampling.clone())
}

/// The volume-level answer of a trained model: how a scan is scored, and
/// the decision threshold chosen at training time on the validation labels
/// (none with `--no-gate` and no stored threshold).
fn scan_rule(
    a: &Args,
    trained: Option<&TrainedModel>,
    predictions: &Path,
) -> anyhow::Result<(Option<ScoreRule>, Option<Decision>)> {
    let (Some(t), Some(run)) = (trained, &a.model) else {
        return Ok((None, None));
    };
    let path = run.join(Decision::FILE);
    let decision = if a.no_gate && !path.exists() {
        None
    } else {
        Some(Decision::read(&path)?)
    };
    if !a.force && !a.skip_existing && predictions.exists() {
        anyhow::bail!(
            "{} already exists; pass --skip-existing to continue the folder or --force to replace it",
            predictions.display()
        );
    }
    let rule = decision.as_ref().map_or(t.config.score_rule, |d| d.rule);
    Ok((Some(rule), decision))
}

/// The summary on stdout: JSON, or a line per case and a total.
fn print_results(a: &Args, results: &[CaseResult], failures: usize) -> anyhow::Result<()> {
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "cases": results, "failures": failures })
            )?
        );
    } else {
        for r in results {
            let verdict = match (r.score, r.predicted) {
                (Some(s), Some(p)) => format!(
                    ", score {s:.3}: {}{}",
                    if p { "positive" } else { "negative" },
                    if r.gated { ", empty mask" } else { "" }
                ),
                (Some(s), None) => format!(", score {s:.3}"),
                _ => String::new(),
            };
            if r.skipped {
                outln!(
                    "{}: {} output(s) already there, kept{verdict}",
                    r.case,
                    r.outputs.len()
                );
                continue;
            }
            outln!(
                "{}: {} heatmap(s) in {:.1}s (slicing {:.1}s, encoder {:.1}s, reconstruction {:.1}s){verdict}",
                r.case,
                r.outputs.len(),
                r.seconds,
                r.timings.slicing_s,
                r.timings.encoder_s,
                r.timings.reconstruction_s
            );
        }
        outln!(
            "wrote {} case(s) to {}{}",
            results.len(),
            a.out.display(),
            if failures > 0 {
                format!("; {failures} failed")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// `OUT/predictions.csv`: case, score, predicted label (1, 0, or empty
/// without a decision threshold), written through a temporary file.
pub(crate) fn write_predictions(path: &Path, results: &[CaseResult]) -> anyhow::Result<()> {
    let mut text = String::from("case,score,predicted\n");
    for r in results {
        let score = r.score.map_or(String::new(), |s| format!("{s:.6}"));
        let predicted = r.predicted.map_or("", |p| if p { "1" } else { "0" });
        text += &format!("{},{score},{predicted}\n", r.case);
    }
    Ok(tonno_core::io::write_text(path, &text, true)?)
}

fn segment_config(
    a: &Args,
    sampling: &SamplingConfig,
    file: &Path,
    sum: bool,
) -> anyhow::Result<SegmentConfig> {
    let (slices, pixels) = if sum {
        // The geometry follows the volume, as `tonno radon` does.
        let img = read_image_series(file, a.series.as_deref())
            .with_context(|| format!("reading {}", file.display()))?;
        let g = a.tomo.geometry(&img.volume)?;
        (g.slices, g.pixels)
    } else {
        (a.tomo.slices.unwrap_or(64), sampling.slice_size)
    };
    Ok(SegmentConfig {
        directions: a.tomo.directions,
        slices,
        pixels,
        filter: a
            .tomo
            .filter(if sum { Padding::Zero } else { Padding::Edge }),
        reconstruction: a.tomo.reconstruction()?,
        profile: match a.profile {
            ProfileArg::Logit => ProfileValue::Logit,
            ProfileArg::Probability => ProfileValue::Probability,
        },
        center_mm: a.tomo.center,
        radius_mm: a.tomo.radius,
        in_plane_angle: a.tomo.rotation.to_radians(),
        gradcam_stage: None,
        layercam_stage: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_auto_or_finite_numbers() {
        assert_eq!(parse_threshold("auto"), Ok(MaskThreshold::Auto));
        assert_eq!(parse_threshold("-1.5"), Ok(MaskThreshold::Value(-1.5)));
        for bad in ["foo", "nan", "inf", ""] {
            assert!(parse_threshold(bad).is_err(), "{bad}");
        }
    }
}
