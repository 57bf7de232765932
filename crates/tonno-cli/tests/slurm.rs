//! `tonno segment --shard slurm` under a real SLURM: a job array over a
//! folder segments every case exactly once. Needs a running cluster
//! (`scripts/slurm_local.sh start` makes one on this machine, as `.ci/run`
//! does); without one the test is skipped, unless TONNO_REQUIRE_SLURM is set.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::tonno;

fn slurm_is_up() -> bool {
    let required = std::env::var_os("TONNO_REQUIRE_SLURM").is_some();
    let node_answers = || {
        Command::new("sinfo")
            .args(["-h", "-o", "%t"])
            .output()
            .is_ok_and(|o| {
                o.status.success()
                    && String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .any(|l| ["idle", "mix", "alloc"].iter().any(|s| l.starts_with(s)))
            })
    };
    // A busy controller can miss one query (seen under a parallel build):
    // ask again before concluding, for longer when the cluster must be there.
    let tries = if required { 30 } else { 3 };
    let up = (0..tries).any(|i| {
        if i > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        node_answers()
    });
    if !up {
        assert!(
            !required,
            "TONNO_REQUIRE_SLURM is set but no SLURM node is up (scripts/slurm_local.sh start)"
        );
        eprintln!("skipping: no SLURM cluster (scripts/slurm_local.sh start makes one)");
    }
    up
}

fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Waits until job `id` has left the queue (sbatch --wait polls every ten
/// seconds or so; this is quicker).
fn wait_for(id: &str, limit: Duration) {
    let start = Instant::now();
    // squeue lists pending and running jobs; once the controller has
    // forgotten a finished job, it fails on its id instead.
    let queued = || {
        Command::new("squeue")
            .args(["-h", "-j", id])
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.trim_ascii().is_empty())
    };
    while queued() {
        assert!(
            start.elapsed() < limit,
            "job {id} still queued after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_sbatch_array_segments_every_case_of_a_folder_exactly_once() {
    if !slurm_is_up() {
        return;
    }
    // slurmd runs the tasks as this user in this folder, on this machine.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tonno(
        d,
        &[
            "synth", "--out", "data", "--cases", "7", "--size", "16", "--seed", "4",
        ],
    )
    .ok();
    let input = d.join("data/imagesTr");
    let cases: Vec<String> = std::fs::read_dir(&input)
        .unwrap()
        .map(|e| case(&e.unwrap().path()))
        .collect();
    let tasks = 3;
    let command = format!(
        "{} segment --encoder sum --input {} --out {} --directions 8 --slices 16 --shard slurm",
        env!("CARGO_BIN_EXE_tonno"),
        input.display(),
        d.join("seg").display()
    );
    std::fs::create_dir(d.join("logs")).unwrap();
    let id = run(
        "sbatch",
        &[
            "--parsable",
            &format!("--array=1-{tasks}"),
            "--job-name=tonno-test",
            &format!("--chdir={}", d.display()),
            &format!("--output={}/logs/task_%a.out", d.display()),
            &format!("--error={}/logs/task_%a.err", d.display()),
            "--wrap",
            &command,
        ],
    );
    let id = id.trim().split(';').next().unwrap().to_string();
    wait_for(&id, Duration::from_secs(300));

    let mut segmented = Vec::new();
    for task in 1..=tasks {
        let log = |ext: &str| {
            std::fs::read_to_string(d.join(format!("logs/task_{task}.{ext}")))
                .unwrap_or_else(|e| panic!("task {task}'s {ext} log: {e}"))
        };
        let (out, err) = (log("out"), log("err"));
        assert!(
            out.contains("wrote") && !err.contains("error"),
            "task {task}:\n{out}\n{err}"
        );
        assert!(
            err.contains(&format!("part {} of {tasks}", task - 1)),
            "task {task} took another part:\n{err}"
        );
        segmented.extend(
            out.lines()
                .filter(|l| l.contains("heatmap(s) in"))
                .map(|l| l.split(':').next().unwrap().to_string()),
        );
    }
    let (mut segmented, mut cases) = (segmented, cases);
    segmented.sort();
    cases.sort();
    assert_eq!(
        segmented, cases,
        "every case exactly once, across the tasks"
    );
    for c in &cases {
        assert!(d.join(format!("seg/{c}_tonno.nii.gz")).is_file(), "{c}");
    }
    // SLURM's own record: every task of the array completed with status 0.
    let record = run("scontrol", &["show", "job", &id]);
    let states: Vec<&str> = record
        .split_whitespace()
        .filter(|w| w.starts_with("JobState=") || w.starts_with("ExitCode="))
        .collect();
    assert_eq!(states.len(), 2 * tasks, "{record}");
    assert!(
        states
            .iter()
            .all(|w| *w == "JobState=COMPLETED" || *w == "ExitCode=0:0"),
        "{record}"
    );
}

fn case(p: &Path) -> String {
    let n = p.file_name().unwrap().to_string_lossy().into_owned();
    n.trim_end_matches(".nii.gz").to_string()
}
