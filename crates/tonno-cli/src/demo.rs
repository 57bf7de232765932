//! `tonno demo`: the whole method on the built-in synthetic data, in one
//! command: synth -> train -> segment with every method (and score every
//! test scan, as `tonno segment` does, into `predictions.csv`) -> evaluate
//! on the held-out cases (thresholds chosen on the validation cases, the
//! per-scan rule gated by the scan-level answer) -> a report with the
//! comparison table, pictures and Dice versus the number of directions K.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use tonno_core::io::dataset::LabelSource;
use tonno_core::io::{case_name, list_images, read_image, write_text};
use tonno_core::normalize::quantile;
use tonno_core::sampler::SamplingConfig;
use tonno_core::synth::{SynthConfig, write_dataset};
use tonno_ml::config::TrainConfig;
use tonno_ml::device::DeviceChoice;
use tonno_ml::methods::{Method, ProfileValue, SegmentConfig, SliceModel};
use tonno_ml::pipeline::{Job, segment_file};
use tonno_ml::run::{DataRecord, RunDir, TrainedModel};
use tonno_ml::train::{DataSpec, RunMode, Silent, TrainSummary, train};

use tonno_core::eval::folder::{
    Classification, auto_summary, evaluate_method, masks, oracle_dice, pairs,
};
use tonno_core::eval::{above, auto_threshold};
use tonno_ml::decision::Decision;

use crate::eval::{
    COLUMNS, MethodRow, auto_columns, classification_line, scan_answer, table, table_cells,
};
use crate::html;
use crate::render::{self, PREDICTED, Plane, Rgb, TRUTH};

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
    /// cpu, torch, torch-cuda[:N], vulkan or cuda.
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

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            // Ninety seconds of training learn nothing from the standard lesions
            // (measured: validation AUROC 0.5), so the quick run makes them brighter.
            Self {
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
            Self {
                contrast: SynthConfig::default().contrast,
                cases: 60,
                size: 48,
                train_minutes: 10.0,
                directions: 64,
                slices: 48,
                k_sweep: vec![8, 16, 32, 64, 128],
                timing_cases: 2,
            }
        }
    }
}

/// The folders a demo writes in `--out` (removed by `--force`).
const DEMO_FOLDERS: [&str; 8] = [
    "data",
    "run",
    "heatmaps",
    "val_heatmaps",
    "val_truth",
    "timing",
    "ksweep",
    "report",
];

