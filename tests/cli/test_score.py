#!/usr/bin/python3
"""`sieve score`: MAP@5 / known-class top-1 / distractor recall against hand-computed cases and
against tools/map5_reference.py (Kaggle's apk written independently) on random submissions;
malformed submissions and solutions give line-numbered errors and exit 1 with no score.

Usage: test_score.py SIEVE_EXE SOURCE_ROOT   (pure Python; runs in about a second)
"""
import json
import os
import random
import subprocess
import sys
import tempfile

EXE, ROOT = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(ROOT, "tools"))
try:
    import map5_reference as ref  # noqa: E402  (needs numpy)
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

failures = []
tmp = tempfile.mkdtemp(prefix="sieve_score_")


def write(name, text, mode="w"):
    p = os.path.join(tmp, name)
    with open(p, mode) as f:
        f.write(text)
    return p


def run(*args):
    r = subprocess.run([EXE, "score", *args], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def numbers(out):
    """The three headline numbers of `sieve score`'s stdout."""
    vals = {}
    for line in out.splitlines():
        for key, name in (("MAP@5", "map5"), ("known-class top-1", "known_top1"), ("distractor recall", "recall")):
            if line.startswith(key):
                vals[name] = float(line[len(key):].split()[0])
    return vals


def close(a, b, tol=1e-4):
    return abs(a - b) <= tol


# 1. Hand-computed: a -> '0' first (1), b -> '1' second (1/2), c -> '-1' second (1/2),
#    d -> '2' second (1/2): MAP = 2.5/4; known top-1 = 1/3 (only a); distractor recall 0.
sol = write("sol.csv", "id,label\na,0\nb,1\nc,-1\nd,2\n")
sub = write("sub.csv", "id,predictions\nd,-1 2\na,0 1\nb,0 1 -1\nc,3 -1\n")  # any row order
rc, out, err = run("--submission", sub, "--solution", sol, "--per-class", "--json", os.path.join(tmp, "s.json"))
v = numbers(out)
if rc != 0 or not (close(v.get("map5", -1), 0.625) and close(v.get("known_top1", -1), 1 / 3)
                   and close(v.get("recall", -1), 0.0)):
    failures.append(f"hand case: rc={rc} numbers={v}\n{out}\n{err}")
else:
    j = json.load(open(os.path.join(tmp, "s.json")))
    per = {c["label"]: c for c in j["per_class"]}
    ok = (close(j["map5"], 0.625, 1e-12) and j["n"] == 4 and j["n_known"] == 3 and j["n_distractor"] == 1
          and per["0"]["n_first"] == 2 and per["0"]["n_correct"] == 1 and per["3"]["n_true"] == 0
          and close(per["-1"]["map5"], 0.5, 1e-12))
    if not ok:
        failures.append(f"hand case json: {j}")

# 2. Every position of the truth, duplicates after the truth, and a distractor answered first.
cases = [("0 1 2 3 4", "0", 1.0), ("1 0", "0", 0.5), ("1 2 0", "0", 1 / 3), ("1 2 3 0", "0", 0.25),
         ("1 2 3 4 0", "0", 0.2), ("1 2 3 4 5", "0", 0.0), ("-1 0", "-1", 1.0), ("0 -1", "-1", 0.5)]
sol = write("sol2.csv", "id,label\n" + "".join(f"i{n},{t}\n" for n, (_, t, _) in enumerate(cases)))
sub = write("sub2.csv", "id,predictions\n" + "".join(f"i{n},{p}\n" for n, (p, _, _) in enumerate(cases)))
rc, out, err = run("--submission", sub, "--solution", sol)
want = sum(c[2] for c in cases) / len(cases)
if rc != 0 or not close(numbers(out).get("map5", -1), want):
    failures.append(f"rank cases: rc={rc}, want MAP {want:.4f}\n{out}\n{err}")

# 3. Random submissions against the independent reference (string labels, -1 included).
rng = random.Random(6)
labels = ["cat", "dog", "7", "10", "b-1", "x_y"]
for trial in range(25):
    n = rng.randint(1, 40)
    truth = [rng.choice(labels + ["-1"]) for _ in range(n)]
    rows = []
    for _ in range(n):
        m = rng.randint(1, 5)
        rows.append(rng.sample(labels + ["-1"], m))
    order = list(range(n))
    rng.shuffle(order)
    sol = write(f"r{trial}_sol.csv", "id,label\n" + "".join(f"id{i},{truth[i]}\n" for i in range(n)))
    sub = write(f"r{trial}_sub.csv", "id,predictions\n" + "".join(f"id{i},{' '.join(rows[i])}\n" for i in order))
    rc, out, err = run("--submission", sub, "--solution", sol)
    v = numbers(out)
    want_map = ref.mapk(rows, truth, 5)
    known = [i for i in range(n) if truth[i] != "-1"]
    dist = [i for i in range(n) if truth[i] == "-1"]
    want_top1 = sum(rows[i][0] == truth[i] for i in known) / len(known) if known else 0.0
    want_rec = sum(rows[i][0] == "-1" for i in dist) / len(dist) if dist else 0.0
    if rc != 0 or not (close(v.get("map5", -1), want_map) and close(v.get("known_top1", -1), want_top1)
                       and close(v.get("recall", -1), want_rec)):
        failures.append(f"random trial {trial}: got {v}, want map {want_map} top1 {want_top1} recall {want_rec}"
                        f"\n{out}\n{err}")
        break

# 4. Malformed submissions: every problem with its line, exit 1, no score on stdout.
sol = write("sol4.csv", "id,label\na,0\nb,1\nc,-1\n")
bad = {
    "header": ("id,prediction\na,0\nb,1\nc,-1\n", ["header"]),

    "unknown-id": ("id,predictions\na,0\nb,1\nc,-1\nzz,1\n", ["line 5", "unknown id 'zz'"]),
    "dup-id": ("id,predictions\na,0\nb,1\na,1\nc,-1\n", ["line 4", "duplicate id 'a'", "line 2"]),
    "missing-id": ("id,predictions\na,0\nb,1\n", ["missing", "'c'"]),
    "ragged": ("id,predictions\na,0\nb,1,2\nc,-1\n", [":3:", "3 fields"]),
    "quote": ("id,predictions\na,0\nb,\"1\nc,-1\n", ["never closed"]),
}
for name, (text, texts) in bad.items():
    p = write(f"bad_{name}.csv", text)
    rc, out, err = run("--submission", p, "--solution", sol)
    first = err.strip().splitlines()[0] if err.strip() else ""
    if rc != 1 or "MAP@5" in out or not first.startswith("sieve: error: ") or not all(t in err for t in texts):
        failures.append(f"malformed '{name}': rc={rc}, wanted {texts}\nstdout: {out}\nstderr: {err}")
# Rows Kaggle's evaluator scores rather than refuses: a repeated label (once, at its first
# position), an empty row (0), labels past the fifth (ignored). Scored so with a warning naming
# each line; --strict refuses them as problems.
lenient = {
    "dup-label": ("id,predictions\na,2 2 0\nb,1\nc,-1\n", (1 / 3 + 1 + 1) / 3, ["line 2", "appears twice"]),
    "six-labels": ("id,predictions\na,0\nb,2 3 4 5 6 1\nc,-1\n", (1 + 0 + 1) / 3, ["line 3", "6 labels"]),
    "empty-pred": ("id,predictions\na,\nb,1\nc,-1\n", (0 + 1 + 1) / 3, ["line 2", "empty predictions"]),
}
for name, (text, want, texts) in lenient.items():
    p = write(f"lenient_{name}.csv", text)
    rc, out, err = run("--submission", p, "--solution", sol)
    v = numbers(out)
    if rc != 0 or not close(v.get("map5", -1), want) or "warning" not in err or not all(t in err for t in texts):
        failures.append(f"lenient '{name}': rc={rc}, map {v.get('map5')} want {want}, wanted {texts}\n{out}\n{err}")
    rc, out, err = run("--submission", p, "--solution", sol, "--strict")
    if rc != 1 or "MAP@5" in out or not all(t in err for t in texts):
        failures.append(f"--strict '{name}': rc={rc}, wanted {texts}\nstdout: {out}\nstderr: {err}")
# Several problems in one file are all reported (a user fixes the file once).
p = write("bad_many.csv", "id,predictions\na,0 0\nb,1 2 3 4 5 6\nzz,1\n")
rc, out, err = run("--submission", p, "--solution", sol, "--strict")
if rc != 1 or not all(t in err for t in ["4 problems", "line 2", "line 3", "line 4", "'c'"]):
    failures.append(f"many problems: rc={rc}\n{err}")
p = write("bad_utf8.csv", b"id,predictions\na,0\nb,\xff\nc,-1\n", "wb")
rc, out, err = run("--submission", p, "--solution", sol)
if rc != 1 or "invalid UTF-8" not in err or ":3:" not in err:
    failures.append(f"bad utf-8: rc={rc}\n{err}")
# Bad solution, missing files.
p = write("bad_sol.csv", "id,answer\na,0\n")
rc, out, err = run("--submission", write("ok.csv", "id,predictions\na,0\n"), "--solution", p)
if rc != 1 or "expected 'id,label'" not in err:
    failures.append(f"bad solution header: rc={rc}\n{err}")
rc, out, err = run("--submission", os.path.join(tmp, "nope.csv"), "--solution", sol)
if rc != 1 or "nope.csv" not in err:
    failures.append(f"missing submission file: rc={rc}\n{err}")
rc, out, err = run("--submission", os.path.join(tmp, "ok.csv"))
if rc != 2 or "--solution" not in err:
    failures.append(f"missing --solution (a usage error, exit 2): rc={rc}\n{err}")

if failures:
    print(f"FAIL: {len(failures)} problem(s)")
    for f in failures:
        print("-", f)
    sys.exit(1)
print("test_score: all checks passed")
