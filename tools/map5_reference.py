#!/usr/bin/python3
"""Independent reference for sieve's metrics and -1 insertion (tests compare against it).

Reads a JSON request on stdin (or from the file given as argv[1]) and prints a JSON answer:
  {"map": [{"rows": [[label, ...], ...], "truth": [label, ...], "k": 5}, ...],
   "rank": [{"scores": [[float, ...], ...], "t": float, "k": 5}, ...],
   "sweep": [{"scores": [[...]], "truth": [int, ...], "grid": [float, ...]}, ...]}
->{"map": [float, ...], "rank": [[[int, ...], ...], ...],
   "sweep": [{"map5": [float, ...], "best_threshold": float, "best_map5": float}, ...]}

MAP@k is written the way Kaggle's ml_metrics.apk computes it (pure Python, labels of any
JSON type), not the way sieve does; -1 insertion and the sweep follow the PyTorch reference
(numpy stable argsort of the scores with a column scoring t appended; first maximum wins).
"""
import json
import sys

import numpy as np


def apk(actual, predicted, k):
    """ml_metrics.apk: average precision at k of one ranked list against a list of truths."""
    if len(predicted) > k:
        predicted = predicted[:k]
    score, hits = 0.0, 0.0
    for i, p in enumerate(predicted):
        if p in actual and p not in predicted[:i]:
            hits += 1.0
            score += hits / (i + 1.0)
    return score / min(len(actual), k)


def mapk(rows, truth, k):
    return float(np.mean([apk([t], list(r), k) for r, t in zip(rows, truth)]))


def rank_with_threshold(scores, t, k):
    scores = np.asarray(scores, dtype=np.float32)  # sieve's scores are float32
    N, K = scores.shape
    s = np.concatenate([scores, np.full((N, 1), t)], 1)  # promotes to float64, as the reference
    order = np.argsort(-s, 1, kind="stable")[:, :k]
    return np.where(order == K, -1, order)


def sweep(scores, truth, grid, k=5):
    curve = []
    best = (-1.0, None)
    for t in grid:
        m = mapk(rank_with_threshold(scores, t, k).tolist(), truth, k)
        curve.append(m)
        if m > best[0]:
            best = (m, float(t))
    return {"map5": curve, "best_map5": best[0], "best_threshold": best[1]}


def main():
    req = json.load(open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin)
    out = {
        "map": [mapk(c["rows"], c["truth"], c.get("k", 5)) for c in req.get("map", [])],
        "rank": [rank_with_threshold(c["scores"], c["t"], c.get("k", 5)).tolist() for c in req.get("rank", [])],
        "sweep": [sweep(c["scores"], c["truth"], c["grid"], c.get("k", 5)) for c in req.get("sweep", [])],
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
