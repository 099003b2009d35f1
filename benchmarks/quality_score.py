#!/usr/bin/python3
"""Scores a submission on FMNIST-D by groups of test images, for benchmarks/quality.sh.

Usage: quality_score.py SUBMISSION DATA_DIR
Prints one JSON object: MAP@5 over all test images, over the known ones, and over the
distractors of each Fashion-MNIST class (DATA/test_classes.csv, written by `sieve prepare
fmnist`); known-class top-1 (the first label that is not -1 equals the truth) and distractor
recall (-1 ranked first). MAP@5 as Kaggle's evaluator: a label counts at its first position.
"""
import csv
import json
import sys


def main():
    sub_path, data = sys.argv[1], sys.argv[2]
    truth = {r["id"]: r["label"] for r in csv.DictReader(open(f"{data}/solution.csv"))}
    cls = {r["id"]: r["class"] for r in csv.DictReader(open(f"{data}/test_classes.csv"))}
    pred = {r["id"]: r["predictions"].split() for r in csv.DictReader(open(sub_path))}
    missing = set(truth) - set(pred)
    if missing:
        sys.exit(f"quality_score: {sub_path} lacks {len(missing)} test ids, e.g. {sorted(missing)[0]}")
    groups = {"all": [], "known": []}
    top1_hits = top1_n = minus1_first = distractors = 0
    for i, t in truth.items():
        p = pred[i][:5]
        ap = 0.0
        for k, lab in enumerate(p):
            if lab == t and lab not in p[:k]:
                ap = 1.0 / (k + 1)
                break
        groups["all"].append(ap)
        if t == "-1":
            groups.setdefault(f"distractor class {cls[i]}", []).append(ap)
            distractors += 1
            minus1_first += bool(p) and p[0] == "-1"
        else:
            groups["known"].append(ap)
            first = next((lab for lab in p if lab != "-1"), None)
            top1_n += 1
            top1_hits += first == t
    out = {f"map5 {g}": sum(v) / len(v) for g, v in groups.items() if v}
    out["known top1"] = top1_hits / top1_n if top1_n else None
    out["distractor recall"] = minus1_first / distractors if distractors else None
    print(json.dumps(out))


if __name__ == "__main__":
    main()