/// What the report says about the run.
struct Facts<'a> {
    args: &'a Args,
    plan: &'a Plan,
    summary: &'a TrainSummary,
    train_seconds: f64,
    record: &'a DataRecord,
    test_cases: usize,
    slice_size: usize,
    /// Seconds per volume of all seven methods together.
    all_per_volume: f64,
    /// The test scans' scan-level answer (`heatmaps/predictions.csv`).
    classification: Option<&'a Classification>,
    wall_seconds: f64,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let plan = Plan::new(a.quick);
    let out = &a.out;
    clear_out(out, a.force)?;
    let data = out.join("data");
    let run_dir = out.join("run");
    let (summary, train_seconds) = synth_and_train(&a, &plan, &data, &run_dir)?;

    let device = a.device.open()?;
    let trained = TrainedModel::load(&run_dir, &device)?;
    let encoder = trained.inference_encoder();
    let decision = Decision::read(&run_dir.join(Decision::FILE))?;
    let seg = Segmenter {
        model: SliceModel::Net {
            encoder: &encoder,
            device: device.clone(),
            batch: a.device.default_inference_batch(),
        },
        sampling: trained.config.sampling.clone(),
        slices: plan.slices,
        decision,
    };
    let record = RunDir::new(&run_dir).read_config()?.data;
    let test_files = list_images(&data.join("imagesTs"))?;
    let val_truth = out.join("val_truth");
    let val_files = validation_inputs(&data, &record, &val_truth)?;

    let heat = out.join("heatmaps");
    let val_heat = out.join("val_heatmaps");
    let (all_per_volume, seconds) = segment_all(
        &seg,
        &plan,
        &test_files,
        &val_files,
        out,
        [&heat, &val_heat],
    )?;

    let truth = data.join("labelsTs");
    let Evaluated {
        rows,
        classified,
        gate,
    } = evaluate_all([&heat, &truth], [&val_heat, &val_truth])?;
    let k_points = k_sweep(
        &seg,
        &plan.k_sweep,
        &test_files,
        &truth,
        &out.join("ksweep"),
    )?;

    step(7, "writing the report");
    let report = out.join("report");
    std::fs::create_dir_all(&report)?;
    let figures = figures(&data, &heat, &report, 3, gate.as_ref())?;
    write_text(&report.join("dice_vs_k.svg"), &k_plot(&k_points), true)?;
    let mut columns = auto_columns(&rows);
    columns.push(("s / volume", seconds));
    let table_md = table(&rows, &columns);
    let facts = Facts {
        args: &a,
        plan: &plan,
        summary: &summary,
        train_seconds,
        record: &record,
        test_cases: test_files.len(),
        slice_size: seg.sampling.slice_size,
        all_per_volume,
        classification: classified.as_ref(),
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    let md = report_markdown(&facts, &table_md, &k_points, &figures);
    write_text(&report.join("report.md"), &md, true)?;
    let (header, cells) = table_cells(&rows, &columns);
    let page = html::Page {
        title: "tonno demo".into(),
        intro: report_intro(&facts),
        tables: vec![
            html::Table {
                id: "results".into(),
                caption: "Comparison on the test scans".into(),
                header,
                rows: cells,
            },
            k_table(&k_points, plan.slices),
        ],
        plots: vec![(
            "ToNNO on the test scans against the number of directions K (Dice at the oracle threshold)".into(),
            k_plot(&k_points),
        )],
        cases: html::folder_views(
            Some(&data.join("imagesTs")),
            &truth,
            &heat,
            &Method::ALL.map(|m| m.name().to_string()),
            usize::MAX,
        )?,
        cases_note: html::CASES_NOTE.into(),
    };
    html::write(&report.join("report.html"), &page, true)?;
    let results = serde_json::json!({
        "wall_seconds": facts.wall_seconds, "train": summary, "methods": rows,
        "classification": classified, "k_sweep": k_points,
    });
    write_text(
        &report.join("results.json"),
        &serde_json::to_string_pretty(&results)?,
        true,
    )?;
    outln!("{table_md}");
    if let Some(c) = &classified {
        outln!("{}\n", classification_line(c));
    }
    let dice_k: Vec<String> = k_points
        .iter()
        .map(|p| {
            let d = p.dice.map_or("n/a".into(), |d| format!("{d:.3}"));
            format!("K={}: {d}", p.directions)
        })
        .collect();
    outln!("ToNNO Dice versus K: {}", dice_k.join(", "));
    outln!(
        "demo finished in {:.1} minutes; report: {} (and report.md)",
        facts.wall_seconds / 60.0,
        report.join("report.html").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The validation scans' images, their masks copied to `val_truth` (the
/// validation split's thresholds are chosen on them).
fn validation_inputs(
    data: &Path,
    record: &DataRecord,
    val_truth: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(val_truth)?;
    let mut files = Vec::new();
    for c in &record.val_cases {
        let name = format!("{c}.nii.gz");
        std::fs::copy(data.join("labelsTr").join(&name), val_truth.join(&name))
            .with_context(|| format!("copying the mask of {c}"))?;
        files.push(data.join("imagesTr").join(name));
    }
    Ok(files)
}

/// Refuses a non-empty `out` without `force`; with it, removes what an
/// earlier demo wrote there (and nothing else).
fn clear_out(out: &Path, force: bool) -> anyhow::Result<()> {
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        anyhow::ensure!(
            force,
            "{} already exists; pass --force to replace the demo in it",
            out.display()
        );
        for sub in DEMO_FOLDERS {
            let p = out.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    Ok(())
}

/// Steps 1 and 2: the synthetic dataset in `data`, the default encoder
/// trained on it in `run_dir`; the summary and the training seconds.
fn synth_and_train(
    a: &Args,
    plan: &Plan,
    data: &Path,
    run_dir: &Path,
) -> anyhow::Result<(TrainSummary, f64)> {
    step(
        1,
        &format!(
            "writing {} synthetic scans of {}^3 voxels (lesion contrast {:?})",
            plan.cases, plan.size, plan.contrast
        ),
    );
    let synth = SynthConfig {
        size: plan.size,
        cases: plan.cases,
        seed: a.seed,
        contrast: plan.contrast,
        ..SynthConfig::default()
    };
    write_dataset(data, &synth, false, &|_, _| {})?;
    step(
        2,
        &format!(
            "training the default encoder for up to {} minutes",
            plan.train_minutes
        ),
    );
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
            root: data.to_path_buf(),
            labels: LabelSource::Default,
        },
        run_dir,
        config,
        RunMode::New,
        &Silent,
    )?;
    let train_seconds = t_train.elapsed().as_secs_f64();
    eprintln!(
        "      {} epochs in {:.0}s, best validation AUROC {:.3} (epoch {})",
        summary.epochs, train_seconds, summary.best_score, summary.best_epoch
    );
    Ok((summary, train_seconds))
}

/// Heatmaps of the trained model for the demo, and no masks: the demo
/// evaluates heatmaps, and gates the per-scan rule at evaluation time.
struct Segmenter<'a> {
    model: SliceModel<'a>,
    sampling: SamplingConfig,
    slices: usize,
    /// The run's decision threshold and score rule.
    decision: Decision,
}

