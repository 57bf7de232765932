//! `tonno radon`: reconstruct a volume from its own plane integrals, the
//! machinery of ToNNO with the exact encoder (the slice sum).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use tonno_core::io::{DataType, read_image_series, write_image};
use tonno_core::radon::{Padding, plane_integrals, reconstruct_as};

use crate::progress;
use crate::tomo_args::TomoArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input image (.nii, .nii.gz, .nrrd, .nhdr, an Enhanced DICOM .dcm, or a
    /// folder holding a DICOM series).
    #[arg(long)]
    input: PathBuf,
    /// The DICOM series (SeriesInstanceUID) to read when the folder holds several.
    #[arg(long)]
    series: Option<String>,
    /// Output image (.nii.gz, .nii or .nrrd), float32 on the input's grid.
    #[arg(long)]
    out: PathBuf,
    /// Channel of a multi-channel input.
    #[arg(long, default_value_t = 0)]
    channel: usize,
    #[command(flatten)]
    tomo: TomoArgs,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let img = read_image_series(&args.input, args.series.as_deref())
        .with_context(|| format!("reading {}", args.input.display()))?;
    let v = &img.volume;
    anyhow::ensure!(
        args.channel < v.channels(),
        "--channel {} but {} has {} channel(s)",
        args.channel,
        args.input.display(),
        v.channels()
    );
    if args.out.exists() && !args.force {
        anyhow::bail!(
            "{} already exists; pass --force to replace it",
            args.out.display()
        );
    }
    let geometry = args.tomo.geometry(v)?;
    // Plane integrals fall to zero at the ball's edge: zero padding is exact for them.
    let filter = args.tomo.filter(Padding::Zero);
    let how = args.tomo.reconstruction()?;
    let spinner = progress::spinner("projecting and reconstructing");
    let t0 = Instant::now();
    let sino = plane_integrals(v, args.channel, &geometry);
    let t_forward = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let rec = v.same_grid(reconstruct_as(&sino, &filter, &how, &v.grid())?)?;
    let t_inverse = t1.elapsed().as_secs_f64();
    spinner.finish_and_clear();
    write_image(&args.out, &rec, DataType::F32, Some(&img.info), args.force)
        .with_context(|| format!("writing {}", args.out.display()))?;
    // Relative L2 error over the voxels inside the ball, where the inverse is defined.
    let ball = geometry.ball;
    let (mut num, mut den) = (0.0f64, 0.0f64);
    let src = v.channel(args.channel);
    let [nx, ny, nz] = v.shape();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let w = v.voxel_to_world([i as f64, j as f64, k as f64]);
                let d2: f64 = (0..3).map(|a| (w[a] - ball.center_mm[a]).powi(2)).sum();
                if d2 <= ball.radius_mm * ball.radius_mm {
                    let idx = v.index(i, j, k, 0);
                    num += (rec.data()[idx] as f64 - src[idx] as f64).powi(2);
                    den += (src[idx] as f64).powi(2);
                }
            }
        }
    }
    let rel = if den > 0.0 {
        (num / den).sqrt()
    } else {
        f64::NAN
    };
    let summary = serde_json::json!({
        "input": args.input, "out": args.out,
        "directions": geometry.directions(), "slices": geometry.slices, "pixels": geometry.pixels,
        "ball_center_mm": ball.center_mm, "ball_radius_mm": ball.radius_mm,
        "filter": filter, "relative_l2_error": rel,
        "seconds_forward": t_forward, "seconds_inverse": t_inverse,
    });
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        outln!(
            "reconstructed {} from K={} directions x S={} slices of {}x{} pixels in {:.2}s (forward {:.2}s, inverse {:.2}s)",
            args.input.display(),
            geometry.directions(),
            geometry.slices,
            geometry.pixels,
            geometry.pixels,
            t_forward + t_inverse,
            t_forward,
            t_inverse
        );
        outln!("relative L2 error inside the ball: {rel:.4}");
        outln!("wrote {}", args.out.display());
    }
    Ok(ExitCode::SUCCESS)
}
