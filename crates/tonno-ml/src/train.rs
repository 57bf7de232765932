//! Training a 2D slice encoder from volume-level labels (docs/METHOD.md
//! section 4): balanced random slices labelled with their volume's label, BCE with
//! logits, AdamW with warm-up and cosine decay, validation by volume-level
//! AUROC over a fixed slice set, a checkpoint every epoch, resume, best-model
//! selection and early stopping.
//!
//! Slice sampling runs on its own thread, a few batches ahead of the
//! optimiser, so that it is never the bottleneck (see `sampler_wait_s` in
//! `metrics.json`).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::{BinaryCrossEntropyLoss, BinaryCrossEntropyLossConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use rayon::prelude::*;
use serde::Serialize;
use tonno_core::io::dataset::{Case, Dataset, LabelSource, Split};
use tonno_core::io::read_image;
use tonno_core::metrics::auroc;
use tonno_core::rng::Rng;
use tonno_core::sampler::{Batch, PreparedVolume, SamplingConfig, SliceSampler};

use crate::average::WeightAverage;
use crate::config::{Objective, TrainConfig};
use crate::decision::{Aggregate, Decision, fixed_slices, max_and_mean, youden_threshold};
use crate::encoder::{Encoder, EncoderConfig};
use crate::error::{Error, Result};
use crate::infer;
use crate::run::{
    CheckpointState, DataRecord, EpochMetrics, RunConfig, RunDir, load_weights, save_weights,
};

/// The shares of a time budget after which the schedule is fitted again,
/// each time on the epochs since the last fit.
const REFIT_AT: [f64; 2] = [0.1, 0.25];

/// Where the training data is.
#[derive(Debug, Clone)]
pub struct DataSpec {
    pub root: PathBuf,
    pub labels: LabelSource,
}

/// How to treat an existing run folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// The folder must not exist or be empty.
    New,
    /// Replace the files of an earlier run in the folder.
    Force,
    /// Continue from the folder's last checkpoint (its config wins).
    Resume,
}

/// What a run ended with.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub run: PathBuf,
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_score: f64,
    pub stopped: &'static str,
    pub resumed_from_epoch: Option<usize>,
    pub seconds: f64,
    /// The best model's volume-level AUROC (max slice logit) on the labelled
    /// cases of the test split, when there are both labels there.
    pub test_auroc: Option<f64>,
    /// The volume-level decision threshold stored in `RUN/decision.json`.
    pub decision_threshold: Option<f64>,
}

/// Progress reports for a front end.
pub trait TrainObserver: Sync {
    /// Once the data are loaded: total steps of the run and steps already done.
    fn start(&self, _total_steps: u64, _done_steps: u64) {}
    fn step(&self, _step: u64, _loss: f64, _slices_per_s: f64) {}
    fn epoch(&self, _m: &EpochMetrics) {}
    fn message(&self, _text: &str) {}
}

/// An observer that says nothing.
#[derive(Debug, Default)]
pub struct Silent;
impl TrainObserver for Silent {}

/// Loaded, split and prepared data.
struct Prepared {
    train: Vec<PreparedVolume>,
    val: Vec<PreparedVolume>,
    /// Labelled cases of the test split (`imagesTs`): scored once at the
    /// end, never used for training or selection.
    test: Vec<PreparedVolume>,
    record: DataRecord,
    channels: usize,
    /// The subjects held out for validation, when the labels name subjects.
    val_subjects: Option<Vec<String>>,
}

fn labels_name(l: &LabelSource) -> String {
    match l {
        LabelSource::Default => "labels.csv".into(),
        LabelSource::Csv(p) => p.display().to_string(),
        LabelSource::Masks => "masks".into(),
    }
}

/// Split of labelled training cases into training and validation, seeded:
/// by subject when every case names one (whole subjects are held out, so
/// that validation measures what a new patient would see), else stratified
/// by label. With `val_max_cases`, validation keeps at most that many
/// ([`cap_validation`]).
fn split_cases<'a>(
    cases: &[&'a Case],
    val_fraction: f64,
    val_max_cases: Option<usize>,
    seed: u64,
    root: &Path,
) -> Result<(Vec<&'a Case>, Vec<&'a Case>)> {
    let mut rng = Rng::fork(seed, 0x5eed_5911);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    let mut subjects: Vec<&str> = cases.iter().filter_map(|c| c.subject.as_deref()).collect();
    subjects.sort_unstable();
    subjects.dedup();
    if subjects.len() >= 2 && cases.iter().all(|c| c.subject.is_some()) {
        rng.shuffle(&mut subjects);
        let want = (cases.len() as f64 * val_fraction).round().max(1.0) as usize;
        let mut held = Vec::new();
        for s in &subjects[..subjects.len() - 1] {
            if val.len() >= want {
                break;
            }
            held.push(*s);
            val.extend(
                cases
                    .iter()
                    .copied()
                    .filter(|c| c.subject.as_deref() == Some(s)),
            );
        }
        train.extend(
            cases
                .iter()
                .copied()
                .filter(|c| !held.contains(&c.subject.as_deref().unwrap_or(""))),
        );
        // The held-out subjects' other scans are left unused: training on
        // them would show the encoder the heads it is validated on.
        if let Some(max) = val_max_cases {
            val = cap_validation(val, max, |c| c.subject.clone().unwrap_or_default()).0;
        }
        for (name, part) in [("training", &train), ("validation", &val)] {
            let pos = part.iter().filter(|c| c.label == Some(true)).count();
            if pos == 0 || pos == part.len() {
                return Err(Error::Data {
                    path: root.to_path_buf(),
                    reason: format!(
                        "holding out subjects {held:?} for validation leaves the {name} cases with one label only; \
                         each label needs cases of several subjects (or drop the labels CSV's subject column)"
                    ),
                });
            }
        }
    } else {
        for label in [true, false] {
            let mut group: Vec<&Case> = cases
                .iter()
                .copied()
                .filter(|c| c.label == Some(label))
                .collect();
            rng.shuffle(&mut group);
            let n_val =
                ((group.len() as f64 * val_fraction).round() as usize).clamp(1, group.len() - 1);
            val.extend(group.drain(..n_val));
            train.extend(group);
        }
        if let Some(max) = val_max_cases.filter(|&m| val.len() > m) {
            let rest;
            (val, rest) = cap_validation(val, max, |c| format!("{:?}", c.label));
            train.extend(rest);
        }
    }
    train.sort_by(|a, b| a.name.cmp(&b.name));
    val.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((train, val))
}

