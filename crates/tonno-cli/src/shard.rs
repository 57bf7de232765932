//! `tonno segment --shard I/N | slurm`: the I-th of N disjoint parts of the
//! input list, so that N processes (a SLURM job array, say) segment one
//! folder together, each case exactly once, into one output folder. Each
//! part writes its own `predictions.shard-I-of-N.csv`; `tonno eval` reads
//! them all.

use std::path::PathBuf;

/// What `--shard` says: a part given by number, or the one SLURM's job
/// array environment names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardArg {
    Given(Shard),
    Slurm,
}

/// Part `index` (from 0) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// Parses `I/N` (I from 0 to N - 1) or `slurm`.
pub fn parse(s: &str) -> Result<ShardArg, String> {
    if s == "slurm" {
        return Ok(ShardArg::Slurm);
    }
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected I/N (e.g. 0/8) or slurm"))?;
    let number = |t: &str| {
        t.trim()
            .parse::<usize>()
            .map_err(|_| format!("{s:?}: {t:?} is not a whole number"))
    };
    let shard = Shard {
        index: number(i)?,
        count: number(n)?,
    };
    shard.check().map_err(|e| format!("{s:?}: {e}"))?;
    Ok(ShardArg::Given(shard))
}

impl Shard {
    fn check(&self) -> Result<(), String> {
        if self.count == 0 {
            return Err("the number of parts must be at least 1".into());
        }
        if self.index >= self.count {
            return Err(format!(
                "part {} of {}: parts count from 0, so the last is {}",
                self.index,
                self.count,
                self.count - 1
            ));
        }
        Ok(())
    }

    /// This part of `files`, sorted by path so that every process of the
    /// array cuts the same list at the same places: the contiguous block
    /// `[i n / N, (i + 1) n / N)`.
    pub fn select(&self, mut files: Vec<PathBuf>) -> Vec<PathBuf> {
        files.sort();
        let n = files.len();
        let (lo, hi) = (
            self.index * n / self.count,
            (self.index + 1) * n / self.count,
        );
        files.drain(lo..hi).collect()
    }

    /// This part's scan-level answers, beside the other parts' in one folder.
    pub fn predictions_file(&self) -> String {
        tonno_core::eval::folder::shard_predictions_name(self.index, self.count)
    }
}

impl ShardArg {
    /// The part to process; `slurm` reads `env` (the process environment
    /// in `tonno`): `SLURM_ARRAY_TASK_ID` and the array's `_MIN`, `_MAX`,
    /// `_COUNT` and `_STEP`, so that `--array=1-8` works as well as `0-7`.
    pub fn resolve(self, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Shard> {
        let ShardArg::Given(s) = self else {
            return slurm_shard(env);
        };
        Ok(s)
    }
}

fn slurm_shard(env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Shard> {
    let var = |name: &str| -> anyhow::Result<Option<usize>> {
        env(name)
            .map(|v| {
                v.trim().parse::<usize>().map_err(|_| {
                    anyhow::anyhow!("--shard slurm: {name}={v:?} is not a whole number")
                })
            })
            .transpose()
    };
    let id = var("SLURM_ARRAY_TASK_ID")?.ok_or_else(|| {
        anyhow::anyhow!(
            "--shard slurm outside a SLURM job array: SLURM_ARRAY_TASK_ID is not set \
             (submit with sbatch --array=0-N, or give --shard I/N)"
        )
    })?;
    let count = var("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
        anyhow::anyhow!("--shard slurm: SLURM_ARRAY_TASK_COUNT is not set (SLURM older than 18.08?); give --shard I/N")
    })?;
    let min = var("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
    let max = var("SLURM_ARRAY_TASK_MAX")?.unwrap_or(min + count.saturating_sub(1));
    let step = var("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1);
    // An array with gaps (--array=0,3,7 or 0-15:2) would leave parts of the
    // list to no task.
    if step != 1 || max.checked_sub(min).map(|d| d + 1) != Some(count) {
        anyhow::bail!(
            "--shard slurm needs a job array of consecutive task ids (--array=A-B), \
             not ids {min} to {max} in steps of {step} for {count} task(s)"
        );
    }
    let shard = Shard {
        index: id.checked_sub(min).ok_or_else(|| {
            anyhow::anyhow!("--shard slurm: task id {id} is below the array's first, {min}")
        })?,
        count,
    };
    shard
        .check()
        .map_err(|e| anyhow::anyhow!("--shard slurm (task id {id}): {e}"))?;
    Ok(shard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn files(n: usize) -> Vec<PathBuf> {
        // Given out of order: every part must sort the same way.
        (0..n)
            .rev()
            .map(|i| format!("in/case_{i:03}.nii.gz").into())
            .collect()
    }

    #[test]
    fn the_parts_cover_the_sorted_list_once_in_order() {
        for n in [0, 1, 5, 7, 64] {
            for count in [1, 2, 3, 8, 10] {
                let mut all = Vec::new();
                let mut sizes = Vec::new();
                for index in 0..count {
                    let part = Shard { index, count }.select(files(n));
                    sizes.push(part.len());
                    all.extend(part);
                }
                let mut want = files(n);
                want.sort();
                assert_eq!(all, want, "{n} files in {count} parts");
                let (lo, hi) = (sizes.iter().min(), sizes.iter().max());
                assert!(hi.unwrap() - lo.unwrap() <= 1, "balanced: {sizes:?}");
            }
        }
    }

    #[test]
    fn shard_arguments_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse("2/8"),
            Ok(ShardArg::Given(Shard { index: 2, count: 8 }))
        );
        assert_eq!(parse("slurm"), Ok(ShardArg::Slurm));
        for (bad, says) in [
            ("8/8", "count from 0"),
            ("0/0", "at least 1"),
            ("3", "I/N"),
            ("a/4", "not a whole number"),
            ("-1/4", "not a whole number"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn slurm_arrays_from_zero_or_one_give_the_same_parts() {
        let from_zero = env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "3"),
            ("SLURM_ARRAY_TASK_STEP", "1"),
        ]);
        let from_one = env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "4"),
        ]);
        let want = Shard { index: 2, count: 4 };
        assert_eq!(ShardArg::Slurm.resolve(from_zero).unwrap(), want);
        assert_eq!(ShardArg::Slurm.resolve(from_one).unwrap(), want);
    }

    #[test]
    fn slurm_without_an_array_or_with_gaps_is_refused() {
        let e = ShardArg::Slurm.resolve(env(&[])).unwrap_err().to_string();
        assert!(e.contains("SLURM_ARRAY_TASK_ID is not set"), "{e}");
        let stepped = env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "6"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ]);
        let e = ShardArg::Slurm.resolve(stepped).unwrap_err().to_string();
        assert!(e.contains("consecutive"), "{e}");
        let listed = env(&[
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "7"),
        ]);
        let e = ShardArg::Slurm.resolve(listed).unwrap_err().to_string();
        assert!(e.contains("consecutive"), "{e}");
        let garbled = env(&[
            ("SLURM_ARRAY_TASK_ID", "x"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        let e = ShardArg::Slurm.resolve(garbled).unwrap_err().to_string();
        assert!(e.contains("SLURM_ARRAY_TASK_ID=\"x\""), "{e}");
    }
}
