//! The run folder: what training writes and inference reads.
//!
//! ```text
//! RUN/config.toml      resolved config: everything needed to reuse the model
//! RUN/model.bpk        best weights (validation AUROC), burnpack format
//! RUN/metrics.json     one entry per epoch
//! RUN/decision.json    the volume-level decision threshold (crate::decision)
//! RUN/train.log        the log
//! RUN/checkpoint.json  the last completed epoch's state, naming its folder
//! RUN/checkpoints/epoch-NNNN/{model,optimizer}.bpk
//! ```
//! Every file is written to a temporary name and renamed, and a checkpoint
//! folder is complete before `checkpoint.json` names it, so a run killed at
//! any moment resumes exactly from its last completed epoch.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::*;
use burn::store::ModuleRecord;
use serde::{Deserialize, Serialize};
use tonno_core::sampler::SamplingConfig;

use crate::config::TrainConfig;
use crate::decision::{Aggregate, ScoreRule};
use crate::encoder::{Encoder, EncoderConfig};
use crate::error::{Error, Result};

/// Where the data came from and how it was split.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DataRecord {
    /// The dataset folder.
    pub root: PathBuf,
    /// `"labels.csv"`, a CSV path, or `"masks"`.
    pub labels: String,
    pub train_cases: Vec<String>,
    pub val_cases: Vec<String>,
}

/// Everything a run needs to be resumed or reused (saved as `config.toml`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunConfig {
    pub tonno_version: String,
    pub encoder: EncoderConfig,
    pub train: TrainConfig,
    pub data: DataRecord,
}

impl RunConfig {
    /// What inference needs of this run.
    pub fn model(&self) -> ModelConfig {
        ModelConfig {
            encoder: self.encoder.clone(),
            sampling: self.train.sampling.clone(),
            score_rule: self.train.score_rule(),
        }
    }
}

/// What inference needs from a run: the encoder, how its slices are made
/// (inference must match training) and how a scan is scored when the run
/// has no `decision.json`. It is read from `config.toml` without the other
/// training settings, so that a training setting added, renamed or removed
/// later leaves old runs usable for inference.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub encoder: EncoderConfig,
    pub sampling: SamplingConfig,
    pub score_rule: ScoreRule,
}

impl ModelConfig {
    /// Checks every size a config file gives.
    pub fn validate(&self) -> Result<()> {
        self.encoder.validate()?;
        self.sampling.validate()?;
        if self.sampling.hessian_sigma_mm.is_some() && !self.encoder.in_channels.is_multiple_of(3) {
            return Err(Error::invalid(
                "in_channels",
                format!(
                    "{}, but with hessian_sigma_mm every image channel comes with two Hessian \
                     channels, so it must be a multiple of 3",
                    self.encoder.in_channels
                ),
            ));
        }
        let r = &self.score_rule;
        for (name, v) in [("val_directions", r.directions), ("val_slices", r.slices)] {
            if v == 0 || v > MAX_SCORE_SLICES {
                return Err(Error::invalid(
                    name,
                    format!("{v} (must be 1 to {MAX_SCORE_SLICES})"),
                ));
            }
        }
        Ok(())
    }
}

/// The most directions (and offsets per direction) a scan's score may use.
pub const MAX_SCORE_SLICES: usize = 4096;

/// The part of `config.toml` that [`ModelConfig`] is read from; every other
/// key is ignored.
#[derive(Deserialize)]
struct StoredModel {
    encoder: EncoderConfig,
    train: StoredTrain,
}

#[derive(Deserialize)]
#[serde(default)]
struct StoredTrain {
    sampling: SamplingConfig,
    selection: Aggregate,
    val_directions: usize,
    val_slices: usize,
}

impl Default for StoredTrain {
    fn default() -> Self {
        let t = TrainConfig::default();
        Self {
            sampling: t.sampling,
            selection: t.selection,
            val_directions: t.val_directions,
            val_slices: t.val_slices,
        }
    }
}

fn score_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NEG_INFINITY))
}