/// At most `max` of the validation cases `val`: the same number from each
/// group (held-out subject, or label), the first of each by case name; and
/// the cases left out. On a
/// large set, validating every case each epoch costs more than the
/// training steps between validations; a fixed, named choice keeps the
/// validation set the same from run to run and seed to seed.
fn cap_validation<'a>(
    val: Vec<&'a Case>,
    max: usize,
    group: impl Fn(&Case) -> String,
) -> (Vec<&'a Case>, Vec<&'a Case>) {
    let mut groups: std::collections::BTreeMap<String, Vec<&'a Case>> = Default::default();
    for c in val {
        groups.entry(group(c)).or_default().push(c);
    }
    let mut queues: Vec<std::vec::IntoIter<&'a Case>> = groups
        .into_values()
        .map(|mut g| {
            g.sort_by(|a, b| a.name.cmp(&b.name));
            g.into_iter()
        })
        .collect();
    let mut kept = Vec::with_capacity(max);
    while kept.len() < max {
        let before = kept.len();
        for q in &mut queues {
            if kept.len() < max
                && let Some(c) = q.next()
            {
                kept.push(c);
            }
        }
        if kept.len() == before {
            break;
        }
    }
    (kept, queues.into_iter().flatten().collect())
}

fn prepare(
    data: &DataSpec,
    config: &TrainConfig,
    fixed: Option<&DataRecord>,
    observer: &dyn TrainObserver,
) -> Result<Prepared> {
    let ds = Dataset::open(&data.root, &data.labels)?;
    let labelled: Vec<&Case> = ds
        .split(Split::Train)
        .filter(|c| c.label.is_some())
        .collect();
    let n_pos = labelled.iter().filter(|c| c.label == Some(true)).count();
    let n_neg = labelled.len() - n_pos;
    if n_pos < 2 || n_neg < 2 {
        return Err(Error::Data {
            path: data.root.clone(),
            reason: format!(
                "{n_pos} positive and {n_neg} negative labelled training cases; training needs at least 2 of each (one to train, one to validate){}",
                if labelled.is_empty() {
                    " (no labels: give --labels CSV or --labels-from-masks)"
                } else {
                    ""
                }
            ),
        });
    }
    let (train, val): (Vec<&Case>, Vec<&Case>) = match fixed {
        Some(rec) => stored_split(data, rec, &labelled)?,
        None => split_cases(
            &labelled,
            config.val_fraction,
            config.val_max_cases,
            config.seed,
            &data.root,
        )?,
    };
    observer.message(&format!(
        "loading {} training and {} validation volumes from {}",
        train.len(),
        val.len(),
        data.root.display()
    ));
    let load = |cases: &[&Case]| load_volumes(cases, &config.sampling);
    let train_v = load(&train)?;
    let val_v = load(&val)?;
    let test: Vec<&Case> = ds
        .split(Split::Test)
        .filter(|c| c.label.is_some())
        .collect();
    let both_labels =
        test.iter().any(|c| c.label == Some(true)) && test.iter().any(|c| c.label == Some(false));
    let test_v = if both_labels {
        load(&test)?
    } else {
        Vec::new()
    };
    let channels = train_v[0].volume.channels();
    if let Some(v) = train_v
        .iter()
        .chain(&val_v)
        .find(|v| v.volume.channels() != channels)
    {
        return Err(Error::Data {
            path: data.root.clone(),
            reason: format!(
                "{} has {} channel(s) but {} has {channels}: every volume needs the same channels",
                v.name,
                v.volume.channels(),
                train_v[0].name
            ),
        });
    }
    Ok(Prepared {
        train: train_v,
        val: val_v,
        test: test_v,
        record: DataRecord {
            root: data.root.clone(),
            labels: labels_name(&data.labels),
            train_cases: train.iter().map(|c| c.name.clone()).collect(),
            val_cases: val.iter().map(|c| c.name.clone()).collect(),
        },
        channels,
        val_subjects: held_out_subjects(&val),
    })
}

/// The sorted subjects of `val` when every case names one.
fn held_out_subjects(val: &[&Case]) -> Option<Vec<String>> {
    let mut subjects = val
        .iter()
        .map(|c| c.subject.clone())
        .collect::<Option<Vec<String>>>()?;
    subjects.sort_unstable();
    subjects.dedup();
    Some(subjects)
}

/// The split a resumed run was trained on, from the same labels.
fn stored_split<'a>(
    data: &DataSpec,
    rec: &DataRecord,
    labelled: &[&'a Case],
) -> Result<(Vec<&'a Case>, Vec<&'a Case>)> {
    let given = labels_name(&data.labels);
    if given != rec.labels {
        return Err(Error::Data {
            path: data.root.clone(),
            reason: format!(
                "the run was trained with labels from {:?}, not {given:?}; resume with the same labels",
                rec.labels
            ),
        });
    }
    let pick = |names: &[String]| -> Result<Vec<&Case>> {
        names
            .iter()
            .map(|n| {
                labelled.iter().copied().find(|c| &c.name == n).ok_or_else(|| Error::Data {
                    path: data.root.clone(),
                    reason: format!("the run was trained with case {n:?}, which is no longer a labelled case here"),
                })
            })
            .collect()
    };
    Ok((pick(&rec.train_cases)?, pick(&rec.val_cases)?))
}

/// Reads and prepares `cases` in parallel; a volume that cannot be sliced
/// (no foreground, say) is an error naming its file.
fn load_volumes(cases: &[&Case], sampling: &SamplingConfig) -> Result<Vec<PreparedVolume>> {
    cases
        .par_iter()
        .map(|c| {
            let img = read_image(&c.image)?;
            PreparedVolume::new(&c.name, &img.volume, c.label, sampling).map_err(|e| match e {
                tonno_core::Error::Invalid { name, reason } => Error::Data {
                    path: c.image.clone(),
                    reason: format!("{name}: {reason}"),
                },
                other => other.into(),
            })
        })
        .collect()
}

/// The fixed validation slices of each volume, `(K * S, C, P, P)`: `K`
/// directions, `S` offsets where the slices cut the foreground.
fn validation_slices(val: &[PreparedVolume], config: &TrainConfig) -> Result<Vec<Vec<f32>>> {
    let p = config.sampling.slice_size;
    val.par_iter()
        .map(|v| fixed_slices(v, config.val_directions, config.val_slices, p))
        .collect()
}

