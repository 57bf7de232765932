//! `tonno synth`: the built-in synthetic dataset, or lesions implanted into
//! real healthy scans (`--anatomy`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tonno_core::synth::anatomy::{self, AnatomyConfig};
use tonno_core::synth::{CaseRecord, SynthConfig, write_dataset};

use crate::progress;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output folder (created; must be empty unless --force).
    #[arg(long)]
    out: PathBuf,
    /// Number of cases.
    #[arg(long, default_value_t = 20)]
    cases: usize,
    /// Voxels per side [default: 48 synthetic heads (192 mm field of view), 64 with --anatomy].
    #[arg(long)]
    size: Option<usize>,
    /// Seed: the same seed writes the same voxels.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of cases in the test split (imagesTs).
    #[arg(long, default_value_t = 0.25)]
    test_fraction: f64,
    /// Range of the lesions' relative intensity change, "LO,HI" (sign random)
    /// [default: 0.15,0.35 synthetic heads, 0.25,0.6 with --anatomy].
    #[arg(long, value_parser = parse_range)]
    contrast: Option<(f64, f64)>,
    /// Healthy scans to implant lesions into (a file or a folder of .nii,
    /// .nii.gz, .nrrd, .nhdr) instead of drawing synthetic heads.
    #[arg(long, help_heading = "Real anatomy")]
    anatomy: Option<PathBuf>,
    /// A folder of masks (above 0.5 inside) named like the anatomy scans, each
    /// narrowing where that scan's lesions go (a brain mask of a whole-head
    /// scan keeps tumours out of the scalp, face and neck); scans without
    /// one use their foreground.
    #[arg(
        long,
        value_name = "DIR",
        help_heading = "Real anatomy",
        requires = "anatomy"
    )]
    anatomy_masks: Option<PathBuf>,
    /// Output voxel size in mm.
    #[arg(
        long,
        default_value_t = 3.0,
        help_heading = "Real anatomy",
        requires = "anatomy"
    )]
    spacing: f64,
    /// Put whole source scans in the test split (testing on unseen subjects).
    #[arg(long, help_heading = "Real anatomy", requires = "anatomy")]
    split_by_source: bool,
    /// Largest random rotation in degrees.
    #[arg(
        long,
        default_value_t = 15.0,
        help_heading = "Real anatomy",
        requires = "anatomy"
    )]
    max_rotation: f64,
    /// Range of the random isotropic scale, "LO,HI".
    #[arg(long, value_parser = parse_range, default_value = "0.9,1.1", help_heading = "Real anatomy", requires = "anatomy")]
    scale: (f64, f64),
    /// Largest random translation in mm.
    #[arg(
        long,
        default_value_t = 6.0,
        help_heading = "Real anatomy",
        requires = "anatomy"
    )]
    max_shift: f64,
    /// Amplitude of the smooth multiplicative bias field.
    #[arg(
        long,
        default_value_t = 0.15,
        help_heading = "Real anatomy",
        requires = "anatomy"
    )]
    bias: f64,
    /// Gamma exp(U[-G, G]) on the intensities.
    #[arg(
        long,
        default_value_t = 0.15,
        help_heading = "Real anatomy",
        requires = "anatomy"
    )]
    gamma: f64,
    /// Noise standard deviation relative to the foreground median.
    #[arg(
        long,
        default_value_t = 0.03,
        help_heading = "Real anatomy",
        requires = "anatomy"
    )]
    noise: f64,
    /// Lesions per positive case, "LO,HI".
    #[arg(long, value_parser = parse_count_range, default_value = "1,2", help_heading = "Real anatomy", requires = "anatomy")]
    lesions: (usize, usize),
    /// Range of the lesions' mean radius in mm, "LO,HI" (log-uniform).
    #[arg(long, value_parser = parse_range, default_value = "7,22", help_heading = "Real anatomy", requires = "anatomy")]
    radius: (f64, f64),
    /// Chance of a necrotic (darker) core.
    #[arg(
        long,
        default_value_t = 0.3,
        help_heading = "Real anatomy",
        requires = "anatomy"
    )]
    core_probability: f64,
    /// Chance of a brighter rim.
    #[arg(
        long,
        default_value_t = 0.3,
        help_heading = "Real anatomy",
        requires = "anatomy"
    )]
    rim_probability: f64,
    /// Chance of darker oedema around a lesion (outside its mask).
    #[arg(
        long,
        default_value_t = 0.5,
        help_heading = "Real anatomy",
        requires = "anatomy"
    )]
    oedema_probability: f64,
    /// Smallest distance in mm between a lesion (with its oedema) and the foreground's edge.
    #[arg(
        long,
        default_value_t = 6.0,
        help_heading = "Real anatomy",
        requires = "anatomy"
    )]
    margin: f64,
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
    let bar = progress::bar(args.cases as u64, "synth");
    let report = |done: usize, _| bar.set_position(done as u64);
    let (records, size) = match &args.anatomy {
        None => {
            let config = SynthConfig {
                size: args.size.unwrap_or(48),
                cases: args.cases,
                seed: args.seed,
                test_fraction: args.test_fraction,
                contrast: args.contrast.unwrap_or(SynthConfig::default().contrast),
                ..SynthConfig::default()
            };
            let records =
                write_dataset(&args.out, &config, args.force, &report).with_context(|| {
                    format!("writing the synthetic dataset to {}", args.out.display())
                })?;
            (records, config.size)
        }
        Some(path) => {
            let config = anatomy_config(&args);
            // Everything is checked before anything is written.
            config.validate()?;
            let mut sources = anatomy::load_sources(path)
                .with_context(|| format!("reading the anatomy scans at {}", path.display()))?;
            if let Some(dir) = &args.anatomy_masks {
                anatomy::attach_masks(&mut sources, dir)
                    .with_context(|| format!("reading the lesion masks in {}", dir.display()))?;
            }
            anatomy::plan(&config, sources.len())?;
            let records = anatomy::write_dataset(&args.out, &config, &sources, args.force, &report)
                .with_context(|| format!("writing the dataset to {}", args.out.display()))?;
            (records, config.size)
        }
    };
    bar.finish_and_clear();
    print_summary(&args, &records, size)?;
    Ok(ExitCode::SUCCESS)
}

