//! Fuzzing the config readers with mutants of valid files (see
//! `tonno_core::fuzz`): a run's `config.toml`, read whole to resume
//! ([`RunDir::read_config`]) and in part for inference
//! ([`RunDir::read_model`]), and a `--config` training file
//! ([`TrainConfig::read`]). No input may panic, hang or fail with an error
//! that names no file, and whatever is accepted must be in range (a width,
//! a slice size or a slice count that would allocate gigabytes is refused).
//!
//! CI runs 10,000 inputs per reader; a longer run:
//! `TONNO_FUZZ_INPUTS=200000 cargo test --release -p tonno-ml --test fuzz_config`.

use std::path::{Path, PathBuf};

use tonno_core::fuzz::{self, Config, Kind, SeedFile, Target, error_chain};
use tonno_ml::config::{Objective, TrainConfig};
use tonno_ml::encoder::EncoderConfig;
use tonno_ml::run::{DataRecord, RunConfig, RunDir};

const INPUTS: usize = 10_000;

const TOML_LINES: &[&str] = &[
    "[train]",
    "[encoder]",
    "[data]",
    "[train.sampling]",
    "[train.sampling.augment]",
    "[train.objective]",
    "kind = \"slices\"",
    "kind = \"mil\"",
    "kind = \"resnet34\"",
    "kind = \"transformer\"",
    "bag = 0",
    "r = nan",
    "slice_size = 18446744073709551615",
    "slice_size = 1000000",
    "slice_size = 0",
    "cnn_width = 1000000000",
    "in_channels = 0",
    "in_channels = 4294967296",
    "classes = 0",
    "batch_size = 1",
    "batch_size = 100000000",
    "val_directions = 0",
    "val_slices = 100000000",
    "epochs = 0",
    "lr = inf",
    "lr = -1.0",
    "offset_span = nan",
    "hessian_sigma_mm = -1.0",
    "hessian_sigma_mm = 1e308",
    "blur = 1e30",
    "noise = -1.0",
    "val_fraction = 1.0",
    "selection_start = 2.0",
    "selection_window = 0",
    "patience = 0",
    "max_minutes = -5.0",
    "pooling = \"lse\"",
    "normalization = \"none\"",
    "ball = \"covering\"",
    "device = \"tpu\"",
    "unknown_setting = 1",
    "train_cases = []",
    "train_cases = [\"a\", 1]",
    "tonno_version = 0",
    "a = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "\"\u{0}\" = 1",
    "= 1",
    "[[train]]",
    "",
];

const TOML_TOKENS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "16",
    "1024",
    "1025",
    "4294967296",
    "18446744073709551615",
    "99999999999999999999999",
    "nan",
    "inf",
    "-inf",
    "1e308",
    "0.5",
    "true",
    "false",
    "\"\"",
    "\"cnn\"",
    "\"max\"",
    "[]",
    "{}",
    "",
];

fn run_config() -> RunConfig {
    let train = TrainConfig {
        objective: Objective::Mil {
            bag: 8,
            r: 4.0,
            relative: false,
        },
        max_minutes: Some(20.0),
        ..TrainConfig::default()
    };
    RunConfig {
        tonno_version: "0.1.0".into(),
        encoder: EncoderConfig::default(),
        train,
        data: DataRecord {
            root: PathBuf::from("data"),
            labels: "labels.csv".into(),
            train_cases: vec!["case_000".into(), "case_001".into()],
            val_cases: vec!["case_002".into()],
        },
    }
}

fn seed(name: &str, text: String) -> Vec<SeedFile> {
    vec![SeedFile {
        name: name.into(),
        bytes: text.into_bytes(),
        kind: Kind::Text {
            lines: TOML_LINES,
            tokens: TOML_TOKENS,
        },
    }]
}

fn fuzz(name: &str, seeds: Vec<Vec<SeedFile>>, target: Target) {
    let scratch = tempfile::tempdir().unwrap();
    let config = Config::from_env(INPUTS, scratch.path());
    fuzz::assert_clean(name, &fuzz::run(&seeds, target, &config));
}

/// An accepted config is one that inference and training can use as it is.
fn in_range(model: &tonno_ml::run::ModelConfig) -> Result<(), String> {
    let p = model.sampling.slice_size;
    let e = &model.encoder;
    if !(16..=1024).contains(&p) || e.cnn_width > 1024 || e.in_channels > 256 {
        return Err(format!("accepted out-of-range sizes: {model:?}"));
    }
    if let Some(s) = model.sampling.hessian_sigma_mm
        && !(s > 0.0 && s <= 100.0 && e.in_channels.is_multiple_of(3))
    {
        return Err(format!("accepted a Hessian scale it cannot use: {model:?}"));
    }
    Ok(())
}

fn run_folder_target(path: &Path) -> Result<(), String> {
    let dir = RunDir::new(path.parent().unwrap());
    let model = dir.read_model().map_err(|e| error_chain(&e));
    let whole = dir.read_config().map_err(|e| error_chain(&e));
    // Whatever resuming accepts, inference accepts the same model.
    if let Ok(c) = &whole {
        match &model {
            Ok(m) if *m == c.model() => {}
            other => panic!("read_config accepted what read_model read as {other:?}"),
        }
    }
    let model = model?;
    in_range(&model).map_err(|e| format!("{}: {e}", path.display()))?;
    whole.map(drop)
}

fn train_file_target(path: &Path) -> Result<(), String> {
    let c = TrainConfig::read(path).map_err(|e| error_chain(&e))?;
    c.validate()
        .map_err(|e| format!("{}: read accepted an invalid config: {e}", path.display()))
}

#[test]
fn run_config_readers_survive_mutants() {
    let text = toml::to_string_pretty(&run_config()).unwrap();
    fuzz(
        "run-config",
        vec![seed("config.toml", text)],
        run_folder_target,
    );
}

#[test]
fn training_config_reader_survives_mutants() {
    let full = toml::to_string_pretty(&TrainConfig::default()).unwrap();
    let partial = "epochs = 3\nsteps_per_epoch = 4\nbatch_size = 16\n\n[sampling]\nslice_size = 32\n\n[objective]\nkind = \"mil\"\nbag = 8\nr = 4.0\n".to_string();
    fuzz(
        "train-config",
        vec![seed("full.toml", full), seed("partial.toml", partial)],
        train_file_target,
    );
}

#[test]
fn inference_reads_a_run_whose_training_settings_it_does_not_know() {
    // A training setting added or renamed by a later tonno must not make
    // the run unusable for inference; resuming it, which needs every
    // setting, says which one it does not know.
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::new(dir.path());
    let text = toml::to_string_pretty(&run_config()).unwrap().replace(
        "[train]\n",
        "[train]\nlearning_rate_schedule = \"onecycle\"\n",
    );
    std::fs::write(run.config(), text).unwrap();
    assert_eq!(run.read_model().unwrap(), run_config().model());
    let err = run.read_config().unwrap_err().to_string();
    assert!(
        err.contains("config.toml") && err.contains("learning_rate_schedule"),
        "{err}"
    );
}