/// One epoch's figures (an entry of `metrics.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub step: u64,
    pub lr: f64,
    pub train_loss: f64,
    pub train_slices_per_s: f64,
    /// Seconds the optimiser waited for the sampler this epoch.
    pub sampler_wait_s: f64,
    pub val_auroc_max: Option<f64>,
    pub val_auroc_mean: Option<f64>,
    /// By the largest slice logit minus the mean one (absent in runs from
    /// before it was measured).
    #[serde(default)]
    pub val_auroc_gap: Option<f64>,
    /// The selection score: the mean over the last `selection_window`
    /// epochs of the selected AUROC (`None` before `selection_start`).
    #[serde(default)]
    pub val_score: Option<f64>,
    pub best: bool,
    pub seconds: f64,
}

/// Training state after a completed epoch (the checkpoint's `state.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointState {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimiser steps taken.
    pub step: u64,
    /// `-inf` until an epoch is selected (JSON has no infinity: `null`).
    #[serde(deserialize_with = "score_or_none")]
    pub best_score: f64,
    pub best_epoch: usize,
    pub epochs_since_best: usize,
    pub seconds: f64,
    /// The checkpoint folder, relative to the run folder.
    pub folder: String,
    /// Optimiser steps folded into the weight average (`average.bpk` in the
    /// checkpoint folder); 0 in checkpoints written before it existed.
    #[serde(default)]
    pub average_updates: u64,
}

