//! `tonno segment`: 3D heatmaps (and masks) from a trained encoder, by ToNNO
//! and the CAM methods, on the input's own grid.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;
use tonno_core::geometry::Ball;
use tonno_core::io::{DataType, case_name, is_image_file, read_image, write_image};
use tonno_core::normalize::Normalization;
use tonno_core::radon::Padding;
use tonno_ml::device::DeviceChoice;
use tonno_ml::methods::{Method, ProfileValue, SegmentConfig, SliceModel, Timings, segment};
use tonno_ml::run::TrainedModel;
use tonno_ml::sampler::{BallFit, PreparedVolume, SamplingConfig};

use crate::progress;
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
    /// An image, or a folder of images.
    #[arg(long)]
    input: PathBuf,
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
    /// Also write a uint8 mask of heatmap > T.
    #[arg(long)]
    threshold: Option<f32>,
    /// cpu, vulkan or cuda.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Slices per forward pass (default: 128 on CPU, 1024 on a GPU).
    #[arg(long)]
    batch: Option<usize>,
    /// Replace existing outputs.
    #[arg(long)]
    force: bool,
    /// Stop at the first bad input instead of reporting it and going on.
    #[arg(long)]
    fail_fast: bool,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ProfileArg {
    Logit,
    Probability,
}

#[derive(Debug, Serialize)]
pub struct CaseResult {
    pub case: String,
    pub input: PathBuf,
    pub outputs: Vec<PathBuf>,
    pub seconds: f64,
    pub timings: Timings,
}

fn inputs(input: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if input.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
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
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)
        .with_context(|| format!("listing {}", input.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && is_image_file(p)
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "{}: no images (.nii, .nii.gz, .nrrd, .nhdr)",
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
    let methods = parse_methods(&a.methods)?;
    let files = inputs(&a.input)?;
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
    // Slices must look like the training slices: same normalisation, ball fit and size.
    let sampling = match &trained {
        Some(t) => t.config.sampling().clone(),
        None => SamplingConfig {
            normalization: Normalization::None,
            ball: BallFit::Covering,
            ..SamplingConfig::default()
        },
    };
    if let (Some(t), Some(p)) = (&trained, a.tomo.pixels) {
        anyhow::ensure!(
            p == t.config.train.sampling.slice_size,
            "--pixels {p}, but the model was trained on {0}x{0} slices",
            t.config.train.sampling.slice_size
        );
    }
    let sum = trained.is_none();
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
            force: a.force,
            sum,
        };
        match config.and_then(|c| segment_file(file, &a.out, &job, &c)) {
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
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "cases": results, "failures": failures })
            )?
        );
    } else {
        for r in &results {
            println!(
                "{}: {} heatmap(s) in {:.1}s (slicing {:.1}s, encoder {:.1}s, reconstruction {:.1}s)",
                r.case,
                r.outputs.len(),
                r.seconds,
                r.timings.slicing_s,
                r.timings.encoder_s,
                r.timings.reconstruction_s
            );
        }
        println!(
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
    Ok(if failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// What to do with each input.
pub struct Job<'a> {
    pub model: &'a SliceModel<'a>,
    /// How the model's training slices were made.
    pub sampling: &'a SamplingConfig,
    pub methods: &'a [Method],
    pub threshold: Option<f32>,
    pub force: bool,
    /// The exact "sum" encoder: raw intensities, zero outside, the covering ball.
    pub sum: bool,
}

fn segment_config(
    a: &Args,
    sampling: &SamplingConfig,
    file: &Path,
    sum: bool,
) -> anyhow::Result<SegmentConfig> {
    let (slices, pixels) = if sum {
        // The geometry follows the volume, as `tonno radon` does.
        let img = read_image(file).with_context(|| format!("reading {}", file.display()))?;
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
        profile: match a.profile {
            ProfileArg::Logit => ProfileValue::Logit,
            ProfileArg::Probability => ProfileValue::Probability,
        },
        center_mm: a.tomo.center,
        radius_mm: a.tomo.radius,
        gradcam_stage: None,
        layercam_stage: None,
    })
}

/// Heatmaps (and masks) of one input written to `out` as CASE_METHOD.nii.gz.
pub fn segment_file(
    file: &Path,
    out: &Path,
    job: &Job<'_>,
    config: &SegmentConfig,
) -> anyhow::Result<CaseResult> {
    let start = std::time::Instant::now();
    let case = case_name(file);
    let out_path = |m: Method, mask: bool| {
        out.join(format!(
            "{case}_{}{}.nii.gz",
            m.name(),
            if mask { "_mask" } else { "" }
        ))
    };
    if !job.force {
        for m in job.methods {
            let p = out_path(*m, false);
            anyhow::ensure!(
                !p.exists(),
                "{} already exists; pass --force to replace it",
                p.display()
            );
        }
    }
    let img = read_image(file).with_context(|| format!("reading {}", file.display()))?;
    let mut prepared = PreparedVolume::new(&case, &img.volume, None, job.sampling)
        .with_context(|| format!("preparing {}", file.display()))?;
    if job.sum {
        prepared.background = 0.0;
        prepared.ball = Ball::covering(&img.volume);
    }
    let (heatmaps, timings) = segment(&prepared, job.model, job.methods, config)
        .with_context(|| format!("segmenting {}", file.display()))?;
    let mut outputs = Vec::new();
    for h in heatmaps {
        let p = out_path(h.method, false);
        write_image(&p, &h.volume, DataType::F32, Some(&img.info), job.force)
            .with_context(|| format!("writing {}", p.display()))?;
        outputs.push(p);
        if let Some(t) = job.threshold {
            let mask = h.volume.same_grid(
                h.volume
                    .data()
                    .iter()
                    .map(|&v| (v > t) as u8 as f32)
                    .collect(),
            )?;
            let p = out_path(h.method, true);
            write_image(&p, &mask, DataType::U8, Some(&img.info), job.force)
                .with_context(|| format!("writing {}", p.display()))?;
            outputs.push(p);
        }
    }
    Ok(CaseResult {
        case,
        input: file.to_path_buf(),
        outputs,
        seconds: start.elapsed().as_secs_f64(),
        timings,
    })
}