/// Each volume's max and mean slice logit.
fn volume_scores(
    model: &Encoder,
    device: &Device,
    slices: &[Vec<f32>],
    channels: usize,
    p: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let valid = model.valid();
    let mut maxes = Vec::new();
    let mut means = Vec::new();
    for s in slices {
        let (max, mean) = max_and_mean(&infer::logits(&valid, device, s, channels, p, 256)?);
        maxes.push(max);
        means.push(mean);
    }
    Ok((maxes, means))
}

/// Volume-level AUROC of the max, the mean and the max-minus-mean slice logits.
fn validate(
    model: &Encoder,
    device: &Device,
    slices: &[Vec<f32>],
    val: &[PreparedVolume],
    channels: usize,
    p: usize,
) -> Result<ValAurocs> {
    let (maxes, means) = volume_scores(model, device, slices, channels, p)?;
    let gaps: Vec<f64> = maxes
        .iter()
        .zip(&means)
        .map(|(&max, &mean)| Aggregate::Gap.of_max_and_mean(max, mean))
        .collect();
    let labels: Vec<bool> = val.iter().map(|v| v.label == Some(true)).collect();
    Ok(ValAurocs {
        max: auroc(&maxes, &labels),
        mean: auroc(&means, &labels),
        gap: auroc(&gaps, &labels),
    })
}

/// One epoch's validation AUROC by each scan score.
struct ValAurocs {
    max: Option<f64>,
    mean: Option<f64>,
    gap: Option<f64>,
}

fn check_writable(run: &Path) -> Result<()> {
    std::fs::create_dir_all(run).map_err(|source| Error::Write {
        path: run.to_path_buf(),
        source,
    })?;
    let probe = run.join(format!(".write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|source| Error::Write {
        path: run.to_path_buf(),
        source,
    })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Trains an encoder and writes the run folder. See the module docs.
pub fn train(
    data: &DataSpec,
    run: &Path,
    config: TrainConfig,
    mode: RunMode,
    observer: &dyn TrainObserver,
) -> Result<TrainSummary> {
    let dir = RunDir::new(run);
    let (config, fixed, resume_state) = open_run(&dir, config, mode)?;
    config.validate()?;
    check_writable(run)?;
    let started = Instant::now();
    let prepared = prepare(data, &config, fixed.as_ref(), observer)?;
    let encoder_cfg = EncoderConfig {
        kind: config.encoder,
        in_channels: prepared.channels,
        classes: 1,
        cnn_width: config.cnn_width,
        pooling: config.pooling,
    };
    let run_config = RunConfig {
        tonno_version: env!("CARGO_PKG_VERSION").to_string(),
        encoder: encoder_cfg.clone(),
        train: config.clone(),
        data: prepared.record.clone(),
    };
    let device = config.device.open()?;
    let ad = device.clone().autodiff();
    let model = crate::encoder::init_seeded(&ad, config.seed, || match &config.pretrained {
        Some(path) if resume_state.is_none() => {
            crate::encoder::pretrained::load_torchvision(&encoder_cfg, path, &ad)
        }
        _ => encoder_cfg.init(&ad),
    })?;
    let mut t = Trainer {
        model: Slot::Ready(model),
        average: (config.weight_average > 0.0).then(|| WeightAverage::new(config.weight_average)),
        stepper: TrainStep::new(&config, &ad),
        state: CheckpointState {
            epoch: 0,
            step: 0,
            best_score: f64::NEG_INFINITY,
            best_epoch: 0,
            epochs_since_best: 0,
            seconds: 0.0,
            folder: String::new(),
            average_updates: 0,
        },
        history: Vec::new(),
        budget: config.max_minutes.map(|m| m * 60.0),
        config,
        run_config,
        dir,
        device,
        ad,
        started,
        observer,
        resumed: resume_state.is_some(),
    };
    match &resume_state {
        Some(s) => t.restore(s)?,
        None => {
            t.dir.write_config(&t.run_config)?;
            t.dir.log_line(&format!(
                "training {} on {} ({} train / {} val volumes, {} channel(s)), seed {}{}",
                t.config.encoder,
                data.root.display(),
                prepared.train.len(),
                prepared.val.len(),
                prepared.channels,
                t.config.seed,
                prepared
                    .val_subjects
                    .as_ref()
                    .map(|s| format!("; validation subjects {}", s.join(", ")))
                    .unwrap_or_default()
            ))?;
        }
    }
    let val = Validation {
        slices: validation_slices(&prepared.val, &t.config)?,
        volumes: &prepared.val,
        channels: prepared.channels,
    };
    let sampler = SliceSampler::new(prepared.train, t.config.sampling.clone())?;
    let stopped = t.run_epochs(&sampler, &val)?;
    t.finish(stopped, &val, &prepared.test, resume_state.map(|s| s.epoch))
}

/// The settings, the fixed split and the checkpoint state to start from:
/// a resumed run's own settings (only the time budget is this
/// invocation's), a replaced run's folder emptied of what a run writes, a
/// new run's folder refused when it is not empty.
fn open_run(
    dir: &RunDir,
    config: TrainConfig,
    mode: RunMode,
) -> Result<(TrainConfig, Option<DataRecord>, Option<CheckpointState>)> {
    let run = &dir.root;
    match mode {
        RunMode::Resume => {
            let stored = dir.read_config().map_err(|e| Error::Run {
                path: run.clone(),
                reason: format!("cannot resume: {e}"),
            })?;
            let mut train_cfg = stored.train;
            train_cfg.max_minutes = config.max_minutes;
            Ok((train_cfg, Some(stored.data), dir.read_checkpoint_state()?))
        }
        RunMode::Force => {
            for p in dir.owned_paths() {
                let removed = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else if p.symlink_metadata().is_ok() {
                    std::fs::remove_file(&p)
                } else {
                    Ok(())
                };
                // Training over a half-removed run would mix two runs' files.
                removed.map_err(|source| Error::Write {
                    path: p.clone(),
                    source,
                })?;
            }
            Ok((config, None, None))
        }
        RunMode::New => {
            let non_empty = run.is_dir()
                && std::fs::read_dir(run)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false);
            if non_empty || run.is_file() {
                return Err(Error::Run {
                    path: run.clone(),
                    reason: "already exists; pass --resume to continue it or --force to replace it"
                        .into(),
                });
            }
            Ok((config, None, None))
        }
    }
}

