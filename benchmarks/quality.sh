#!/usr/bin/env bash
# Quality per CPU-minute on FMNIST-D: sieve's documented plain commands against the two PyTorch
# peers (the fast recipe and the seed recipe) with the same wall time, on the same machine, one
# after the other. Prints one markdown table. Builds nothing. See --help.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
py=/usr/bin/python3

usage() {
  cat <<USAGE
Usage: benchmarks/quality.sh [options]

For each budget M (minutes) runs, as separate processes on a quiet machine:
  sieve     sieve prepare fmnist --out D [--distractors ...] [--outside-classes ...]
            sieve train --data D --out R --max-minutes M
            sieve predict --run R --data D --out sub.csv
            sieve score --submission sub.csv --solution D/solution.csv
  fast      fmnist_d_fast_torch.py --budget_s M*60 --threads 2 (PyTorch, the fast recipe)
  seed      fmnist_d_torch.py --negatives --budget_s M*60 (PyTorch, the seed recipe; its
            budget is checked once per epoch, so it may overrun by an epoch)
and prints MAP@5, known-class top-1, distractor recall (-1 ranked first), epochs, wall time of
training (the whole train command for sieve) and of predict. With --outside-classes, sieve's
MAP@5 is also split into known images and each distractor class (DATA/test_classes.csv).

Options:
  --minutes A,B      budgets in minutes (default 10)
  --distractors C,D  distractor classes (default 8,9)
  --outside-classes C  only these distractor classes' train images in outside/ (the others are
                     distractors nobody has seen; the fast peer gets --outside_only)
  --peers LIST       fast,seed (default), fast, seed or none
  --sieve PATH       the sieve executable (default: build/examples/competition/sieve)
  --reference DIR    the peers' folder (default: ../shared/reference beside the repository)
  --workdir DIR      data, runs and logs (default: build/quality)
  --threads N        threads for every side (default 2)
  -h, --help         this text
USAGE
}

die() { echo "quality.sh: $*" >&2; exit 2; }

minutes=10
distractors=8,9
outside=""
peers=fast,seed
sieve="$root/build/examples/competition/sieve"
ref="$root/../shared/reference"
work="$root/build/quality"
threads=2
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) minutes=$2; shift 2 ;;
    --distractors) distractors=$2; shift 2 ;;
    --outside-classes) outside=$2; shift 2 ;;
    --peers) peers=$2; shift 2 ;;
    --sieve) sieve=$2; shift 2 ;;
    --reference) ref=$2; shift 2 ;;
    --workdir) work=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[ -x "$sieve" ] || die "$sieve: not an executable (build it: meson compile -C build examples/competition/sieve)"
case ",$peers," in *,fast,*|*,seed,*) [ -d "$ref" ] || die "$ref: no such folder (--reference DIR)";; esac
mkdir -p "$work"
work=$(cd "$work" && pwd)
export OMP_NUM_THREADS=$threads

split="d${distractors//,/}${outside:+-o${outside//,/}}"
data="$work/fmnist-$split"
if [ ! -f "$data/test_classes.csv" ]; then
  echo "quality.sh: preparing $data" >&2
  rm -rf "$data"
  "$sieve" prepare fmnist --out "$data" --distractors "$distractors" ${outside:+--outside-classes "$outside"} >&2
fi

now() { date +%s.%N; }
rows=()
for m in ${minutes//,/ }; do
  run="$work/run-$split-${m}m"
  rm -rf "$run"
  echo "quality.sh: sieve, $m minutes ($run)" >&2
  t0=$(now)
  "$sieve" train --data "$data" --out "$run" --max-minutes "$m" > "$run.train.log" 2>&1 || die "sieve train failed: $run.train.log"
  t1=$(now)
  "$sieve" predict --run "$run" --data "$data" --out "$run/submission.csv" > "$run.predict.log" 2>&1 ||
    die "sieve predict failed: $run.predict.log"
  t2=$(now)
  "$sieve" score --submission "$run/submission.csv" --solution "$data/solution.csv" --json "$run/score.json" >&2
  g=$($py "$here/quality_score.py" "$run/submission.csv" "$data")
  row=$($py - "$run" "$t0" "$t1" "$t2" "$m" "$g" <<'PY'
import json, sys
run, t0, t1, t2, m, g = sys.argv[1:7]
g = json.loads(g)
split = json.load(open(f"{run}/split.json"))
state = json.load(open(f"{run}/last/state.json"))
cfg = json.load(open(f"{run}/config.json"))
epochs = state["step"] * cfg["batch"] / (split["n_train"] + split["n_negatives"])
extra = "; ".join(f"{k[5:]} {v:.4f}" for k, v in g.items() if k.startswith("map5 ") and k != "map5 all")
print(f"| {m} | sieve | {g['map5 all']:.4f} | {g['known top1']:.4f} | {g['distractor recall']:.4f} | "
      f"{epochs:.1f} | {float(t1) - float(t0):.0f} | {float(t2) - float(t1):.0f} | {extra} |")
PY
)
  rows+=("$row")
  for p in ${peers//,/ }; do
    [ "$p" = none ] && continue
    out="$work/$p-$split-${m}m.json"
    echo "quality.sh: PyTorch $p recipe, $m minutes ($out)" >&2
    t0=$(now)
    if [ "$p" = fast ]; then
      $py "$ref/fmnist_d_fast_torch.py" --distractors "$distractors" ${outside:+--outside_only "$outside"} \
        --budget_s $((m * 60)) --threads "$threads" --out "$out" > "$out.log" 2>&1 || die "peer $p failed: $out.log"
    else
      [ -z "$outside" ] || { echo "quality.sh: the seed peer has no --outside_only; skipped" >&2; continue; }
      $py "$ref/fmnist_d_torch.py" --data /usr/share/datasets/fashion-mnist --distractors "$distractors" \
        --negatives --epochs 100 --budget_s $((m * 60)) --out "$out" > "$out.log" 2>&1 || die "peer $p failed: $out.log"
    fi
    t1=$(now)
    rows+=("$($py - "$p" "$out" "$t0" "$t1" "$m" <<'PY'
import json, sys
p, out, t0, t1, m = sys.argv[1:6]
r = json.load(open(out))
wall = float(t1) - float(t0)
if p == "fast":
    x = r["raw"]
    print(f"| {m} | PyTorch fast | {x['test_map5']:.4f} | {x['known_top1']:.4f} | {x['distractor_first']:.4f} | "
          f"{r['epochs']:.1f} | {wall:.0f} (all) | - | |")
else:
    h = r["head"]
    print(f"| {m} | PyTorch seed | {h['test_map5_tuned']:.4f} | {h['known_top1']:.4f} | - | {r['epochs_run']} | "
          f"{wall:.0f} (all) | - | fusion {r['fusion']['test_map5_tuned']:.4f} |")
PY
)")
  done
done

echo "FMNIST-D distractors $distractors${outside:+, outside/ holds class(es) $outside only}; $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| minutes | side | test MAP@5 | known top-1 | distractor recall | epochs | train s | predict s | MAP@5 by group |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
