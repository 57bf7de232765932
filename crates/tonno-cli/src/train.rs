//! `tonno train`: fit a slice encoder to image-level labels.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use indicatif::ProgressBar;
use tonno_core::io::dataset::LabelSource;
use tonno_ml::config::TrainConfig;
use tonno_ml::device::DeviceChoice;
use tonno_ml::encoder::EncoderKind;
use tonno_ml::run::EpochMetrics;
use tonno_ml::train::{DataSpec, RunMode, TrainObserver, train};

use crate::progress;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Dataset folder (Decathlon layout, or images with labels.csv).
    #[arg(long)]
    data: PathBuf,
    /// Run folder to write (weights, config.toml, metrics.json, train.log, checkpoints).
    #[arg(long)]
    out: PathBuf,
    /// CSV of `case,label` (default: DATA/labels.csv).
    #[arg(long, conflicts_with = "labels_from_masks")]
    labels: Option<PathBuf>,
    /// Label each case `any(mask > 0)` from its mask (for benchmarks).
    #[arg(long)]
    labels_from_masks: bool,
    /// Encoder: cnn (fast on CPU), resnet18, resnet34.
    #[arg(long)]
    encoder: Option<EncoderKind>,
    /// Slice size P in pixels (default: 64 for cnn, 128 for the ResNets).
    #[arg(long)]
    slice_size: Option<usize>,
    /// Start a ResNet from torchvision/timm weights (.pt, .pth or .safetensors).
    #[arg(long)]
    pretrained: Option<PathBuf>,
    /// Number of epochs (default: fitted to --max-minutes after the first
    /// epoch, else 44).
    #[arg(long)]
    epochs: Option<usize>,
    /// Optimiser steps per epoch.
    #[arg(long)]
    steps_per_epoch: Option<usize>,
    /// Slices per batch (half from each label).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Stop (after validating and checkpointing) once this many minutes have passed.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Seed of the split, the initial weights and every batch.
    #[arg(long)]
    seed: Option<u64>,
    /// cpu, torch, torch-cuda[:N], vulkan or cuda.
    #[arg(long)]
    device: Option<DeviceChoice>,
    /// TOML file with any training setting; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint, with the settings
    /// stored in its config.toml; only --max-minutes may be given again
    /// (--data and the labels must be those it was trained on).
    #[arg(long, conflicts_with_all = [
        "force", "config", "encoder", "slice_size", "pretrained", "epochs",
        "steps_per_epoch", "batch_size", "lr", "seed", "device",
    ])]
    resume: bool,
    /// Replace an earlier run in --out.
    #[arg(long)]
    force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

struct Bar(ProgressBar);

impl TrainObserver for Bar {
    fn start(&self, total: u64, done: u64) {
        self.0.set_length(total);
        self.0.set_position(done);
    }
    fn step(&self, step: u64, loss: f64, rate: f64) {
        self.0.set_position(step);
        self.0
            .set_message(format!("loss {loss:.3} {rate:.0} slices/s"));
    }
    fn epoch(&self, m: &EpochMetrics) {
        let f = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{x:.3}"));
        self.0.println(format!(
            "epoch {:>3}: loss {:.4}, val AUROC max {} mean {} gap {}{}, {:.0} slices/s",
            m.epoch,
            m.train_loss,
            f(m.val_auroc_max),
            f(m.val_auroc_mean),
            f(m.val_auroc_gap),
            if m.best { " (best)" } else { "" },
            m.train_slices_per_s
        ));
        tracing::info!(epoch = m.epoch, loss = m.train_loss, "epoch done");
    }
    fn message(&self, text: &str) {
        self.0.println(text);
        tracing::info!("{text}");
    }
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let mut config = match &a.config {
        Some(p) => TrainConfig::read(p)?,
        None => TrainConfig::default(),
    };
    if let Some(e) = a.encoder {
        config.encoder = e;
        if a.slice_size.is_none() {
            config.sampling.slice_size = e.default_slice_size();
        }
    }
    if let Some(p) = a.slice_size {
        config.sampling.slice_size = p;
    }
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = a.$field { config.$field = v; } )* };
    }
    set!(epochs, steps_per_epoch, batch_size, lr, seed, device);
    if a.epochs.is_some() {
        // An explicit number of epochs is kept, budget or not.
        config.fit_epochs_to_budget = false;
    }
    if a.pretrained.is_some() {
        config.pretrained = a.pretrained.clone();
    }
    if a.max_minutes.is_some() {
        config.max_minutes = a.max_minutes;
    }
    let labels = if a.labels_from_masks {
        LabelSource::Masks
    } else if let Some(csv) = &a.labels {
        LabelSource::Csv(csv.clone())
    } else {
        LabelSource::Default
    };
    let mode = if a.resume {
        RunMode::Resume
    } else if a.force {
        RunMode::Force
    } else {
        RunMode::New
    };
    let bar = progress::bar(1, "train");
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} steps {msg} ({elapsed} < {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix("train");
    let summary = train(
        &DataSpec {
            root: a.data.clone(),
            labels,
        },
        &a.out,
        config,
        mode,
        &Bar(bar.clone()),
    )
    .with_context(|| format!("training into {}", a.out.display()))?;
    bar.finish_and_clear();
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        outln!(
            "trained {} epoch(s) in {:.0}s (stopped: {}); best epoch {} with validation AUROC {:.3}; weights in {}",
            summary.epochs,
            summary.seconds,
            summary.stopped,
            summary.best_epoch,
            summary.best_score,
            a.out.join("model.bpk").display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
