//! Helpers for running the real `tonno` binary in a temporary folder.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The outcome of a `tonno` run, with readable failure messages.
#[derive(Debug)]
pub struct Run {
    pub out: Output,
    pub args: Vec<String>,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    /// Asserts success and returns stdout.
    pub fn ok(&self) -> String {
        assert!(
            self.out.status.success(),
            "tonno {} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
            self.args.join(" "),
            self.out.status,
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }

    /// Asserts a non-zero exit whose stderr contains every needle; returns stderr.
    pub fn fails_with(&self, needles: &[&str]) -> String {
        assert!(
            !self.out.status.success(),
            "tonno {} succeeded but should fail\n{}",
            self.args.join(" "),
            self.stdout()
        );
        let err = self.stderr();
        assert!(
            !err.contains("panicked"),
            "tonno {} panicked:\n{err}",
            self.args.join(" ")
        );
        for n in needles {
            assert!(
                err.contains(n),
                "stderr of tonno {} lacks {n:?}:\n{err}",
                self.args.join(" ")
            );
        }
        err
    }

    pub fn json(&self) -> serde_json::Value {
        let s = self.ok();
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
    }
}

/// Runs `tonno` with `args` in `dir`.
pub fn tonno(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_tonno"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the tonno binary runs");
    Run {
        out,
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tonno-core/tests/fixtures")
}

/// Runs a Python snippet when python3 with nibabel is available. Returns
/// `None` when it is not (and the environment does not require it: CI sets
/// TONNO_REQUIRE_PYTHON=1, so there a missing nibabel fails the test).
pub fn python(script: &str, dir: &Path) -> Option<String> {
    python_with("nibabel, nrrd", &[], "nibabel and pynrrd", script, dir)
}

/// [`python`] with other modules (`imports`, as an import statement lists
/// them) and command-line tools (each run with `-h`) required.
pub fn python_with(
    imports: &str,
    tools: &[&str],
    what: &str,
    script: &str,
    dir: &Path,
) -> Option<String> {
    let runs = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let available = runs("python3", &["-c", &format!("import {imports}")])
        && tools.iter().all(|t| runs(t, &["-h"]));
    if !available {
        assert!(
            std::env::var_os("TONNO_REQUIRE_PYTHON").is_none(),
            "TONNO_REQUIRE_PYTHON is set but {what} is missing"
        );
        eprintln!("skipping a cross-check: {what} not found");
        return None;
    }
    let out = Command::new("python3")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes a 2-case synthetic dataset of `size`^3 voxels to `dir/d` and returns
/// the path of one of its training images.
pub fn synth_training_image(dir: &Path, size: usize) -> String {
    let size = size.to_string();
    tonno(
        dir,
        &["synth", "--out", "d", "--cases", "2", "--size", &size],
    )
    .ok();
    let image = std::fs::read_dir(dir.join("d/imagesTr"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    image.to_str().unwrap().to_string()
}
