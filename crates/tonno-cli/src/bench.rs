//! `tonno bench ...`: speed and memory figures, printed as JSON.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use tonno_core::affine::Affine;
use tonno_core::geometry::{Ball, TomoGeometry, extract_stack};
use tonno_core::radon::{Filter, Sinogram, backproject, plane_integrals};
use tonno_core::sampler::{PreparedVolume, SamplingConfig};
use tonno_core::synth::{SynthConfig, generate_case};
use tonno_core::volume::Volume;
use tonno_ml::methods::{Method, SegmentConfig, SliceModel};
use tonno_ml::run::TrainedModel;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Slice extraction, plane integrals, filtering and backprojection.
    Radon(RadonArgs),
    /// Training and inference slices/s and peak memory of each encoder at its default slice size.
    Encoder(EncoderArgs),
    /// Seconds per volume of each segmentation method, split into slicing,
    /// encoder and reconstruction.
    Segment(SegmentArgs),
}

#[derive(Debug, clap::Args)]
pub struct SegmentArgs {
    /// Volume sides in voxels (comma-separated); synthetic scans.
    #[arg(long, value_delimiter = ',', default_value = "64,128")]
    sizes: Vec<usize>,
    /// Methods (comma-separated, or all); each is timed alone, then all together.
    #[arg(long = "method", value_delimiter = ',', default_value = "all")]
    methods: Vec<String>,
    /// A trained run folder; default: an untrained encoder of --encoder's
    /// kind (the speed does not depend on the weights).
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// Encoder kind when no --model is given.
    #[arg(long, default_value = "cnn")]
    encoder: tonno_ml::encoder::EncoderKind,
    /// Directions K.
    #[arg(long, default_value_t = SegmentConfig::default().directions)]
    directions: usize,
    /// Slices per direction S.
    #[arg(long, default_value_t = SegmentConfig::default().slices)]
    slices: usize,
    /// Slices per forward pass (default: 128 on the CPU, 1024 on a GPU).
    #[arg(long)]
    batch: Option<usize>,
    /// cpu, torch, torch-cuda[:N], vulkan or cuda.
    #[arg(long, default_value = "cpu")]
    device: tonno_ml::device::DeviceChoice,
}

#[derive(Debug, clap::Args)]
pub struct EncoderArgs {
    /// Encoders to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "cnn,resnet18,resnet34")]
    encoders: Vec<tonno_ml::encoder::EncoderKind>,
    /// Timed training steps (and inference batches) per encoder.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Training batch size: the default training's (8 MIL bags of 12); a
    /// multiple of 24.
    #[arg(long, default_value_t = 96)]
    batch: usize,
    /// Inference batch size.
    #[arg(long, default_value_t = 128)]
    infer_batch: usize,
    /// Slice size (default: each encoder's own).
    #[arg(long)]
    slice_size: Option<usize>,
    /// cpu, torch, torch-cuda[:N], vulkan or cuda.
    #[arg(long, default_value = "cpu")]
    device: tonno_ml::device::DeviceChoice,
    /// Also run each encoder on the CPU with the same weights and report how
    /// far the device's logits, loss and one training step are from it.
    #[arg(long)]
    compare_cpu: bool,
}

#[derive(Debug, clap::Args)]
pub struct RadonArgs {
    /// Volume side in voxels.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Directions K.
    #[arg(long, default_value_t = 128)]
    directions: usize,
    /// Slices per direction S (and pixels per side P).
    #[arg(long, default_value_t = 128)]
    slices: usize,
    /// Timed repetitions of each step; the best is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
}

#[derive(Debug, Serialize)]
struct Step {
    name: &'static str,
    seconds: f64,
    /// Units of work per second (see `unit`).
    throughput: f64,
    unit: &'static str,
    peak_rss_mib: Option<f64>,
}

