//! `tonno`: weakly supervised 3D segmentation of CT and MRI from image-level
//! labels. Each subcommand lives in its own module and is thin glue over
//! tonno-core and tonno-ml: parse, resolve, call the library, write outputs.
//! Results go to stdout (`--json` for machines); logs and progress to stderr.

/// `print!` to stdout that stops the program quietly when the reader has
/// gone away (`tonno info --json x.nii | head`), as coreutils do, instead
/// of panicking on the broken pipe.
macro_rules! out {
    ($($arg:tt)*) => { $crate::write_stdout(format_args!($($arg)*), false) };
}

/// `println!` with [`out!`]'s handling of a closed stdout.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::write_stdout(format_args!($($arg)*), true) };
}

mod bench;
mod demo;
mod eval;
mod html;
mod info;
mod progress;
mod radon;
mod render;
mod segment;
mod shard;
mod synth;
mod tomo_args;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Dense 3D segmentations from image-level labels, by tomographic
/// reconstruction of a 2D encoder's outputs (ToNNO, CVPR 2024).
#[derive(Debug, Parser)]
#[command(name = "tonno", version, about, long_about = None)]
struct Cli {
    /// More logs on stderr (-v: info, -vv: debug, -vvv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole method on synthetic data: synth, train, segment with every method, evaluate, report.
    Demo(demo::Args),
    /// Print an image's shape, channels, datatype, spacing, affine, orientation and intensity range.
    Info(info::Args),
    /// Write a synthetic dataset (Decathlon layout plus labels.csv): head-like scans, half with lesions.
    Synth(synth::Args),
    /// Reconstruct a volume from its own plane integrals (ToNNO with the exact "slice sum" encoder).
    Radon(radon::Args),
    /// Train a 2D slice encoder from image-level labels (randomly oriented slices, BCE).
    Train(train::Args),
    /// 3D heatmaps from a trained encoder: ToNNO, 2D/averaged/tomographic GradCAM and LayerCAM.
    Segment(segment::Args),
    /// Score heatmaps against masks: Dice, HD95, false-positive volume, detection F1, voxel AUROC and AP.
    Eval(eval::Args),
    /// Measure speed and memory, printed as JSON.
    #[command(subcommand)]
    Bench(bench::Command),
}

/// Writes to stdout; a closed pipe ends the process with success (its
/// reader wanted no more), any other failure with an error.
fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(2);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(format!(
                    "tonno={level},tonno_core={level},tonno_ml={level}"
                ))
            }),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    // Refused here, before any work: the kernels cannot fail mid-run, so a
    // misspelt TONNO_SIMD would otherwise quietly select the scalar one.
    if let Err(e) = tonno_core::radon::simd_kernel() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Info(a) => info::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Radon(a) => radon::run(a),
        Command::Train(a) => train::run(a),
        Command::Segment(a) => segment::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Bench(c) => bench::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // The whole chain: "error: reading x.nii.gz: x.nii.gz: truncated: ..."
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