/// The fixed validation slices and the volumes they come from.
struct Validation<'a> {
    slices: Vec<Vec<f32>>,
    volumes: &'a [PreparedVolume],
    channels: usize,
}

/// A run in progress: the model and optimiser, the state a checkpoint
/// saves, and where it all goes.
struct Trainer<'a> {
    model: Slot,
    /// The moving average of the weights that validation sees and the
    /// saved model holds; `None` when `weight_average` is 0.
    average: Option<WeightAverage>,
    stepper: TrainStep,
    state: CheckpointState,
    history: Vec<EpochMetrics>,
    config: TrainConfig,
    run_config: RunConfig,
    dir: RunDir,
    /// Inference device, and its autodiff twin for training.
    device: Device,
    ad: Device,
    /// When this invocation started (a resumed run adds `state.seconds`).
    started: Instant,
    /// Seconds for the whole run, over all invocations.
    budget: Option<f64>,
    observer: &'a dyn TrainObserver,
    resumed: bool,
}

/// The model, moved out while an optimiser step owns it.
// One per run: its inline size does not matter.
#[allow(clippy::large_enum_variant)]
enum Slot {
    Ready(Encoder),
    Stepping,
}

impl Slot {
    fn get(&self) -> &Encoder {
        match self {
            Self::Ready(m) => m,
            Self::Stepping => unreachable!("the model is back after every step"),
        }
    }

    fn take(self) -> Encoder {
        match self {
            Self::Ready(m) => m,
            Self::Stepping => unreachable!("the model is back after every step"),
        }
    }
}

/// What one epoch's optimiser steps did.
struct Steps {
    loss_sum: f64,
    steps: usize,
    sampler_wait_s: f64,
    out_of_time: bool,
}