/// Peak resident memory since the last reset, from /proc (Linux only).
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn reset_peak_rss() {
    // "5" resets the peak RSS counter (Linux >= 4.0); harmless elsewhere.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn best_of<T>(repeats: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    (best, out.expect("at least one repetition"))
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Radon(a) => radon(a),
        Command::Encoder(a) => encoder(a),
        Command::Segment(a) => segment(a),
    }
}

fn radon(a: RadonArgs) -> anyhow::Result<ExitCode> {
    let n = a.size;
    anyhow::ensure!(n >= 8, "--size must be at least 8");
    let c = (n as f64 - 1.0) / 2.0;
    let vol = Volume::from_fn([n; 3], Affine::identity(), |i, j, k| {
        let d2 = (i as f64 - c).powi(2) + (j as f64 - c).powi(2) + (k as f64 - c).powi(2);
        (d2 < (0.3 * n as f64).powi(2)) as u8 as f32
    })?;
    let geometry = Arc::new(TomoGeometry::fibonacci(
        Ball::covering(&vol),
        a.directions,
        a.slices,
        a.slices,
        0.0,
    )?);
    let (k, s, p) = (geometry.directions(), geometry.slices, geometry.pixels);
    let samples = (k * s * p * p) as f64;
    let updates = (k * vol.voxels()) as f64;
    let mut steps = Vec::new();

    // Slice extraction alone, as `tonno segment` runs it: one direction
    // after another, each stack's slices in parallel.
    reset_peak_rss();
    let (t, _) = best_of(a.repeats, || {
        let mut buf = vec![0.0f32; s * p * p];
        for d in 0..k {
            extract_stack(&vol, &geometry, d, 0.0, &mut buf);
        }
    });
    steps.push(Step {
        name: "slice_extraction",
        seconds: t,
        throughput: samples / t,
        unit: "samples/s",
        peak_rss_mib: peak_rss_mib(),
    });

    reset_peak_rss();
    let (t, sino) = best_of(a.repeats, || plane_integrals(&vol, 0, &geometry));
    steps.push(Step {
        name: "plane_integrals",
        seconds: t,
        throughput: samples / t,
        unit: "samples/s",
        peak_rss_mib: peak_rss_mib(),
    });

    let filter = Filter::default();
    let (t, filtered) = best_of(a.repeats, || filter.apply(&sino));
    let filtered: Sinogram = filtered?;
    steps.push(Step {
        name: "filter",
        seconds: t,
        throughput: (k * s) as f64 / t,
        unit: "profile samples/s",
        peak_rss_mib: None,
    });

    reset_peak_rss();
    let grid = vol.grid();
    let (t, _) = best_of(a.repeats, || backproject(&filtered, &grid, 1.0));
    steps.push(Step {
        name: "backprojection",
        seconds: t,
        throughput: updates / t,
        unit: "voxel-direction updates/s",
        peak_rss_mib: peak_rss_mib(),
    });

    let report = serde_json::json!({
        "bench": "radon",
        "size": n, "directions": k, "slices": s, "pixels": p,
        "threads": rayon::current_num_threads(),
        "volume_mib": (vol.voxels() * 4) as f64 / (1 << 20) as f64,
        "steps": steps,
    });
    outln!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

fn encoder(a: EncoderArgs) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    for kind in &a.encoders {
        reset_peak_rss();
        let p = a.slice_size.unwrap_or(kind.default_slice_size());
        let r = tonno_ml::bench::encoder_throughput(
            *kind,
            p,
            a.batch,
            a.infer_batch,
            a.steps,
            a.device,
        )?;
        let mut v = serde_json::to_value(&r)?;
        v["peak_rss_mib"] = serde_json::json!(peak_rss_mib());
        if a.compare_cpu {
            let check = tonno_ml::bench::compare_with_cpu(*kind, p, 8, a.device)?;
            eprintln!(
                "{kind}: max |logit {} - logit cpu| = {:.2e} (max |logit| {:.2}); loss {:.6} vs {:.6}; after one step {:.2e}",
                a.device,
                check.max_abs_logit_diff,
                check.max_abs_logit,
                check.loss_device,
                check.loss_cpu,
                check.max_abs_logit_diff_after_step
            );
            v["check_against_cpu"] = serde_json::to_value(&check)?;
        }
        eprintln!(
            "{kind}: train {:.1} slices/s, infer {:.1} slices/s",
            r.train_slices_per_s, r.infer_slices_per_s
        );
        rows.push(v);
    }
    let sampler = tonno_ml::bench::sampler_throughput(64, 20)?;
    let report = serde_json::json!({
        "bench": "encoder",
        "device": a.device.to_string(),
        "threads": rayon::current_num_threads(),
        "encoders": rows,
        "sampler_slices_per_s": sampler,
    });
    outln!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
struct SegmentRow {
    size: usize,
    /// One method's name, or "all" for every asked method in one run (they
    /// share slicing and forward passes).
    method: String,
    seconds: f64,
    slicing_s: f64,
    encoder_s: f64,
    reconstruction_s: f64,
    peak_rss_mib: Option<f64>,
}

fn segment(a: SegmentArgs) -> anyhow::Result<ExitCode> {
    let methods = crate::segment::parse_methods(&a.methods)?;
    anyhow::ensure!(!methods.is_empty(), "--method: none given");
    let device = a.device.open()?;
    let (encoder, sampling, pixels, kind) = match &a.model {
        Some(run) => {
            let t = TrainedModel::load(run, &device)
                .with_context(|| format!("loading the model in {}", run.display()))?;
            let sampling = t.config.sampling.clone();
            let p = sampling.slice_size;
            (t.inference_encoder(), sampling, p, t.config.encoder.kind)
        }
        None => {
            let cfg = tonno_ml::encoder::EncoderConfig {
                kind: a.encoder,
                ..Default::default()
            };
            let p = a.encoder.default_slice_size();
            let sampling = SamplingConfig {
                slice_size: p,
                ..SamplingConfig::default()
            };
            (cfg.init(&device)?, sampling, p, a.encoder)
        }
    };
    let batch = a.batch.unwrap_or(a.device.default_inference_batch());
    let model = SliceModel::Net {
        encoder: &encoder,
        device: device.clone(),
        batch,
    };
    let config = SegmentConfig {
        directions: a.directions,
        slices: a.slices,
        pixels,
        ..SegmentConfig::default()
    };
    let mut runs: Vec<(String, Vec<Method>)> = methods
        .iter()
        .map(|m| (m.name().to_string(), vec![*m]))
        .collect();
    if methods.len() > 1 {
        runs.push(("all".into(), methods.clone()));
    }
    let mut rows = Vec::new();
    for &size in &a.sizes {
        let synth = SynthConfig {
            size,
            ..SynthConfig::default()
        };
        let case = generate_case(&synth, 0, true, true)?;
        let prepared = PreparedVolume::new(&case.name, &case.image, None, &sampling)?;
        for (name, ms) in &runs {
            reset_peak_rss();
            let t = Instant::now();
            let (_, timings) = tonno_ml::methods::segment(&prepared, &model, ms, &config)?;
            let row = SegmentRow {
                size,
                method: name.clone(),
                seconds: t.elapsed().as_secs_f64(),
                slicing_s: timings.slicing_s,
                encoder_s: timings.encoder_s,
                reconstruction_s: timings.reconstruction_s,
                peak_rss_mib: peak_rss_mib(),
            };
            eprintln!(
                "{size}^3 {name}: {:.2} s (slicing {:.2}, encoder {:.2}, reconstruction {:.2})",
                row.seconds, row.slicing_s, row.encoder_s, row.reconstruction_s
            );
            rows.push(row);
        }
    }
    let report = serde_json::json!({
        "bench": "segment",
        "device": a.device.to_string(),
        "threads": rayon::current_num_threads(),
        "encoder": kind.to_string(),
        "model": a.model.as_ref().map(|p| p.display().to_string()),
        "directions": a.directions,
        "slices": a.slices,
        "pixels": pixels,
        "batch": batch,
        "rows": rows,
    });
    outln!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}
