//! `tonno info FILE`: what a user needs to know about an image before running
//! on it; `tonno info --devices`: which devices this build can run networks on.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;
use tonno_core::io::dicom::DicomInfo;
use tonno_core::io::{Format, read_image_series};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image file (.nii, .nii.gz, .nrrd, .nhdr, an Enhanced DICOM .dcm), or a
    /// folder holding a DICOM series.
    #[arg(required_unless_present = "devices")]
    file: Option<PathBuf>,
    /// The DICOM series (SeriesInstanceUID) to read when the folder holds
    /// several (without it, they are listed).
    #[arg(long, requires = "file")]
    series: Option<String>,
    /// List the devices (`--device` values) this build has and whether each works here.
    #[arg(long, conflicts_with = "file")]
    devices: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct DeviceInfo {
    device: String,
    built: bool,
    usable: bool,
    /// Why it cannot be used, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

fn devices(json: bool) -> anyhow::Result<ExitCode> {
    use tonno_ml::device::DeviceChoice;
    let rows: Vec<DeviceInfo> = DeviceChoice::ALL
        .iter()
        .map(|&d| {
            let opened = d.open();
            DeviceInfo {
                device: d.to_string(),
                built: d.compiled_in(),
                usable: opened.is_ok(),
                reason: opened.err().map(|e| e.to_string()),
            }
        })
        .collect();
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in &rows {
            let state = match &r.reason {
                None => "usable".to_string(),
                Some(why) => format!("not usable: {why}"),
            };
            outln!("{:<13} {state}", r.device);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
struct Info {
    path: PathBuf,
    format: Format,
    shape: [usize; 3],
    channels: usize,
    datatype: &'static str,
    spacing_mm: [f64; 3],
    /// Voxel-to-world (RAS+ mm), row-major.
    affine: [[f64; 4]; 4],
    orientation: String,
    intensity_min: f32,
    intensity_max: f32,
    intensity_mean: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    qform_code: Option<i16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sform_code: Option<i16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dicom: Option<DicomInfo>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(file) = args.file else {
        return devices(args.json);
    };
    let img = read_image_series(&file, args.series.as_deref())
        .with_context(|| format!("reading {}", file.display()))?;
    let v = &img.volume;
    let (lo, hi) = v.intensity_range();
    let mean = v.data().iter().map(|&x| x as f64).sum::<f64>() / v.data().len() as f64;
    let info = Info {
        path: file.clone(),
        format: img.info.format,
        shape: v.shape(),
        channels: v.channels(),
        datatype: img.info.datatype.name(),
        spacing_mm: v.spacing_mm(),
        affine: v.world_from_voxel().0,
        orientation: v.world_from_voxel().orientation_code(),
        intensity_min: lo,
        intensity_max: hi,
        intensity_mean: mean,
        qform_code: img.info.nifti_header.as_ref().map(|h| h.qform_code),
        sform_code: img.info.nifti_header.as_ref().map(|h| h.sform_code),
        dicom: img.info.dicom.as_deref().cloned(),
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        outln!("file         {}", info.path.display());
        outln!("format       {:?}", info.format);
        outln!(
            "shape        {} x {} x {}",
            info.shape[0],
            info.shape[1],
            info.shape[2]
        );
        outln!("channels     {}", info.channels);
        outln!("datatype     {}", info.datatype);
        let s = info.spacing_mm;
        outln!("spacing_mm   {:.4} x {:.4} x {:.4}", s[0], s[1], s[2]);
        outln!("orientation  {}", info.orientation);
        if let (Some(q), Some(s)) = (info.qform_code, info.sform_code) {
            outln!("xform codes  qform {q}, sform {s}");
        }
        if let Some(d) = &info.dicom {
            outln!(
                "series       {} ({} {:?})",
                d.series_uid,
                d.modality,
                d.series_description
            );
            let kind = if d.multi_frame {
                "multi-frame"
            } else {
                "single-frame"
            };
            outln!(
                "dicom files  {} {kind}, {} slices, {:.4} mm apart",
                d.files,
                d.slices,
                d.slice_step_mm
            );
            outln!("syntax       {}", d.transfer_syntax);
            outln!(
                "rescale      slope {}, intercept {} (values are modality values)",
                d.rescale[0],
                d.rescale[1]
            );
            if d.gantry_tilt_deg > 0.0 {
                outln!(
                    "gantry tilt  {:.3} degrees, kept exactly as a sheared affine (NIfTI outputs hold it in the sform)",
                    d.gantry_tilt_deg
                );
            }
        }
        outln!("intensity    min {lo}, max {hi}, mean {mean:.4}");
        outln!("affine (voxel -> RAS mm)");
        for line in v.world_from_voxel().to_string().lines() {
            outln!("  {line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
