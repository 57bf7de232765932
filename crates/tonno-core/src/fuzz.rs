//! A fuzzing harness that runs on stable Rust: structure-aware mutations of
//! valid seed files, each mutant given to a reader in-process, with panics
//! caught, a wall-clock limit per input and (when the caller supplies an
//! allocation probe) a limit on the largest single allocation.
//!
//! cargo-fuzz needs a nightly toolchain; this needs none, and CI runs it as
//! an ordinary test (`tests/fuzz.rs` here and in tonno-ml) with a fixed
//! seed and number of inputs. `TONNO_FUZZ_INPUTS` and `TONNO_FUZZ_SEED`
//! make a longer or different run; `TONNO_FUZZ_OUT` keeps every finding as
//! files to reproduce it.
//!
//! A mutant is one or more files written into a scratch folder; the target
//! opens the first. A target passes an input when it returns (either way)
//! within the time limit without panicking, its error names one of the
//! input's files, and it allocated no more than the limit.

use std::any::Any;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::rng::Rng;

/// What a seed file is, so that mutations can follow its structure.
#[derive(Debug, Clone)]
pub enum Kind {
    /// Never mutated (an image a dataset.json points at, say).
    Fixed,
    /// Lines of `key: value` or `key = value` text (NRRD headers, CSV,
    /// TOML, JSON), mutated line by line with the format's dictionary:
    /// whole lines to insert and tokens to put in place of values.
    Text {
        lines: &'static [&'static str],
        tokens: &'static [&'static str],
    },
    /// A NRRD file with attached data: its header as [`Kind::Text`], its
    /// data as raw bytes.
    TextThenData {
        lines: &'static [&'static str],
        tokens: &'static [&'static str],
    },
    /// Binary with typed fields at known offsets (a NIfTI-1 header).
    Binary { fields: &'static [Field] },
    /// A gzip stream of another kind: mutated inside and recompressed, or
    /// as compressed bytes (truncated, flipped).
    Gzip(Box<Kind>),
}

/// A typed field of a binary header.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub offset: usize,
    pub ty: FieldType,
    /// How many consecutive values (`dim` is eight `i16`).
    pub count: usize,
}

/// The type of a binary header field.
#[derive(Debug, Clone, Copy)]
pub enum FieldType {
    I16,
    I32,
    F32,
    Bytes,
}

/// One file of a seed or an input.
#[derive(Debug, Clone)]
pub struct SeedFile {
    pub name: String,
    pub bytes: Vec<u8>,
    pub kind: Kind,
}

/// What went wrong on one input.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Which input of the run (reproducible from the seed).
    pub index: usize,
    /// The panic message, "hang", "allocated N bytes" or "error names no
    /// input file".
    pub what: String,
    /// The input's files.
    pub files: Vec<(String, Vec<u8>)>,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub inputs: usize,
    /// Inputs the target accepted (valid after mutation).
    pub accepted: usize,
    /// Inputs the target refused with an error.
    pub refused: usize,
    pub findings: Vec<Finding>,
    pub seconds: f64,
}

/// Per-thread allocation probe: `reset` before an input, `peak` after it
/// (the largest single allocation, in bytes, on the calling thread).
#[derive(Debug, Clone, Copy)]
pub struct AllocProbe {
    pub reset: fn(),
    pub peak: fn() -> usize,
    /// Inputs allocating more than this in one block are findings.
    pub limit: usize,
}

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct Config {
    pub inputs: usize,
    pub seed: u64,
    /// An input that takes longer is a hang: the run stops there.
    pub time_limit: Duration,
    pub alloc: Option<AllocProbe>,
    /// Scratch folder (created if missing); each input's files go there.
    pub scratch: PathBuf,
}

impl Config {
    /// `inputs` inputs (or `TONNO_FUZZ_INPUTS`), seed 0 (or
    /// `TONNO_FUZZ_SEED`), 5 s per input.
    pub fn from_env(inputs: usize, scratch: &Path) -> Self {
        let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        Self {
            inputs: var("TONNO_FUZZ_INPUTS").map_or(inputs, |n| n as usize),
            seed: var("TONNO_FUZZ_SEED").unwrap_or(0),
            time_limit: Duration::from_secs(5),
            alloc: None,
            scratch: scratch.to_path_buf(),
        }
    }
}