impl Segmenter<'_> {
    /// Heatmaps of `methods` for every file into `dir` with `directions`
    /// directions; seconds per volume. With `scored`, every scan is also
    /// scored and called as `tonno segment` does, into `dir/predictions.csv`.
    fn run(
        &self,
        files: &[PathBuf],
        dir: &Path,
        methods: &[Method],
        directions: usize,
        scored: bool,
    ) -> anyhow::Result<f64> {
        std::fs::create_dir_all(dir)?;
        let job = Job {
            model: &self.model,
            sampling: &self.sampling,
            methods,
            threshold: None,
            auto_fraction: None,
            force: true,
            skip_existing: false,
            sum: false,
            rule: scored.then_some(&self.decision.rule),
            decision: scored.then_some(&self.decision),
            gate: false,
            body_mask: true,
            series: None,
        };
        let cfg = SegmentConfig {
            directions,
            slices: self.slices,
            pixels: self.sampling.slice_size,
            profile: ProfileValue::Logit,
            ..SegmentConfig::default()
        };
        let t = Instant::now();
        let mut results = Vec::new();
        for f in files {
            results.push(segment_file(f, dir, &job, &cfg)?);
        }
        let seconds = t.elapsed().as_secs_f64() / files.len().max(1) as f64;
        if scored {
            crate::segment::write_predictions(&dir.join("predictions.csv"), &results)?;
        }
        Ok(seconds)
    }
}

/// Steps 3 and 4: every method's heatmaps of the test and validation
/// scans into `heat`, then each method timed alone; seconds per volume of
/// all of them together, and of each alone.
fn segment_all(
    seg: &Segmenter<'_>,
    plan: &Plan,
    test_files: &[PathBuf],
    val_files: &[PathBuf],
    out: &Path,
    [heat, val_heat]: [&Path; 2],
) -> anyhow::Result<(f64, Vec<String>)> {
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
    let all_per_volume = seg.run(test_files, heat, &Method::ALL, plan.directions, true)?;
    seg.run(val_files, val_heat, &Method::ALL, plan.directions, false)?;
    step(4, "timing each method alone");
    let timed = &test_files[..plan.timing_cases.min(test_files.len())];
    let mut seconds = Vec::new();
    for m in Method::ALL {
        let s = seg.run(timed, &out.join("timing"), &[m], plan.directions, false)?;
        seconds.push(format!("{s:.1}"));
    }
    Ok((all_per_volume, seconds))
}

/// What step 5 found.
struct Evaluated {
    rows: Vec<MethodRow>,
    classified: Option<Classification>,
    /// Each test scan's predicted label, from `predictions.csv`.
    gate: Option<BTreeMap<String, bool>>,
}

