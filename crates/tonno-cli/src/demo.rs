//! `tonno demo`: the whole method on the built-in synthetic data, in one
//! command: synth -> train -> segment with every method -> evaluate on the
//! held-out cases (thresholds chosen on the validation cases) -> a report
//! with the comparison table, pictures and Dice versus the number of
//! directions K.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use tonno_core::io::dataset::LabelSource;
use tonno_core::io::{case_name, list_images, read_image, write_text};
use tonno_core::normalize::quantile;
use tonno_core::synth::{SynthConfig, write_dataset};
use tonno_ml::config::TrainConfig;
use tonno_ml::device::DeviceChoice;
use tonno_ml::methods::{Method, ProfileValue, SegmentConfig, SliceModel};
use tonno_ml::run::{RunDir, TrainedModel};
use tonno_ml::train::{DataSpec, RunMode, Silent, train};

use crate::eval::{
    MethodRow, auto_columns, auto_summary, evaluate_method, oracle_dice, pairs, table,
};
use crate::render::{self, Plane, Rgb};
use crate::segment::{Job, segment_file};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder for the data, the run, the heatmaps and the report.
    #[arg(long, default_value = "tonno-demo")]
    out: PathBuf,
    /// A smaller run that finishes in a few minutes (smaller scans, shorter training).
    #[arg(long)]
    quick: bool,
    /// Seed of the data, the split and the training.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, vulkan or cuda.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Replace an earlier demo in --out.
    #[arg(long)]
    force: bool,
}

struct Plan {
    /// Lesion contrast range of the synthetic data.
    contrast: (f64, f64),
    cases: usize,
    size: usize,
    train_minutes: f64,
    directions: usize,
    slices: usize,
    k_sweep: Vec<usize>,
    timing_cases: usize,
}

#[derive(Debug, Serialize)]
struct KPoint {
    directions: usize,
    /// At the test scans' own best threshold (oracle).
    dice: Option<f64>,
    voxel_auroc: Option<f64>,
    voxel_average_precision: Option<f64>,
    seconds_per_volume: f64,
}