impl Trainer<'_> {
    /// The run's seconds so far, over all invocations.
    fn seconds(&self) -> f64 {
        self.state.seconds + self.started.elapsed().as_secs_f64()
    }

    /// Loads the last checkpoint: weights, optimiser state and history.
    fn restore(&mut self, s: &CheckpointState) -> Result<()> {
        let folder = self.dir.root.join(&s.folder);
        self.model = Slot::Ready(load_weights(
            &self.run_config.encoder,
            &folder.join("model.bpk"),
            &self.ad,
        )?);
        let optimizer = folder.join("optimizer.bpk");
        self.stepper.optim =
            self.stepper
                .optim
                .clone()
                .load(&optimizer)
                .map_err(|e| Error::Weights {
                    path: optimizer.clone(),
                    reason: e.to_string(),
                })?;
        if let Some(average) = &mut self.average {
            let path = folder.join(RunDir::AVERAGE);
            // A checkpoint written without an average starts a new one.
            if path.is_file() && s.average_updates > 0 {
                let model = load_weights(&self.run_config.encoder, &path, &self.device)?;
                *average =
                    WeightAverage::resume(self.config.weight_average, s.average_updates, &model);
            }
        }
        self.state = s.clone();
        self.history = self.dir.read_history()?;
        self.history.truncate(s.epoch);
        let msg = format!("resumed after epoch {} (step {})", s.epoch, s.step);
        self.observer.message(&msg);
        self.dir.log_line(&msg)
    }

    /// Epochs until the schedule, the budget or the patience ends them; the
    /// slice sampler runs on its own thread, a few batches ahead.
    fn run_epochs(&mut self, sampler: &SliceSampler, val: &Validation<'_>) -> Result<&'static str> {
        let total = (self.config.epochs * self.config.steps_per_epoch) as u64;
        self.observer.start(total, self.state.step);
        let (first_step, seed, bs) = (self.state.step, self.config.seed, self.config.batch_size);
        let objective = self.config.objective;
        std::thread::scope(|scope| {
            let (tx, rx) = sync_channel(4);
            scope.spawn(move || {
                // Until the receiver is dropped: the schedule's length may be
                // fitted to the budget after the first epoch.
                for step in first_step.. {
                    let batch = match objective {
                        Objective::Slices => sampler.batch(seed, step, bs),
                        Objective::Mil { bag, .. } => sampler.bags(seed, step, bs / bag, bag),
                    };
                    if tx.send(batch).is_err() {
                        break;
                    }
                }
            });
            let fitting = !self.resumed && self.config.fit_epochs_to_budget;
            // The epochs since the last fit, timed for the next one, and
            // which of `REFIT_AT` comes next.
            let mut refit_from: Option<(Instant, usize)> = None;
            let mut next_refit = 0;
            // Returning drops the receiver, which stops the sampling thread.
            while self.state.epoch < self.config.epochs {
                let epoch_start = Instant::now();
                let steps = self.steps(&rx, epoch_start)?;
                self.end_epoch(&steps, epoch_start, val)?;
                if fitting && self.state.epoch == 1 {
                    self.fit_schedule(epoch_start.elapsed().as_secs_f64(), "the first epoch")?;
                    refit_from = Some((Instant::now(), 1));
                } else if let Some((since, after)) = refit_from
                    && let Some(&at) = REFIT_AT.get(next_refit)
                    && self.budget.is_some_and(|b| self.seconds() >= at * b)
                {
                    // The first epochs run slower than the rest (measured:
                    // 640 slices/s in the first, 780-850 in the next four,
                    // 880-940 from the tenth on), so a schedule fitted on
                    // the first alone ended 5 minutes early in 20; the later
                    // fits come while the learning rate has barely decayed.
                    let done = self.state.epoch - after;
                    let per_epoch = since.elapsed().as_secs_f64() / done as f64;
                    let from = format!("epochs {}-{}", after + 1, self.state.epoch);
                    self.fit_schedule(per_epoch, &from)?;
                    refit_from = Some((Instant::now(), self.state.epoch));
                    next_refit += 1;
                }
                if steps.out_of_time {
                    return Ok("time budget");
                }
                if self
                    .config
                    .patience
                    .is_some_and(|p| self.state.epochs_since_best >= p)
                {
                    return Ok("early stop");
                }
            }
            Ok("epochs")
        })
    }

    /// One epoch's optimiser steps (fewer when the budget runs out).
    fn steps(&mut self, rx: &Receiver<Batch>, epoch_start: Instant) -> Result<Steps> {
        let bs = self.config.batch_size;
        let mut done = Steps {
            loss_sum: 0.0,
            steps: 0,
            sampler_wait_s: 0.0,
            out_of_time: false,
        };
        for _ in 0..self.config.steps_per_epoch {
            let t_wait = Instant::now();
            let batch = rx
                .recv()
                .map_err(|_| Error::invalid("sampler", "the sampling thread stopped"))?;
            done.sampler_wait_s += t_wait.elapsed().as_secs_f64();
            let lr = self.config.lr_at(self.state.step);
            // Moved, not cloned: a second handle on the weights would keep
            // burn from updating them in place.
            let model = std::mem::replace(&mut self.model, Slot::Stepping).take();
            let (model, l) = self.stepper.step(model, batch, lr, &self.ad);
            if let Some(average) = &mut self.average {
                average.update(&model.valid());
            }
            self.model = Slot::Ready(model);
            if !l.is_finite() {
                return Err(Error::invalid(
                    "training",
                    format!(
                        "the loss became {l} at step {}; lower --lr",
                        self.state.step
                    ),
                ));
            }
            self.state.step += 1;
            done.loss_sum += l;
            done.steps += 1;
            self.observer.step(
                self.state.step,
                l,
                (done.steps * bs) as f64 / epoch_start.elapsed().as_secs_f64(),
            );
            if self.budget.is_some_and(|b| self.seconds() > b) {
                done.out_of_time = true;
                break;
            }
        }
        Ok(done)
    }

    /// The model validation scores and the run saves: the weight average
    /// when there is one, else the last step's weights (inference copies).
    fn eval_model(&self) -> Encoder {
        let last = self.model.get().valid();
        match &self.average {
            Some(average) => average.apply(last),
            None => last,
        }
    }

    /// Validation, model selection, the checkpoint, `metrics.json` and the log.
    fn end_epoch(
        &mut self,
        steps: &Steps,
        epoch_start: Instant,
        val: &Validation<'_>,
    ) -> Result<()> {
        let train_secs = epoch_start.elapsed().as_secs_f64();
        let (c, p) = (val.channels, self.config.sampling.slice_size);
        let eval = self.eval_model();
        let au = validate(&eval, &self.device, &val.slices, val.volumes, c, p)?;
        let auroc = self.config.selection.pick(au.max, au.mean, au.gap);
        let state = &mut self.state;
        state.epoch += 1;
        let score = selection_score(&self.history, auroc, state.epoch, &self.config);
        let best = score.is_some_and(|s| s > state.best_score);
        if let Some(score) = score.filter(|_| best) {
            state.best_score = score;
            state.best_epoch = state.epoch;
            state.epochs_since_best = 0;
            save_weights(&eval, &self.dir.model())?;
        } else {
            state.epochs_since_best += 1;
        }
        let bs = self.config.batch_size;
        let m = EpochMetrics {
            epoch: state.epoch,
            step: state.step,
            lr: self.config.lr_at(state.step.saturating_sub(1)),
            train_loss: steps.loss_sum / steps.steps.max(1) as f64,
            train_slices_per_s: (steps.steps * bs) as f64 / train_secs,
            sampler_wait_s: steps.sampler_wait_s,
            val_auroc_max: au.max,
            val_auroc_mean: au.mean,
            val_auroc_gap: au.gap,
            val_score: score,
            best,
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        self.history.push(m.clone());
        let saved = CheckpointState {
            seconds: self.seconds(),
            folder: RunDir::checkpoint_folder(self.state.epoch),
            average_updates: self.average.as_ref().map_or(0, WeightAverage::updates),
            ..self.state.clone()
        };
        self.dir.save_checkpoint(
            self.model.get(),
            &self.stepper.optim,
            self.average.is_some().then_some(&eval),
            &saved,
        )?;
        self.dir.write_text(
            &self.dir.metrics(),
            &serde_json::to_string_pretty(&self.history).expect("metrics serialise"),
        )?;
        self.dir.log_line(&format!(
            "epoch {:>3}  step {:>6}  loss {:.4}  val AUROC max {}  mean {}  gap {}{}  {:.0} slices/s",
            m.epoch,
            m.step,
            m.train_loss,
            fmt_opt(m.val_auroc_max),
            fmt_opt(m.val_auroc_mean),
            fmt_opt(m.val_auroc_gap),
            if best { "  *best*" } else { "" },
            m.train_slices_per_s
        ))?;
        self.observer.epoch(&m);
        Ok(())
    }

    /// In a budgeted run, the number of epochs that fits the budget at
    /// `per_epoch` seconds each, after the first epoch and again at each of
    /// `REFIT_AT`; written to `config.toml` so a resumed run keeps it.
    fn fit_schedule(&mut self, per_epoch: f64, timed_on: &str) -> Result<()> {
        let Some(b) = self.budget else {
            return Ok(());
        };
        self.config.epochs = fitted_epochs(self.state.epoch, b - self.seconds(), per_epoch);
        self.config.fit_epochs_to_budget = false;
        self.run_config.train = self.config.clone();
        self.dir.write_config(&self.run_config)?;
        let msg = format!(
            "schedule fitted to the {:.1}-minute budget: {} epochs ({:.1} s per epoch, timed on {timed_on})",
            b / 60.0,
            self.config.epochs,
            per_epoch
        );
        self.dir.log_line(&msg)?;
        self.observer.message(&msg);
        let total = (self.config.epochs * self.config.steps_per_epoch) as u64;
        self.observer.start(total, self.state.step);
        Ok(())
    }

    /// The best model (the last epoch's when none could be selected), its
    /// decision threshold and its test AUROC, and the summary.
    fn finish(
        mut self,
        stopped: &'static str,
        val: &Validation<'_>,
        test: &[PreparedVolume],
        resumed_from_epoch: Option<usize>,
    ) -> Result<TrainSummary> {
        let (dir, state) = (&self.dir, &mut self.state);
        if state.best_epoch == 0 {
            let folder = dir.root.join(RunDir::checkpoint_folder(state.epoch));
            // What validation scored: the average when the run keeps one.
            let path = match self.average {
                Some(_) => folder.join(RunDir::AVERAGE),
                None => folder.join("model.bpk"),
            };
            std::fs::copy(&path, dir.model()).map_err(|source| Error::Write {
                path: dir.model(),
                source,
            })?;
            state.best_epoch = state.epoch;
            state.best_score = self.history.last().map_or(0.5, |m| {
                self.config
                    .selection
                    .pick(m.val_auroc_max, m.val_auroc_mean, m.val_auroc_gap)
            });
            dir.log_line(&format!(
                "no epoch after the first {:.0}% of the schedule was reached; model.bpk is the last epoch's",
                self.config.selection_start * 100.0
            ))?;
        }
        let best = load_weights(&self.run_config.encoder, &dir.model(), &self.ad)?;
        let decision = store_decision(
            dir,
            &best,
            &self.device,
            &val.slices,
            val.volumes,
            &self.config,
            val.channels,
        )?;
        if let Some(d) = &decision {
            let msg = format!(
                "decision threshold {:.4} on the {} slice logit (validation: sensitivity {:.3}, specificity {:.3}), in {}",
                d.threshold,
                d.rule.aggregate.name(),
                d.val_sensitivity,
                d.val_specificity,
                dir.decision().display()
            );
            dir.log_line(&msg)?;
            self.observer.message(&msg);
        }
        let test_auroc = self.test_auroc(&best, test, val.channels)?;
        let state = &self.state;
        self.dir.log_line(&format!(
            "stopped ({stopped}) after epoch {}; best epoch {} with validation AUROC {:.4}",
            state.epoch, state.best_epoch, state.best_score
        ))?;
        Ok(TrainSummary {
            run: self.dir.root.clone(),
            epochs: state.epoch,
            best_epoch: state.best_epoch,
            best_score: state.best_score,
            stopped,
            resumed_from_epoch,
            seconds: self.seconds(),
            test_auroc,
            decision_threshold: decision.map(|d| d.threshold),
        })
    }

    /// The best model's AUROC (max slice logit) on the labelled test cases,
    /// logged; `None` without them.
    fn test_auroc(&self, best: &Encoder, test: &[PreparedVolume], c: usize) -> Result<Option<f64>> {
        if test.is_empty() {
            return Ok(None);
        }
        let p = self.config.sampling.slice_size;
        let slices = validation_slices(test, &self.config)?;
        let au = validate(best, &self.device, &slices, test, c, p)?;
        let msg = format!(
            "best model (epoch {}) on the {} labelled test cases (imagesTs; never used for training or selection): AUROC max {}  mean {}  gap {}",
            self.state.best_epoch,
            test.len(),
            fmt_opt(au.max),
            fmt_opt(au.mean),
            fmt_opt(au.gap)
        );
        self.dir.log_line(&msg)?;
        self.observer.message(&msg);
        Ok(self.config.selection.auroc(au.max, au.mean, au.gap))
    }
}

/// Chooses the volume-level decision threshold on the validation split by
/// the best model and writes it to `RUN/decision.json`; `None` (logged) when
/// the validation split cannot give one.
fn store_decision(
    dir: &RunDir,
    best: &Encoder,
    device: &Device,
    val_slices: &[Vec<f32>],
    val: &[PreparedVolume],
    config: &TrainConfig,
    channels: usize,
) -> Result<Option<Decision>> {
    let p = config.sampling.slice_size;
    let (maxes, means) = volume_scores(best, device, val_slices, channels, p)?;
    let scores: Vec<f64> = maxes
        .iter()
        .zip(&means)
        .map(|(&max, &mean)| config.selection.of_max_and_mean(max, mean))
        .collect();
    let labels: Vec<bool> = val.iter().map(|v| v.label == Some(true)).collect();
    let op = match youden_threshold(&scores, &labels) {
        Ok(op) => op,
        Err(e) => {
            dir.log_line(&format!("no decision threshold stored: {e}"))?;
            return Ok(None);
        }
    };
    let d = Decision {
        rule: config.score_rule(),
        threshold: op.threshold,
        val_cases: val.len(),
        val_auroc: auroc(&scores, &labels),
        val_sensitivity: op.sensitivity,
        val_specificity: op.specificity,
    };
    dir.write_text(
        &dir.decision(),
        &serde_json::to_string_pretty(&d).expect("decision serialises"),
    )?;
    Ok(Some(d))
}

/// The schedule's length after `done` epochs with `left` seconds of the
/// budget left at `per_epoch` seconds each: at least one more epoch.
fn fitted_epochs(done: usize, left: f64, per_epoch: f64) -> usize {
    // Epoch times vary by 10-20% over a run (measured: 15-22 s around a
    // first epoch of 18 s on 2 cores), so the schedule aims at 92% of
    // what is left: its decay then ends inside the budget, and the
    // budget's hard stop is a guard, not the end.
    let more = (left.max(0.0) * 0.92 / per_epoch).floor();
    done + (more as usize).max(1)
}

/// The selection score of `epoch` (1-based) whose selected AUROC is
/// `auroc`: the mean over it and the `selection_window - 1` epochs before
/// it, or `None` in the first `selection_start` of the schedule.
fn selection_score(
    history: &[EpochMetrics],
    auroc: f64,
    epoch: usize,
    config: &TrainConfig,
) -> Option<f64> {
    if (epoch as f64) <= config.selection_start * config.epochs as f64 {
        return None;
    }
    let earlier = history
        .iter()
        .rev()
        .take(config.selection_window - 1)
        .map(|m| {
            config
                .selection
                .pick(m.val_auroc_max, m.val_auroc_mean, m.val_auroc_gap)
        });
    let values: Vec<f64> = earlier.chain([auroc]).collect();
    Some(values.iter().sum::<f64>() / values.len() as f64)
}

/// One optimiser step of `tonno train`: forward, MIL pooling (with that
/// objective), BCE with logits, backward, AdamW with the run's weight decay.
/// The encoder benchmark runs this very step, so that it times what
/// training runs.
pub struct TrainStep {
    pub optim: burn::optim::ModuleOptimizer,
    bce: BinaryCrossEntropyLoss,
    objective: Objective,
}

impl TrainStep {
    pub fn new(config: &TrainConfig, device: &Device) -> Self {
        Self {
            optim: AdamWConfig::new()
                .with_weight_decay(config.weight_decay as f32)
                .init(),
            bce: BinaryCrossEntropyLossConfig::new()
                .with_logits(true)
                .init(device),
            objective: config.objective,
        }
    }

    /// Labels a batch of `slices` slices takes: one per slice, or one per
    /// bag for MIL.
    pub fn labels_per_batch(&self, slices: usize) -> usize {
        match self.objective {
            Objective::Slices => slices,
            Objective::Mil { bag, .. } => slices / bag,
        }
    }

    /// Steps `model` on `batch` at learning rate `lr` (on the autodiff
    /// `device`); returns the stepped model and the batch's loss.
    pub fn step(
        &mut self,
        model: Encoder,
        batch: Batch,
        lr: f64,
        device: &Device,
    ) -> (Encoder, f64) {
        let (n, c, p) = (batch.n, batch.channels, batch.pixels);
        let x = Tensor::<4>::from_data(TensorData::new(batch.slices, [n, c, p, p]), device);
        let y_i: Vec<i64> = batch.labels.iter().map(|&l| l as i64).collect();
        let y = Tensor::<2, Int>::from_data(TensorData::new(y_i, [batch.labels.len(), 1]), device);
        let logits = model.forward(x);
        let pooled = match self.objective {
            Objective::Slices => logits,
            Objective::Mil { bag, r, relative } => {
                let bias = relative.then(|| model.output_bias());
                mil_pool(logits.reshape([n / bag, bag]), r, bias)
            }
        };
        let loss = self.bce.forward(pooled, y);
        let l = loss.clone().into_scalar::<f32>() as f64;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        (self.optim.step(lr, model, grads), l)
    }
}

impl std::fmt::Debug for TrainStep {
    // burn's optimiser has no Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainStep")
            .field("objective", &self.objective)
            .finish_non_exhaustive()
    }
}