fn anatomy_config(args: &Args) -> AnatomyConfig {
    let d = AnatomyConfig::default();
    AnatomyConfig {
        size: args.size.unwrap_or(d.size),
        spacing_mm: args.spacing,
        cases: args.cases,
        seed: args.seed,
        test_fraction: args.test_fraction,
        split_by_source: args.split_by_source,
        max_rotation_deg: args.max_rotation,
        scale: args.scale,
        max_shift_mm: args.max_shift,
        bias: args.bias,
        gamma: args.gamma,
        noise: args.noise,
        lesions: args.lesions,
        radius_mm: args.radius,
        contrast: args.contrast.unwrap_or(d.contrast),
        core_probability: args.core_probability,
        rim_probability: args.rim_probability,
        oedema_probability: args.oedema_probability,
        margin_mm: args.margin,
        ..d
    }
}

fn print_summary(args: &Args, records: &[CaseRecord], size: usize) -> anyhow::Result<()> {
    let positives = records.iter().filter(|r| r.label).count();
    let test = records.iter().filter(|r| r.split == "test").count();
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "out": args.out, "cases": records.len(), "positives": positives,
                "test": test, "size": size, "seed": args.seed, "anatomy": args.anatomy,
            }))?
        );
    } else {
        outln!(
            "wrote {} cases ({} with lesions, {} in the test split) of {}^3 voxels to {}",
            records.len(),
            positives,
            test,
            size,
            args.out.display()
        );
    }
    Ok(())
}

fn parse_pair<T: std::str::FromStr>(s: &str) -> Result<(T, T), String> {
    let (a, b) = s.split_once(',').ok_or("expected LO,HI")?;
    let num = |x: &str| {
        x.trim()
            .parse::<T>()
            .map_err(|_| format!("{x:?} is not a number"))
    };
    Ok((num(a)?, num(b)?))
}

fn parse_range(s: &str) -> Result<(f64, f64), String> {
    let (lo, hi): (f64, f64) = parse_pair(s)?;
    if !(lo.is_finite() && hi.is_finite()) || lo < 0.0 || hi < lo {
        return Err(format!("need 0 <= LO <= HI, got {lo},{hi}"));
    }
    Ok((lo, hi))
}

fn parse_count_range(s: &str) -> Result<(usize, usize), String> {
    let (lo, hi): (usize, usize) = parse_pair(s)?;
    if lo == 0 || hi < lo {
        return Err(format!("need 1 <= LO <= HI, got {lo},{hi}"));
    }
    Ok((lo, hi))
}
