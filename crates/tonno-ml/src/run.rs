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

use crate::encoder::{Encoder, EncoderConfig};
use crate::error::{Error, Result};
use crate::sampler::SamplingConfig;
use crate::train::TrainConfig;

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
    /// How slices for this model are made (inference must match training).
    pub fn sampling(&self) -> &SamplingConfig {
        &self.train.sampling
    }
}

fn score_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NEG_INFINITY))
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

    /// Reads `config.toml`.
    pub fn read_config(&self) -> Result<RunConfig> {
        let path = self.config();
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| Error::Run {
            path,
            reason: format!("not a tonno run config: {e}"),
        })
    }

    /// Writes `config.toml` (atomically, as [`Self::write_text`]).
    pub fn write_config(&self, config: &RunConfig) -> Result<()> {
        let text =
            toml::to_string_pretty(config).map_err(|e| Error::invalid("config", e.to_string()))?;
        self.write_text(&self.config(), &text)
    }

    /// Writes `text` to `path` through a temporary file and a rename.
    pub fn write_text(&self, path: &Path, text: &str) -> Result<()> {
        let tmp = tmp_name(path);
        std::fs::write(&tmp, text).map_err(|source| Error::Write {
            path: path.to_path_buf(),
            source,
        })?;
        std::fs::rename(&tmp, path).map_err(|source| Error::Write {
            path: path.to_path_buf(),
            source,
        })
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
/// its run config.
#[derive(Debug)]
pub struct TrainedModel {
    pub encoder: Encoder,
    pub config: RunConfig,
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
        let config = dir.read_config()?;
        let encoder = load_weights(&config.encoder, &dir.model(), device)?;
        Ok(Self { encoder, config })
    }
}