/// A target: opens the first file of an input; `Err` holds the error's
/// message, which must name one of the input's files.
pub type Target = fn(&Path) -> Result<(), String>;

/// Runs `config.inputs` mutants of `seeds` through `target`.
pub fn run(seeds: &[Vec<SeedFile>], target: Target, config: &Config) -> Report {
    assert!(!seeds.is_empty(), "a fuzz run needs at least one seed");
    std::fs::create_dir_all(&config.scratch).expect("cannot create the fuzz scratch folder");
    let (to_worker, inbox) = mpsc::channel::<(usize, Vec<(String, Vec<u8>)>)>();
    let (to_main, outbox) = mpsc::channel::<Outcome>();
    let scratch = config.scratch.clone();
    let alloc = config.alloc;
    // One worker runs every input, so that a hang can be noticed by the
    // main thread (a stuck thread cannot be killed; the run stops instead).
    std::thread::spawn(move || {
        for (index, files) in inbox {
            let outcome = run_one(index, &files, target, &scratch, alloc);
            if to_main.send(outcome).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut rng = Rng::new(config.seed);
    let mut report = Report::default();
    for index in 0..config.inputs {
        let seed = &seeds[rng.below(seeds.len())];
        let files = mutate(&mut rng, seed);
        to_worker
            .send((index, files.clone()))
            .expect("the fuzz worker stopped");
        report.inputs += 1;
        match outbox.recv_timeout(config.time_limit) {
            Ok(Outcome::Accepted) => report.accepted += 1,
            Ok(Outcome::Refused) => report.refused += 1,
            Ok(Outcome::Finding(what)) => report.findings.push(Finding { index, what, files }),
            Err(_) => {
                report.findings.push(Finding {
                    index,
                    what: format!("hang: no answer within {:?}", config.time_limit),
                    files,
                });
                break;
            }
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    report
}

enum Outcome {
    Accepted,
    Refused,
    Finding(String),
}

fn run_one(
    index: usize,
    files: &[(String, Vec<u8>)],
    target: Target,
    scratch: &Path,
    alloc: Option<AllocProbe>,
) -> Outcome {
    // Each input in a fresh folder: a file left by an earlier one must not
    // change what this one reads.
    let dir = scratch.join(format!("input-{index}"));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return Outcome::Finding(format!("harness: cannot create {}: {e}", dir.display()));
    }
    for (name, bytes) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = std::fs::write(&path, bytes) {
            return Outcome::Finding(format!("harness: cannot write {}: {e}", path.display()));
        }
    }
    if let Some(a) = alloc {
        (a.reset)();
    }
    let main = dir.join(&files[0].0);
    let result = catch_unwind(AssertUnwindSafe(|| target(&main)));
    let peak = alloc.map(|a| ((a.peak)(), a.limit));
    let _ = std::fs::remove_dir_all(&dir);
    let outcome = match result {
        Err(payload) => Outcome::Finding(format!("panic: {}", panic_message(&*payload))),
        Ok(Ok(())) => Outcome::Accepted,
        Ok(Err(message)) => {
            let names_a_file = files.iter().any(|(name, _)| {
                let leaf = Path::new(name).file_name().unwrap_or_default();
                message.contains(&*leaf.to_string_lossy())
            }) || message.contains(&*dir.to_string_lossy());
            if names_a_file {
                Outcome::Refused
            } else {
                Outcome::Finding(format!("error names no input file: {message}"))
            }
        }
    };
    match peak {
        Some((bytes, limit)) if bytes > limit => Outcome::Finding(format!(
            "allocated {bytes} bytes in one block (limit {limit})"
        )),
        _ => outcome,
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// An error and its causes, as the CLI prints them (what a target returns).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s += &format!(": {c}");
        cause = c.source();
    }
    s
}

/// Prints a run's figures and first findings, keeps the findings' files
/// under `TONNO_FUZZ_OUT/name` when that is set, and panics when there is
/// a finding, or when fewer than 1 in 50 mutants were valid files (a
/// mutator that only makes garbage tests nothing but each reader's first
/// check).
pub fn assert_clean(name: &str, report: &Report) {
    eprintln!(
        "fuzz {name}: {} inputs in {:.1} s, {} accepted, {} refused, {} findings",
        report.inputs,
        report.seconds,
        report.accepted,
        report.refused,
        report.findings.len()
    );
    if let Ok(out) = std::env::var("TONNO_FUZZ_OUT") {
        save_findings(report, &Path::new(&out).join(name))
            .expect("cannot write the fuzz findings to TONNO_FUZZ_OUT");
    }
    for f in report.findings.iter().take(5) {
        eprintln!("  input {}: {}", f.index, f.what);
    }
    assert!(
        report.findings.is_empty(),
        "{name}: {} of {} inputs crashed, hung, over-allocated or gave an anonymous error (first: {})",
        report.findings.len(),
        report.inputs,
        report.findings[0].what
    );
    assert!(
        report.accepted > report.inputs / 50,
        "{name}: only {} of {} mutants were valid files",
        report.accepted,
        report.inputs
    );
}

/// Writes each finding's files under `dir/finding-N/` (for `TONNO_FUZZ_OUT`).
pub fn save_findings(report: &Report, dir: &Path) -> std::io::Result<()> {
    for f in &report.findings {
        let d = dir.join(format!("finding-{}", f.index));
        std::fs::create_dir_all(&d)?;
        for (name, bytes) in &f.files {
            std::fs::write(d.join(name.replace('/', "_")), bytes)?;
        }
        std::fs::write(d.join("what.txt"), &f.what)?;
    }
    Ok(())
}

/// A mutant of one seed: one to three mutations of one of its mutable files.
pub fn mutate(rng: &mut Rng, seed: &[SeedFile]) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = seed
        .iter()
        .map(|f| (f.name.clone(), f.bytes.clone()))
        .collect();
    let mutable: Vec<usize> = (0..seed.len())
        .filter(|&i| !matches!(seed[i].kind, Kind::Fixed))
        .collect();
    if mutable.is_empty() {
        return files;
    }
    let which = mutable[rng.below(mutable.len())];
    for _ in 0..1 + rng.below(3) {
        files[which].1 = mutate_kind(rng, &seed[which].kind, &files[which].1);
    }
    // Now and then a file of the input goes missing.
    if seed.len() > 1 && rng.below(50) == 0 {
        let gone = 1 + rng.below(seed.len() - 1);
        files.remove(gone);
    }
    files
}

fn mutate_kind(rng: &mut Rng, kind: &Kind, bytes: &[u8]) -> Vec<u8> {
    match kind {
        Kind::Fixed => bytes.to_vec(),
        Kind::Text { lines, tokens } => {
            if rng.below(8) == 0 {
                mutate_bytes(rng, bytes)
            } else {
                mutate_text(rng, bytes, lines, tokens)
            }
        }
        Kind::TextThenData { lines, tokens } => {
            let split = find(bytes, b"\n\n").map_or(bytes.len(), |p| p + 2);
            let (head, data) = bytes.split_at(split);
            match rng.below(4) {
                0 => mutate_bytes(rng, bytes),
                1 => [head, &mutate_bytes(rng, data)].concat(),
                _ => {
                    let mut head = mutate_text(rng, head, lines, tokens);
                    if !head.ends_with(b"\n\n") && rng.below(4) != 0 {
                        head.extend_from_slice(b"\n");
                    }
                    [&head[..], data].concat()
                }
            }
        }
        Kind::Binary { fields } => {
            if rng.below(3) == 0 || fields.is_empty() {
                mutate_bytes(rng, bytes)
            } else {
                let field = fields[rng.below(fields.len())];
                mutate_field(rng, bytes, &field)
            }
        }
        Kind::Gzip(inner) => {
            if rng.below(4) == 0 {
                mutate_bytes(rng, bytes)
            } else {
                let plain = gunzip_all(bytes).unwrap_or_default();
                gzip(&mutate_kind(rng, inner, &plain))
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Values that break readers: zero, one, negatives, the edges of each
/// integer type, and non-finite and huge floats.
const INTS: [i64; 12] = [
    0,
    1,
    -1,
    2,
    7,
    8,
    255,
    32767,
    -32768,
    65535,
    i32::MAX as i64,
    i32::MIN as i64,
];
const FLOATS: [f32; 10] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    1e-30,
    1e30,
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::MAX,
];

fn mutate_field(rng: &mut Rng, bytes: &[u8], field: &Field) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let width = match field.ty {
        FieldType::I16 => 2,
        FieldType::I32 | FieldType::F32 => 4,
        FieldType::Bytes => 1,
    };
    let at = field.offset + width * rng.below(field.count.max(1));
    if at + width > out.len() {
        return out;
    }
    let int = INTS[rng.below(INTS.len())];
    let new: Vec<u8> = match field.ty {
        FieldType::I16 => (int as i16).to_le_bytes().to_vec(),
        FieldType::I32 => (int as i32).to_le_bytes().to_vec(),
        FieldType::F32 => FLOATS[rng.below(FLOATS.len())].to_le_bytes().to_vec(),
        FieldType::Bytes => vec![rng.next_u64() as u8],
    };
    out[at..at + width].copy_from_slice(&new);
    out
}

fn mutate_bytes(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match rng.below(6) {
        0 => out.truncate(rng.below(out.len() + 1)),
        1 => {
            if !out.is_empty() {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
        }
        2 => {
            let n = 1 + rng.below(64);
            out.extend((0..n).map(|_| rng.next_u64() as u8));
        }
        3 => {
            if !out.is_empty() {
                let i = rng.below(out.len());
                out[i] = [0, 0xff, 0x7f, 0x80][rng.below(4)];
            }
        }
        4 => {
            // Cut a slice out of the middle.
            if out.len() > 2 {
                let a = rng.below(out.len());
                let b = (a + 1 + rng.below(16)).min(out.len());
                out.drain(a..b);
            }
        }
        _ => out.clear(),
    }
    out
}

fn mutate_text(rng: &mut Rng, bytes: &[u8], dictionary: &[&str], tokens: &[&str]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let n = lines.len();
    match rng.below(7) {
        0 if !dictionary.is_empty() => {
            // After the first line: NRRD's magic and CSV's header stay first.
            let at = if n == 0 { 0 } else { 1 + rng.below(n) };
            lines.insert(at, dictionary[rng.below(dictionary.len())].to_string());
        }
        1 if n > 1 => {
            lines.remove(rng.below(n));
        }
        2 if n > 1 => {
            let (a, b) = (rng.below(n), rng.below(n));
            lines.swap(a, b);
        }
        3 if n > 0 => {
            let i = rng.below(n);
            let copy = lines[i].clone();
            lines.insert(i, copy);
        }
        4 if !tokens.is_empty() && n > 0 => {
            // Replace a value (what follows ':', '=' or ',') with a token.
            let i = rng.below(n);
            let line = &lines[i];
            if let Some(p) = line.rfind([':', '=', ',']) {
                let token = tokens[rng.below(tokens.len())];
                lines[i] = format!("{} {token}", &line[..=p]);
            }
        }
        5 if n > 0 => {
            // Replace one number in a line with a token.
            let i = rng.below(n);
            let starts: Vec<usize> = lines[i]
                .char_indices()
                .filter(|&(_, c)| c.is_ascii_digit())
                .map(|(p, _)| p)
                .collect();
            if !starts.is_empty() && !tokens.is_empty() {
                let p = starts[rng.below(starts.len())];
                let end = lines[i][p..]
                    .find(|c: char| !c.is_ascii_digit() && c != '.')
                    .map_or(lines[i].len(), |e| p + e);
                let token = tokens[rng.below(tokens.len())];
                lines[i].replace_range(p..end, token);
            }
        }
        _ => return mutate_bytes(rng, bytes),
    }
    lines.join("\n").into_bytes()
}

/// Compresses bytes as one gzip member.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("writing to a Vec cannot fail");
    e.finish().expect("writing to a Vec cannot fail")
}

fn gunzip_all(bytes: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// The fields of a NIfTI-1 header worth mutating, at their offsets.
pub const NIFTI1_FIELDS: &[Field] = &[
    Field {
        offset: 0,
        ty: FieldType::I32,
        count: 1,
    }, // sizeof_hdr
    Field {
        offset: 40,
        ty: FieldType::I16,
        count: 8,
    }, // dim
    Field {
        offset: 70,
        ty: FieldType::I16,
        count: 1,
    }, // datatype
    Field {
        offset: 72,
        ty: FieldType::I16,
        count: 1,
    }, // bitpix
    Field {
        offset: 76,
        ty: FieldType::F32,
        count: 8,
    }, // pixdim
    Field {
        offset: 108,
        ty: FieldType::F32,
        count: 1,
    }, // vox_offset
    Field {
        offset: 112,
        ty: FieldType::F32,
        count: 2,
    }, // scl_slope, scl_inter
    Field {
        offset: 252,
        ty: FieldType::I16,
        count: 2,
    }, // qform_code, sform_code
    Field {
        offset: 256,
        ty: FieldType::F32,
        count: 6,
    }, // quatern_b..qoffset_z
    Field {
        offset: 280,
        ty: FieldType::F32,
        count: 12,
    }, // srow_x..srow_z
    Field {
        offset: 344,
        ty: FieldType::Bytes,
        count: 4,
    }, // magic
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutants_are_reproducible_from_the_seed() {
        let seed = vec![SeedFile {
            name: "a.csv".into(),
            bytes: b"case,label\na,1\nb,0\n".to_vec(),
            kind: Kind::Text {
                lines: &["x,2"],
                tokens: &["-1"],
            },
        }];
        let draw = |s| {
            let mut rng = Rng::new(s);
            (0..50).map(|_| mutate(&mut rng, &seed)).collect::<Vec<_>>()
        };
        let (a, b) = (draw(3), draw(3));
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| x[0].1 == y[0].1));
        let changed = a.iter().filter(|m| m[0].1 != seed[0].bytes).count();
        assert!(
            changed > 40,
            "only {changed} of 50 mutants differ from the seed"
        );
    }

    #[test]
    fn the_runner_reports_panics_hangs_and_errors_that_name_no_file() {
        let seed = vec![vec![SeedFile {
            name: "x.txt".into(),
            bytes: b"1\n".to_vec(),
            kind: Kind::Fixed,
        }]];
        let scratch = std::env::temp_dir().join(format!("tonno-fuzz-self-{}", std::process::id()));
        let mut config = Config {
            inputs: 3,
            seed: 0,
            time_limit: Duration::from_millis(500),
            alloc: None,
            scratch: scratch.clone(),
        };
        let panics: Target = |_| panic!("boom");
        let r = run(&seed, panics, &config);
        assert_eq!(r.findings.len(), 3);
        assert!(
            r.findings[0].what.contains("boom"),
            "{}",
            r.findings[0].what
        );

        let anonymous: Target = |_| Err("something failed".into());
        let r = run(&seed, anonymous, &config);
        assert_eq!(r.findings.len(), 3);
        assert!(r.findings[0].what.contains("names no input file"));

        let named: Target = |p| Err(format!("{}: bad", p.display()));
        let r = run(&seed, named, &config);
        assert!(r.findings.is_empty());
        assert_eq!(r.refused, 3);

        config.inputs = 10;
        let hangs: Target = |_| {
            std::thread::sleep(Duration::from_secs(2));
            Ok(())
        };
        let r = run(&seed, hangs, &config);
        assert_eq!(r.inputs, 1, "the run stops at the first hang");
        assert!(r.findings[0].what.starts_with("hang"));
        let _ = std::fs::remove_dir_all(scratch);
    }
}
