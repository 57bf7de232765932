//! What the training tests share: a tiny synthetic dataset and the settings
//! that learn it in seconds.

use std::path::Path;

use tonno_core::io::dataset::LabelSource;
use tonno_core::synth::{SynthConfig, write_dataset};
use tonno_ml::config::{Objective, TrainConfig};
use tonno_ml::encoder::EncoderKind;
use tonno_ml::train::DataSpec;

pub fn dataset(dir: &Path, cases: usize, contrast: (f64, f64)) -> DataSpec {
    let cfg = SynthConfig {
        size: 24,
        cases,
        seed: 1,
        test_fraction: 0.0,
        contrast,
        ..SynthConfig::default()
    };
    write_dataset(dir, &cfg, false, &|_, _| {}).unwrap();
    DataSpec {
        root: dir.to_path_buf(),
        labels: LabelSource::Default,
    }
}

pub fn small_config() -> TrainConfig {
    let mut c = TrainConfig {
        encoder: EncoderKind::Cnn,
        cnn_width: 8,
        epochs: 6,
        steps_per_epoch: 15,
        batch_size: 32,
        warmup_steps: 10,
        lr: 3e-3,
        val_directions: 6,
        val_slices: 8,
        seed: 3,
        ..TrainConfig::default()
    };
    c.sampling.slice_size = 32;
    c.objective = Objective::Mil {
        bag: 8,
        r: 4.0,
        relative: false,
    };
    c
}