/// A MIL bag's logit from its slices' `(bags, n)` logits, `(bags, 1)`: their
/// log-sum-exp pool, or with `relative_to` (the output layer's bias) that
/// pool minus the bag's mean logit plus the bias, which adding one constant
/// to every logit of a bag leaves as it is.
fn mil_pool(logits: Tensor<2>, r: f32, relative_to: Option<Tensor<1>>) -> Tensor<2> {
    match relative_to {
        None => lse_pool(logits, r),
        Some(bias) => {
            let mean = logits.clone().mean_dim(1);
            lse_pool(logits, r) - mean + bias.reshape([1, 1])
        }
    }
}

/// Log-sum-exp pooling of `(bags, n)` logits to `(bags, 1)`:
/// `m + log(mean(exp(r (l - m)))) / r` with `m` the (detached) row maximum.
fn lse_pool(logits: Tensor<2>, r: f32) -> Tensor<2> {
    let m = logits.clone().max_dim(1).detach();
    let shifted = (logits - m.clone()) * r;
    m + shifted.exp().mean_dim(1).log() / r
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.4}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_fits_92_percent_of_the_budget_left_and_at_least_one_more_epoch() {
        // After the first epoch: 1100 s left at 10 s each fit 101 more.
        assert_eq!(fitted_epochs(1, 1100.0, 10.0), 102);
        // The second fit, on faster epochs after the first.
        assert_eq!(fitted_epochs(12, 1000.0, 8.0), 12 + 115);
        // A budget already spent (or an epoch slower than it) still runs
        // one more epoch, which the budget's hard stop then ends.
        assert_eq!(fitted_epochs(5, -3.0, 10.0), 6);
        assert_eq!(fitted_epochs(1, 5.0, 10.0), 2);
    }

    fn epoch(auroc: f64) -> EpochMetrics {
        EpochMetrics {
            epoch: 0,
            step: 0,
            lr: 0.0,
            train_loss: 0.69,
            train_slices_per_s: 0.0,
            sampler_wait_s: 0.0,
            val_auroc_max: Some(auroc),
            val_auroc_mean: Some(0.5),
            val_auroc_gap: Some(0.5),
            val_score: None,
            best: false,
            seconds: 0.0,
        }
    }

    fn pooled(logits: &[f32], bags: usize, r: f32, bias: Option<f32>) -> Vec<f32> {
        let device = Device::default();
        let l = Tensor::<2>::from_data(
            TensorData::new(logits.to_vec(), [bags, logits.len() / bags]),
            &device,
        );
        let b = bias.map(|b| Tensor::<1>::from_data(TensorData::new(vec![b], [1]), &device));
        mil_pool(l, r, b).into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn relative_mil_ignores_what_every_slice_of_a_bag_shares() {
        let bags = [0.5, -1.0, 3.0, 0.0, 2.0, 2.0, 2.0, 2.0];
        let shifted: Vec<f32> = bags
            .iter()
            .enumerate()
            .map(|(i, l)| l + if i < 4 { 7.5 } else { -3.0 })
            .collect();
        for r in [1.0, 4.0] {
            let a = pooled(&bags, 2, r, Some(-1.25));
            let b = pooled(&shifted, 2, r, Some(-1.25));
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-5, "{a:?} against {b:?}");
            }
            // A bag of equal slices stands out from nothing: the bias alone.
            assert!((a[1] + 1.25).abs() < 1e-6, "{a:?}");
            // log(mean(exp(r l))) / r, by hand, minus the mean 0.625.
            let lse = ([0.5f32, -1.0, 3.0, 0.0]
                .iter()
                .map(|l| (r * l).exp())
                .sum::<f32>()
                / 4.0)
                .ln()
                / r;
            assert!((a[0] - (lse - 0.625 - 1.25)).abs() < 1e-5, "{a:?}");
            // Without it the shift passes through.
            let a = pooled(&bags, 2, r, None);
            let b = pooled(&shifted, 2, r, None);
            assert!((b[0] - a[0] - 7.5).abs() < 1e-4 && (b[1] - a[1] + 3.0).abs() < 1e-4);
        }
    }

    #[test]
    fn a_chance_spike_is_never_selected() {
        // Seed 1 of the synthetic data: AUROC 0.944 at epoch 3 with an
        // untrained encoder, then chance, then learning from epoch 10.
        let curve = [
            0.5, 0.6, 0.944, 0.5, 0.45, 0.55, 0.5, 0.6, 0.55, 0.8, 0.88, 0.9, 0.92,
        ];
        let config = TrainConfig {
            epochs: curve.len(),
            ..TrainConfig::default()
        };
        let mut history = Vec::new();
        let mut best = (f64::NEG_INFINITY, 0);
        for (i, &a) in curve.iter().enumerate() {
            let score = selection_score(&history, a, i + 1, &config);
            if (i + 1) as f64 <= 0.25 * curve.len() as f64 {
                assert_eq!(score, None, "epoch {} is too early to select", i + 1);
            }
            if let Some(s) = score.filter(|&s| s > best.0) {
                best = (s, i + 1);
            }
            history.push(epoch(a));
        }
        assert_eq!(
            best.1,
            curve.len(),
            "selected epoch {} ({})",
            best.1,
            best.0
        );
        assert!((best.0 - (0.88 + 0.9 + 0.92) / 3.0).abs() < 1e-12);
        // A window of 1 and no start is the old rule.
        let single = TrainConfig {
            selection_window: 1,
            selection_start: 0.0,
            ..config.clone()
        };
        assert_eq!(
            selection_score(&history[..2], 0.944, 3, &single),
            Some(0.944)
        );
        let zero = TrainConfig {
            selection_window: 0,
            ..config
        };
        assert!(zero.validate().is_err());
    }

    /// 24 labelled cases of 6 subjects, 4 each (2 with a lesion, 2 without).
    fn six_subjects_of_four() -> Vec<Case> {
        (0..24)
            .map(|i| Case {
                name: format!("case_{i:03}"),
                image: PathBuf::from(format!("case_{i:03}.nii.gz")),
                mask: None,
                label: Some(i % 2 == 0),
                split: Split::Train,
                subject: Some(format!("subject_{}", (i / 2) % 6)),
            })
            .collect()
    }

    /// The same cases with no subject named.
    fn without_subjects(cases: &[Case]) -> Vec<Case> {
        cases
            .iter()
            .cloned()
            .map(|c| Case { subject: None, ..c })
            .collect()
    }

    #[test]
    fn validation_holds_out_whole_subjects_when_the_labels_name_them() {
        let cases = six_subjects_of_four();
        let refs: Vec<&Case> = cases.iter().collect();
        for seed in 0..5 {
            let (train, val) = split_cases(&refs, 0.25, None, seed, Path::new("d")).unwrap();
            assert_eq!(train.len() + val.len(), 24);
            // 6 subjects of 4 cases, a quarter (6 cases) wanted: 2 subjects.
            assert_eq!(val.len(), 8);
            let held = held_out_subjects(&val).unwrap();
            assert_eq!(held.len(), 2, "seed {seed}: {held:?}");
            assert!(held.windows(2).all(|w| w[0] < w[1]));
            for v in &val {
                assert!(
                    train.iter().all(|t| t.subject != v.subject),
                    "seed {seed}: {:?} in both splits",
                    v.subject
                );
            }
        }
        // Without subjects: the stratified split of before.
        let plain = without_subjects(&cases);
        let refs: Vec<&Case> = plain.iter().collect();
        let (_, val) = split_cases(&refs, 0.25, None, 0, Path::new("d")).unwrap();
        assert_eq!(val.iter().filter(|c| c.label == Some(true)).count(), 3);
        assert_eq!(held_out_subjects(&val), None);
    }

    #[test]
    fn a_capped_validation_keeps_the_first_cases_of_each_held_out_subject_and_never_trains_on_the_rest()
     {
        let cases = six_subjects_of_four();
        let refs: Vec<&Case> = cases.iter().collect();
        let names = |v: &[&Case]| v.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        for seed in 0..5 {
            let (train, val) = split_cases(&refs, 0.25, None, seed, Path::new("d")).unwrap();
            let (ctrain, cval) = split_cases(&refs, 0.25, Some(4), seed, Path::new("d")).unwrap();
            assert_eq!(
                held_out_subjects(&cval),
                held_out_subjects(&val),
                "seed {seed}"
            );
            assert_eq!(names(&ctrain), names(&train), "seed {seed}");
            // The first two of each held-out subject by name: one of each label.
            let mut want: Vec<String> = held_out_subjects(&val)
                .unwrap()
                .iter()
                .flat_map(|s| {
                    let mut of: Vec<&&Case> = val
                        .iter()
                        .filter(|c| c.subject.as_deref() == Some(s.as_str()))
                        .collect();
                    of.sort_by(|a, b| a.name.cmp(&b.name));
                    of.into_iter().take(2).map(|c| c.name.clone())
                })
                .collect();
            want.sort();
            assert_eq!(names(&cval), want, "seed {seed}");
            assert_eq!(cval.iter().filter(|c| c.label == Some(true)).count(), 2);
        }
        // Without subjects: the same number of each label, and the cases
        // left out of validation train.
        let plain = without_subjects(&cases);
        let refs: Vec<&Case> = plain.iter().collect();
        let (_, val) = split_cases(&refs, 0.25, None, 0, Path::new("d")).unwrap();
        let (ctrain, cval) = split_cases(&refs, 0.25, Some(2), 0, Path::new("d")).unwrap();
        assert_eq!(cval.len(), 2);
        assert_eq!(cval.iter().filter(|c| c.label == Some(true)).count(), 1);
        assert!(cval.iter().all(|c| val.iter().any(|v| v.name == c.name)));
        assert_eq!(ctrain.len() + cval.len(), 24);
        // A cap above the split's size changes nothing; below 2 is refused.
        let (_, same) = split_cases(&refs, 0.25, Some(100), 0, Path::new("d")).unwrap();
        assert_eq!(names(&same), names(&val));
        let one = TrainConfig {
            val_max_cases: Some(1),
            ..TrainConfig::default()
        };
        assert!(
            one.validate()
                .unwrap_err()
                .to_string()
                .contains("val_max_cases")
        );
    }

    #[test]
    fn patience_is_off_unless_set_and_zero_is_refused() {
        let defaults = TrainConfig::default();
        assert_eq!(defaults.patience, None);
        defaults.validate().unwrap();
        let text = toml::to_string(&defaults).unwrap();
        assert_eq!(toml::from_str::<TrainConfig>(&text).unwrap(), defaults);
        let set: TrainConfig = toml::from_str("patience = 3").unwrap();
        assert_eq!(set.patience, Some(3));
        let back: TrainConfig = toml::from_str(&toml::to_string(&set).unwrap()).unwrap();
        assert_eq!(back, set);
        let zero: TrainConfig = toml::from_str("patience = 0").unwrap();
        let e = zero.validate().unwrap_err().to_string();
        assert!(e.contains("patience"), "{e}");
    }
}
