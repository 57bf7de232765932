#!/usr/bin/env python3
"""Scan-level AUROC of a model's scores, split by what the lesions are.

    scripts/auroc_by_lesion.py PRED_DIR SYNTH_JSON

PRED_DIR holds `tonno segment`'s predictions.csv (or its parts,
predictions.shard-I-of-N.csv); SYNTH_JSON is the `synth.json` that `tonno
synth` (with or without --anatomy) wrote for those cases. Prints the AUROC of
the scores of all positive cases against all negative ones, then of each kind
of positive case against the same negatives: cases whose lesions are all
brighter than their tissue, all darker, or both; and by source subject when
the cases name one. Standard library only.

To score the validation or test cases of a run without paying for heatmaps:
    tonno segment --model RUN --input DIR --out PRED --directions 2 --slices 4 --no-gate
(the score is the run's own rule, whatever --directions and --slices say).
"""

import csv
import json
import pathlib
import signal
import sys


def auroc(pos, neg):
    if not pos or not neg:
        return float("nan")
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    pred, synth = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    scores = {}
    for f in sorted(pred.glob("predictions*.csv")):
        for row in csv.DictReader(open(f)):
            scores[row["case"]] = float(row["score"])
    if not scores:
        sys.exit(f"{pred}: no predictions.csv")
    cases = {c["name"]: c for c in json.load(open(synth))["cases"]}
    missing = [c for c in scores if c not in cases]
    if missing:
        sys.exit(f"{synth}: no record of {len(missing)} case(s), e.g. {missing[0]}")

    def kind(c):
        signs = {lesion["contrast"] > 0 for lesion in cases[c]["lesions"]}
        return {frozenset([True]): "bright", frozenset([False]): "dark"}.get(frozenset(signs), "both")

    groups = [("all", None)]
    groups += [(k, k) for k in ("bright", "dark", "both")]
    neg = [s for c, s in scores.items() if not cases[c]["label"]]
    print(f"{len(scores)} cases, {len(neg)} without a lesion")
    print("positives    n  AUROC")
    for name, k in groups:
        pos = [s for c, s in scores.items() if cases[c]["label"] and (k is None or kind(c) == k)]
        print(f"{name:9} {len(pos):4}  {auroc(pos, neg):.3f}")
    subjects = sorted({cases[c].get("source") for c in scores} - {None})
    for subject in subjects:
        mine = [c for c in scores if cases[c].get("source") == subject]
        pos = [scores[c] for c in mine if cases[c]["label"]]
        neg_s = [scores[c] for c in mine if not cases[c]["label"]]
        dark = [scores[c] for c in mine if cases[c]["label"] and kind(c) == "dark"]
        print(f"{subject}: AUROC {auroc(pos, neg_s):.3f} ({len(pos)} + {len(neg_s)}), dark only {auroc(dark, neg_s):.3f}")


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet under `| head`
    main()