/// Step 5: every method's figures on the test scans, with thresholds
/// chosen on the validation scans (`[heatmaps, masks]` folders of each),
/// the per-scan rule gated by the test heatmaps' `predictions.csv`; and the
/// scan-level answer's figures.
fn evaluate_all(test: [&Path; 2], val: [&Path; 2]) -> anyhow::Result<Evaluated> {
    step(
        5,
        "evaluating on the test scans (thresholds from the validation scans)",
    );
    let (classified, gate) = scan_answer(test[0], &masks(test[1])?)?;
    let rows = Method::ALL
        .iter()
        .map(|m| {
            let t = pairs(test[0], test[1], m.name())?;
            let v = pairs(val[0], val[1], m.name())?;
            Ok(MethodRow {
                method: m.name().to_string(),
                eval: evaluate_method(&t, Some(&v), None)?,
                classification: classified.clone(),
                auto_rule: Some(auto_summary(&t, m.auto_fraction(), gate.as_ref())?),
                oracle_dice: oracle_dice(&t),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Evaluated {
        rows,
        classified,
        gate,
    })
}

/// Step 6: ToNNO on the test scans at each K of `ks`, scored at the oracle
/// threshold: the sweep asks what more directions buy, so the threshold
/// should not add validation noise to that answer.
fn k_sweep(
    seg: &Segmenter<'_>,
    ks: &[usize],
    test_files: &[PathBuf],
    truth: &Path,
    root: &Path,
) -> anyhow::Result<Vec<KPoint>> {
    step(
        6,
        &format!("ToNNO's Dice versus the number of directions K in {ks:?}"),
    );
    let mut points = Vec::new();
    for &k in ks {
        let dir = root.join(format!("k{k}")).join("test");
        let spv = seg.run(test_files, &dir, &[Method::Tonno], k, false)?;
        let e = evaluate_method(&pairs(&dir, truth, "tonno")?, None, None)?;
        points.push(KPoint {
            directions: k,
            dice: e.mean_dice,
            voxel_auroc: e.voxel_auroc,
            voxel_average_precision: e.voxel_average_precision,
            seconds_per_volume: spv,
        });
    }
    Ok(points)
}

/// Dice and voxel AUROC versus K, as SVG.
fn k_plot(points: &[KPoint]) -> String {
    let curve = |f: fn(&KPoint) -> Option<f64>| -> Vec<(f64, f64)> {
        points
            .iter()
            .map(|p| (p.directions as f64, f(p).unwrap_or(f64::NAN)))
            .collect()
    };
    render::svg_plot(
        "ToNNO on the test scans",
        "directions K",
        "value",
        &[
            ("Dice", curve(|p| p.dice)),
            ("voxel AUROC", curve(|p| p.voxel_auroc)),
        ],
    )
}

/// The report's opening paragraphs: what ran, on what, for how long.
fn report_intro(f: &Facts<'_>) -> Vec<String> {
    let (a, plan, summary) = (f.args, f.plan, f.summary);
    vec![
        format!(
            "Command: tonno demo{}{} (seed {}), {:.1} minutes on this machine.",
            if a.quick { " --quick" } else { "" },
            if a.seed != 0 {
                format!(" --seed {}", a.seed)
            } else {
                String::new()
            },
            a.seed,
            f.wall_seconds / 60.0
        ),
        format!(
            "Data: {} synthetic head scans of {}^3 voxels (tonno synth, lesion contrast {}-{}), {} for training, {} for validation, {} held out for testing. \
             Encoder: the default CNN, trained {:.1} minutes ({} epochs; best validation AUROC {:.3} at epoch {}). \
             Heatmaps: K = {} directions x S = {} slices of {}x{} pixels for the tomographic methods; all seven methods together took {:.1} s per volume.",
            plan.cases,
            plan.size,
            plan.contrast.0,
            plan.contrast.1,
            f.record.train_cases.len(),
            f.record.val_cases.len(),
            f.test_cases,
            f.train_seconds / 60.0,
            summary.epochs,
            summary.best_score,
            summary.best_epoch,
            plan.directions,
            plan.slices,
            f.slice_size,
            f.slice_size,
            f.all_per_volume
        ) + &f.classification.map_or(String::new(), |c| {
            format!(
                " The test scans' {}, at the decision threshold chosen on the validation scans in training.",
                classification_line(c)
            )
        }),
        format!(
            "{COLUMNS} The threshold column is chosen on the validation scans ('val'); 's / volume' is each method run alone."
        ),
    ]
}

/// ToNNO's figures at each K of the sweep.
fn k_table(points: &[KPoint], slices: usize) -> html::Table {
    let f3 = |v: Option<f64>| v.map_or("n/a".into(), |d| format!("{d:.3}"));
    html::Table {
        id: "k-sweep".into(),
        caption: format!(
            "ToNNO against the number of directions K (S = {slices}; oracle threshold)"
        ),
        header: [
            "K",
            "Dice (oracle)",
            "voxel AUROC",
            "voxel AP",
            "s / volume",
        ]
        .map(String::from)
        .to_vec(),
        rows: points
            .iter()
            .map(|p| {
                vec![
                    p.directions.to_string(),
                    f3(p.dice),
                    f3(p.voxel_auroc),
                    f3(p.voxel_average_precision),
                    format!("{:.1}", p.seconds_per_volume),
                ]
            })
            .collect(),
    }
}

/// `report/report.md`: the run, the comparison table, Dice versus K and
/// the pictures.
fn report_markdown(
    f: &Facts<'_>,
    table_md: &str,
    k_points: &[KPoint],
    figures: &[(String, String)],
) -> String {
    let intro = report_intro(f);
    let mut md = format!(
        "# tonno demo\n\n{}\n\n{}\n\n## Comparison on the test scans\n\n{table_md}\n{}\n\n",
        intro[0], intro[1], intro[2]
    );
    let k = k_table(k_points, f.plan.slices);
    md += &format!(
        "## Dice versus the number of directions K (ToNNO)\n\n{}: Dice at the test scans' own best threshold, so the curve shows \
         what more directions buy, not an unbiased score.\n\n![Dice versus K](dice_vs_k.svg)\n\n| {} |\n|{}\n",
        k.caption,
        k.header.join(" | "),
        "---|".repeat(k.header.len())
    );
    for row in &k.rows {
        md += &format!("| {} |\n", row.join(" | "));
    }
    md += "\n## Test scans\n\nEach picture: rows are the axial, coronal and sagittal planes through the lesion; columns are the image with the \
           truth outlined in green, then the heatmaps of ";
    md += &Method::ALL.map(|m| m.name()).join(", ");
    md += " (each scaled from its median to its 99.9th percentile), with the mask that `tonno segment --threshold auto` writes outlined in \
           cyan (none where the scan-level answer calls the scan negative).\n\n";
    for (case, png) in figures {
        md += &format!("### {case}\n\n![{case}]({png})\n\n");
    }
    md
}

/// Pictures of up to `n` positive test scans: for each, three planes
/// through the lesion's centre, the image and every method's heatmap.
fn figures(
    data: &Path,
    heat: &Path,
    report: &Path,
    n: usize,
    gate: Option<&BTreeMap<String, bool>>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for mask_path in list_images(&data.join("labelsTs"))? {
        if out.len() >= n {
            break;
        }
        let case = case_name(&mask_path);
        let mask = read_image(&mask_path)?.volume;
        let (c, lesion) = html::focus(&mask);
        if !lesion {
            continue;
        }
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
        // Each method's heatmap, its colour range and the mask `tonno segment
        // --threshold auto` writes (empty when the gate calls the scan
        // negative), for all three planes.
        let called = gate.is_none_or(|g| g.get(&case).copied().unwrap_or(true));
        let heats = Method::ALL
            .iter()
            .map(|m| {
                let hv = read_image(&heat.join(format!("{case}_{}.nii.gz", m.name())))?.volume;
                let range = (quantile(hv.data(), 0.5), quantile(hv.data(), 0.999));
                let t = auto_threshold(hv.data(), m.auto_fraction());
                Ok((hv, range, t))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (r, pl) in planes.iter().enumerate() {
            let img = render::plane(&image, *pl, c);
            let truth = render::plane(&mask, *pl, c).2;
            let mut tiles = vec![render::tile(&img, range, None, &[(&truth, TRUTH)])];
            for (hv, hr, t) in &heats {
                let hp = render::plane(hv, *pl, c).2;
                let mask: Vec<f32> = above(&hp, *t)
                    .map(|inside| f32::from(u8::from(called && inside)))
                    .collect();
                tiles.push(render::tile(
                    &img,
                    range,
                    Some((&hp, *hr)),
                    &[(&truth, TRUTH), (&mask, PREDICTED)],
                ));
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