/// Paths inside a run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn model(&self) -> PathBuf {
        self.root.join("model.bpk")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.json")
    }
    /// The volume-level decision rule ([`crate::decision::Decision`]).
    pub fn decision(&self) -> PathBuf {
        self.root.join(crate::decision::Decision::FILE)
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("train.log")
    }
    /// The state of the last completed epoch.
    pub fn checkpoint_state(&self) -> PathBuf {
        self.root.join("checkpoint.json")
    }
    /// Folder of all checkpoints.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    /// The weight average's file in a checkpoint folder.
    pub const AVERAGE: &str = "average.bpk";

    /// Folder of epoch `epoch`'s checkpoint, relative to the run folder.
    pub fn checkpoint_folder(epoch: usize) -> String {
        format!("checkpoints/epoch-{epoch:04}")
    }

    /// Files a run writes (removed by `--force`).
    pub fn owned_paths(&self) -> Vec<PathBuf> {
        vec![
            self.config(),
            self.model(),
            self.metrics(),
            self.decision(),
            self.log(),
            self.checkpoint_state(),
            self.checkpoints(),
        ]
    }

    /// Reads `config.toml` whole, as resuming a run needs it, and checks it.
    pub fn read_config(&self) -> Result<RunConfig> {
        let (path, text) = self.config_text()?;
        let config: RunConfig = toml::from_str(&text).map_err(|e| Error::Run {
            path: path.clone(),
            reason: format!("not a tonno run config: {e}"),
        })?;
        config
            .train
            .validate()
            .and_then(|()| config.model().validate())
            .map_err(|e| Error::Run {
                path,
                reason: e.to_string(),
            })?;
        Ok(config)
    }

    /// Reads what inference needs from `config.toml` and checks it.
    pub fn read_model(&self) -> Result<ModelConfig> {
        let (path, text) = self.config_text()?;
        let stored: StoredModel = toml::from_str(&text).map_err(|e| Error::Run {
            path: path.clone(),
            reason: format!("not a tonno run config: {e}"),
        })?;
        let model = ModelConfig {
            encoder: stored.encoder,
            sampling: stored.train.sampling,
            score_rule: ScoreRule {
                aggregate: stored.train.selection,
                directions: stored.train.val_directions,
                slices: stored.train.val_slices,
            },
        };
        model.validate().map_err(|e| Error::Run {
            path,
            reason: e.to_string(),
        })?;
        Ok(model)
    }

    fn config_text(&self) -> Result<(PathBuf, String)> {
        let path = self.config();
        let text = tonno_core::io::read_text(&path).map_err(|e| Error::Run {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok((path, text))
    }

    /// Writes `config.toml` (atomically, as [`Self::write_text`]).
    pub fn write_config(&self, config: &RunConfig) -> Result<()> {
        let text =
            toml::to_string_pretty(config).map_err(|e| Error::invalid("config", e.to_string()))?;
        self.write_text(&self.config(), &text)
    }

    /// Writes (or replaces) `path` through a temporary file and a rename.
    pub fn write_text(&self, path: &Path, text: &str) -> Result<()> {
        Ok(tonno_core::io::write_text(path, text, true)?)
    }

    /// Appends a line to the log.
    pub fn log_line(&self, line: &str) -> Result<()> {
        let path = self.log();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
        writeln!(f, "{line}").map_err(|source| Error::Write { path, source })
    }
}

impl RunDir {
    /// `checkpoint.json`: `None` when a run was killed before its first epoch
    /// ended, an error when it cannot be read or parsed.
    pub fn read_checkpoint_state(&self) -> Result<Option<CheckpointState>> {
        let path = self.checkpoint_state();
        match std::fs::read_to_string(&path) {
            Ok(t) => Ok(Some(serde_json::from_str(&t).map_err(|e| Error::Run {
                path: path.clone(),
                reason: format!("corrupt checkpoint state: {e}"),
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Read { path, source }),
        }
    }

    /// The epochs recorded so far: none when `metrics.json` does not exist yet,
    /// an error when it cannot be read or parsed (a resumed run must not lose
    /// the history its model selection depends on).
    pub fn read_history(&self) -> Result<Vec<EpochMetrics>> {
        let path = &self.metrics();
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| Error::Run {
                path: path.to_path_buf(),
                reason: format!("corrupt epoch history: {e}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(Error::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Writes the epoch's folder whole (the weights, the optimiser and the
    /// weight average when there is one), then the state that names it, then
    /// removes older folders: a kill at any point leaves a consistent checkpoint.
    pub fn save_checkpoint(
        &self,
        model: &Encoder,
        optim: &burn::optim::ModuleOptimizer,
        average: Option<&Encoder>,
        state: &CheckpointState,
    ) -> Result<()> {
        let dir = self;
        let folder = dir.root.join(&state.folder);
        let tmp = folder.with_file_name(format!(".tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|source| Error::Write {
            path: tmp.clone(),
            source,
        })?;
        save_weights(model, &tmp.join("model.bpk"))?;
        if let Some(average) = average {
            save_weights(average, &tmp.join(Self::AVERAGE))?;
        }
        optim
            .save(tmp.join("optimizer.bpk"))
            .map_err(|e| Error::Weights {
                path: folder.join("optimizer.bpk"),
                reason: e.to_string(),
            })?;
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::rename(&tmp, &folder).map_err(|source| Error::Write {
            path: folder.clone(),
            source,
        })?;
        dir.write_text(
            &dir.checkpoint_state(),
            &serde_json::to_string_pretty(state).expect("state serialises"),
        )?;
        if let Ok(entries) = std::fs::read_dir(dir.checkpoints()) {
            for e in entries.flatten() {
                if e.path() != folder {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }
}

fn tmp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".tmp-{}-{name}", std::process::id()))
}

/// Saves weights to `path` (burnpack) through a temporary file.
pub fn save_weights(model: &Encoder, path: &Path) -> Result<()> {
    let tmp = tmp_name(path);
    model
        .clone()
        .into_record()
        .save(&tmp)
        .map_err(|e| Error::Weights {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads burnpack weights into a fresh encoder built from `config`.
pub fn load_weights(config: &EncoderConfig, path: &Path, device: &Device) -> Result<Encoder> {
    if !path.is_file() {
        return Err(Error::Weights {
            path: path.to_path_buf(),
            reason: "no such file".into(),
        });
    }
    let record = ModuleRecord::load(path).map_err(|e| Error::Weights {
        path: path.to_path_buf(),
        reason: format!("not a readable burnpack file ({e})"),
    })?;
    config
        .init(device)?
        .try_load_record(record)
        .map_err(|e| Error::Weights {
            path: path.to_path_buf(),
            reason: format!("does not fit a {} encoder ({e})", config.kind),
        })
}

/// A trained model as inference needs it: the encoder (no autodiff) and
/// its model config.
#[derive(Debug)]
pub struct TrainedModel {
    pub encoder: Encoder,
    pub config: ModelConfig,
}

impl TrainedModel {
    /// The encoder in inference mode (batch norm on its running statistics).
    pub fn inference_encoder(&self) -> Encoder {
        self.encoder.valid()
    }

    /// Loads `RUN/config.toml` and `RUN/model.bpk` onto `device`.
    pub fn load(run: &Path, device: &Device) -> Result<Self> {
        let dir = RunDir::new(run);
        if !run.is_dir() {
            return Err(Error::Run {
                path: run.to_path_buf(),
                reason: "not a run folder (it does not exist)".into(),
            });
        }
        let config = dir.read_model()?;
        let encoder = load_weights(&config.encoder, &dir.model(), device)?;
        Ok(Self { encoder, config })
    }
}