fn step(n: usize, text: &str) {
    eprintln!("[{n}/7] {text}");
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let plan = if a.quick {
        // Ninety seconds of training learn nothing from the standard lesions
        // (measured: validation AUROC 0.5), so the quick run makes them brighter.
        Plan {
            contrast: (0.4, 0.7),
            cases: 40,
            size: 32,
            train_minutes: 1.5,
            directions: 32,
            slices: 32,
            k_sweep: vec![8, 16, 32],
            timing_cases: 1,
        }
    } else {
        Plan {
            contrast: SynthConfig::default().contrast,
            cases: 60,
            size: 48,
            train_minutes: 10.0,
            directions: 64,
            slices: 48,
            k_sweep: vec![8, 16, 32, 64, 128],
            timing_cases: 2,
        }
    };
    let out = &a.out;
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        anyhow::ensure!(
            a.force,
            "{} already exists; pass --force to replace the demo in it",
            out.display()
        );
        for sub in [
            "data",
            "run",
            "heatmaps",
            "val_heatmaps",
            "val_truth",
            "timing",
            "ksweep",
            "report",
        ] {
            let p = out.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    step(
        1,
        &format!(
            "writing {} synthetic scans of {}^3 voxels (lesion contrast {:?})",
            plan.cases, plan.size, plan.contrast
        ),
    );
    let data = out.join("data");
    let synth = SynthConfig {
        size: plan.size,
        cases: plan.cases,
        seed: a.seed,
        contrast: plan.contrast,
        ..SynthConfig::default()
    };
    write_dataset(&data, &synth, false, &|_, _| {})?;

    step(
        2,
        &format!(
            "training the default encoder for up to {} minutes",
            plan.train_minutes
        ),
    );
    let run_dir = out.join("run");
    let config = TrainConfig {
        // The schedule is fitted to the budget (the default with a budget).
        max_minutes: Some(plan.train_minutes),
        seed: a.seed,
        device: a.device,
        ..TrainConfig::default()
    };
    let t_train = Instant::now();
    let summary = train(
        &DataSpec {
            root: data.clone(),
            labels: LabelSource::Default,
        },
        &run_dir,
        config,
        RunMode::New,
        &Silent,
    )?;
    let train_seconds = t_train.elapsed().as_secs_f64();
    eprintln!(
        "      {} epochs in {:.0}s, best validation AUROC {:.3} (epoch {})",
        summary.epochs, train_seconds, summary.best_score, summary.best_epoch
    );

    let device = a.device.open()?;
    let trained = TrainedModel::load(&run_dir, &device)?;
    let encoder = trained.inference_encoder();
    let model = SliceModel::Net {
        encoder: &encoder,
        device: device.clone(),
        batch: a.device.default_inference_batch(),
    };
    let sampling = trained.config.sampling.clone();
    let record = RunDir::new(&run_dir).read_config()?.data;
    let seg = |directions: usize| SegmentConfig {
        directions,
        slices: plan.slices,
        pixels: sampling.slice_size,
        profile: ProfileValue::Logit,
        ..SegmentConfig::default()
    };
    let test_files = list_images(&data.join("imagesTs"))?;
    let val_files: Vec<PathBuf> = record
        .val_cases
        .iter()
        .map(|c| data.join("imagesTr").join(format!("{c}.nii.gz")))
        .collect();
    let val_truth = out.join("val_truth");
    std::fs::create_dir_all(&val_truth)?;
    for c in &record.val_cases {
        let name = format!("{c}.nii.gz");
        std::fs::copy(data.join("labelsTr").join(&name), val_truth.join(&name))
            .with_context(|| format!("copying the mask of {c}"))?;
    }
    let run_all = |files: &[PathBuf],
                   dir: &Path,
                   methods: &[Method],
                   cfg: &SegmentConfig|
     -> anyhow::Result<f64> {
        std::fs::create_dir_all(dir)?;
        let job = Job {
            model: &model,
            sampling: &sampling,
            methods,
            threshold: None,
            auto_fraction: None,
            force: true,
            skip_existing: false,
            sum: false,
            // The demo evaluates heatmaps, not masks: no scores, no gate.
            rule: None,
            decision: None,
            gate: false,
            body_mask: true,
        };
        let t = Instant::now();
        for f in files {
            segment_file(f, dir, &job, cfg)?;
        }
        Ok(t.elapsed().as_secs_f64() / files.len().max(1) as f64)
    };

    step(
        3,
        &format!(
            "segmenting {} test and {} validation scans with every method (K={}, S={})",
            test_files.len(),
            val_files.len(),
            plan.directions,
            plan.slices
        ),
    );
    let heat = out.join("heatmaps");
    let val_heat = out.join("val_heatmaps");
    let all_per_volume = run_all(&test_files, &heat, &Method::ALL, &seg(plan.directions))?;
    run_all(&val_files, &val_heat, &Method::ALL, &seg(plan.directions))?;

    step(4, "timing each method alone");
    let mut seconds = Vec::new();
    for m in Method::ALL {
        let s = run_all(
            &test_files[..plan.timing_cases.min(test_files.len())],
            &out.join("timing"),
            &[m],
            &seg(plan.directions),
        )?;
        seconds.push(format!("{s:.1}"));
    }

    step(
        5,
        "evaluating on the test scans (thresholds from the validation scans)",
    );
    let truth = data.join("labelsTs");
    let mut rows = Vec::new();
    for m in Method::ALL {
        let test = pairs(&heat, &truth, m.name())?;
        let val = pairs(&val_heat, &val_truth, m.name())?;
        rows.push(MethodRow {
            method: m.name().to_string(),
            eval: evaluate_method(&test, Some(&val), "auto")?,
            classification: None,
            auto_rule: Some(auto_summary(&test, m.auto_fraction(), None)?),
            oracle_dice: oracle_dice(&test),
        });
    }

    step(
        6,
        &format!(
            "ToNNO's Dice versus the number of directions K in {:?}",
            plan.k_sweep
        ),
    );
    let mut k_points = Vec::new();
    for &k in &plan.k_sweep {
        let dir = out.join("ksweep").join(format!("k{k}"));
        let spv = run_all(&test_files, &dir.join("test"), &[Method::Tonno], &seg(k))?;
        // Oracle threshold: the sweep asks what more directions buy, so the
        // threshold should not add validation noise to that answer.
        let e = evaluate_method(&pairs(&dir.join("test"), &truth, "tonno")?, None, "auto")?;
        k_points.push(KPoint {
            directions: k,
            dice: e.mean_dice,
            voxel_auroc: e.voxel_auroc,
            voxel_average_precision: e.voxel_average_precision,
            seconds_per_volume: spv,
        });
    }

    step(7, "writing the report");
    let report = out.join("report");
    std::fs::create_dir_all(&report)?;
    let figures = figures(&data, &heat, &report, 3)?;
    let svg = render::svg_plot(
        "ToNNO on the test scans",
        "directions K",
        "value",
        &[
            (
                "Dice",
                k_points
                    .iter()
                    .map(|p| (p.directions as f64, p.dice.unwrap_or(f64::NAN)))
                    .collect(),
            ),
            (
                "voxel AUROC",
                k_points
                    .iter()
                    .map(|p| (p.directions as f64, p.voxel_auroc.unwrap_or(f64::NAN)))
                    .collect(),
            ),
        ],
    );
    write_text(&report.join("dice_vs_k.svg"), &svg, true)?;
    let mut columns = auto_columns(&rows);
    columns.push(("s / volume", seconds));
    let table_md = table(&rows, &columns);
    let wall = started.elapsed().as_secs_f64();
    let mut md = format!(
        "# tonno demo\n\nCommand: `tonno demo{}{}` (seed {}), {:.1} minutes on this machine.\n\n\
         Data: {} synthetic head scans of {}^3 voxels (`tonno synth`, lesion contrast {}-{}), {} for training, {} for validation, {} held out for testing.\n\
         Encoder: the default CNN, trained {:.1} minutes ({} epochs; best validation AUROC {:.3} at epoch {}).\n\
         Heatmaps: K = {} directions x S = {} slices of {}x{} pixels for the tomographic methods.\n\n\
         ## Comparison on the test scans\n\n{}\n\
         Dice and HD95 (MONAI's convention, mm) are means over test scans with a lesion, at the threshold that maximised the mean Dice \
         of the validation scans; 'oracle Dice' uses the test scans' own best threshold instead. FP volume is the mean predicted volume \
         on scans without a lesion. Detection F1 counts a lesion found when a predicted connected component overlaps it. Voxel AUROC and \
         average precision pool every voxel of every test scan and need no threshold. 's / volume' is each method run alone; all seven \
         together took {:.1} s per volume.\n\n",
        if a.quick { " --quick" } else { "" },
        if a.seed != 0 {
            format!(" --seed {}", a.seed)
        } else {
            String::new()
        },
        a.seed,
        wall / 60.0,
        plan.cases,
        plan.size,
        plan.contrast.0,
        plan.contrast.1,
        record.train_cases.len(),
        record.val_cases.len(),
        test_files.len(),
        train_seconds / 60.0,
        summary.epochs,
        summary.best_score,
        summary.best_epoch,
        plan.directions,
        plan.slices,
        sampling.slice_size,
        sampling.slice_size,
        table_md,
        all_per_volume
    );
    md += &format!(
        "## Dice versus the number of directions K (ToNNO)\n\nOn the test scans, S = {} slices per direction; Dice at the test scans' own best \
         threshold (oracle), so the curve shows what more directions buy, not an unbiased score.\n\n![Dice versus K](dice_vs_k.svg)\n\n\
         | K | Dice (oracle) | voxel AUROC | voxel AP | s / volume |\n|---|---|---|---|---|\n",
        plan.slices
    );
    let f3 = |v: Option<f64>| v.map_or("n/a".into(), |d| format!("{d:.3}"));
    for p in &k_points {
        md += &format!(
            "| {} | {} | {} | {} | {:.1} |\n",
            p.directions,
            f3(p.dice),
            f3(p.voxel_auroc),
            f3(p.voxel_average_precision),
            p.seconds_per_volume
        );
    }
    md += "\n## Test scans\n\nEach picture: rows are the axial, coronal and sagittal planes through the lesion; columns are the image with the \
           truth outlined in green, then the heatmaps of ";
    md += &Method::ALL.map(|m| m.name()).join(", ");
    md += " (each scaled from its median to its 99.9th percentile).\n\n";
    for (case, png) in &figures {
        md += &format!("### {case}\n\n![{case}]({png})\n\n");
    }
    write_text(&report.join("report.md"), &md, true)?;
    let results = serde_json::json!({
        "wall_seconds": wall, "train": summary, "methods": rows, "k_sweep": k_points,
    });
    write_text(
        &report.join("results.json"),
        &serde_json::to_string_pretty(&results)?,
        true,
    )?;
    outln!("{table_md}");
    outln!(
        "ToNNO Dice versus K: {}",
        k_points
            .iter()
            .map(|p| format!(
                "K={}: {}",
                p.directions,
                p.dice.map_or("n/a".into(), |d| format!("{d:.3}"))
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    outln!(
        "demo finished in {:.1} minutes; report: {}",
        wall / 60.0,
        report.join("report.md").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Pictures of up to `n` positive test scans: for each, three planes
/// through the lesion's centre, the image and every method's heatmap.
fn figures(
    data: &Path,
    heat: &Path,
    report: &Path,
    n: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for mask_path in list_images(&data.join("labelsTs"))? {
        if out.len() >= n {
            break;
        }
        let case = case_name(&mask_path);
        let mask = read_image(&mask_path)?.volume;
        let voxels: Vec<usize> = mask
            .data()
            .iter()
            .enumerate()
            .filter(|(_, v)| **v > 0.0)
            .map(|(i, _)| i)
            .collect();
        if voxels.is_empty() {
            continue;
        }
        let [nx, ny, _] = mask.shape();
        let c = [0, 1, 2].map(|a| {
            let s: usize = voxels
                .iter()
                .map(|&i| [i % nx, (i / nx) % ny, i / (nx * ny)][a])
                .sum();
            s / voxels.len()
        });
        let image = read_image(&data.join("imagesTs").join(format!("{case}.nii.gz")))?.volume;
        let range = render::window(&image);
        let planes = [Plane::Axial, Plane::Coronal, Plane::Sagittal];
        let tiles_per_row = 1 + Method::ALL.len();
        let (w, h) = {
            let (w, h, _) = render::plane(&image, Plane::Axial, c);
            (w.max(mask.shape()[2]), h.max(mask.shape()[2]))
        };
        let scale = (192 / w.max(h)).max(1);
        let gap = 4;
        let mut canvas = Rgb::new(
            tiles_per_row * (w * scale + gap),
            planes.len() * (h * scale + gap),
        );
        for (r, pl) in planes.iter().enumerate() {
            let img = render::plane(&image, *pl, c);
            let truth = render::plane(&mask, *pl, c).2;
            let mut tiles = vec![render::tile(&img, range, None, Some(&truth))];
            for m in Method::ALL {
                let hv = read_image(&heat.join(format!("{case}_{}.nii.gz", m.name())))?.volume;
                let hr = (quantile(hv.data(), 0.5), quantile(hv.data(), 0.999));
                let hp = render::plane(&hv, *pl, c).2;
                tiles.push(render::tile(&img, range, Some((&hp, hr)), Some(&truth)));
            }
            for (col, t) in tiles.iter().enumerate() {
                canvas.blit(
                    &t.scaled(scale),
                    col * (w * scale + gap),
                    r * (h * scale + gap),
                );
            }
        }
        let file = format!("{case}.png");
        canvas.write_png(&report.join(&file))?;
        out.push((case, file));
    }
    Ok(out)
}
