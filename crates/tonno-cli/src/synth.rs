//! `tonno synth`: the built-in synthetic dataset.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tonno_core::synth::{SynthConfig, write_dataset};

use crate::progress;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output folder (created; must be empty unless --force).
    #[arg(long)]
    out: PathBuf,
    /// Number of cases.
    #[arg(long, default_value_t = 20)]
    cases: usize,
    /// Voxels per side (the field of view is always 192 mm).
    #[arg(long, default_value_t = 48)]
    size: usize,
    /// Seed: the same seed writes the same voxels.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of cases in the test split (imagesTs).
    #[arg(long, default_value_t = 0.25)]
    test_fraction: f64,
    /// Range of the lesions' relative intensity change, "LO,HI" (sign random).
    #[arg(long, value_parser = parse_range, default_value = "0.15,0.35")]
    contrast: (f64, f64),
    /// Write into a non-empty folder, replacing files of the same names.
    #[arg(long)]
    force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (0.0..1.0).contains(&args.test_fraction),
        "--test-fraction must be in [0, 1)"
    );
    let config = SynthConfig {
        size: args.size,
        cases: args.cases,
        seed: args.seed,
        test_fraction: args.test_fraction,
        contrast: args.contrast,
        ..SynthConfig::default()
    };
    let bar = progress::bar(args.cases as u64, "synth");
    let records = write_dataset(&args.out, &config, args.force, &|done, _| {
        bar.set_position(done as u64)
    })
    .with_context(|| format!("writing the synthetic dataset to {}", args.out.display()))?;
    bar.finish_and_clear();
    let positives = records.iter().filter(|r| r.label).count();
    let test = records.iter().filter(|r| r.split == "test").count();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "out": args.out, "cases": records.len(), "positives": positives,
                "test": test, "size": args.size, "seed": args.seed,
            }))?
        );
    } else {
        println!(
            "wrote {} cases ({} with lesions, {} in the test split) of {}^3 voxels to {}",
            records.len(),
            positives,
            test,
            args.size,
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_range(s: &str) -> Result<(f64, f64), String> {
    let (a, b) = s.split_once(',').ok_or("expected LO,HI")?;
    let lo: f64 = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} is not a number"))?;
    let hi: f64 = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a number"))?;
    if !(0.0..=5.0).contains(&lo) || hi < lo || hi > 5.0 {
        return Err(format!("need 0 <= LO <= HI <= 5, got {lo},{hi}"));
    }
    Ok((lo, hi))
}
