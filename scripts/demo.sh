#!/usr/bin/env bash
# Fresh machine to result: installs dependencies, builds, prepares the default data (FMNIST-D
# from Debian's Fashion-MNIST), then runs the main job: validate, train at 32x32 for a few
# minutes, predict, score against the answers, report.
#
# Environment: DEMO_DIR (default: demo/ in the repository), DEMO_EPOCHS (default 3: the cosine
# schedule anneals within them), DEMO_MINUTES (a time cap on training, default 5), DEMO_ARGS
# (extra `sieve train` flags, e.g. "--arch resnet50").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
dir=${DEMO_DIR:-$root/demo}
minutes=${DEMO_MINUTES:-5}
epochs=${DEMO_EPOCHS:-3}

bash scripts/setup-deps.sh
if [ -f build/build.ninja ]; then meson setup --reconfigure build --wrap-mode=nodownload >/dev/null
else meson setup build --wrap-mode=nodownload >/dev/null; fi
meson compile -C build examples/competition/sieve
sieve=$root/build/examples/competition/sieve

data=$dir/fmnist-d
run=$dir/run
mkdir -p "$dir"
if [ ! -f "$data/train.csv" ]; then
  echo "== prepare: FMNIST-D (distractor classes 8 and 9) into $data"
  "$sieve" prepare fmnist --out "$data" --distractors 8,9
fi

echo "== validate"
"$sieve" validate --data "$data" --max-listed 20

echo "== train: a small ResNet (1,1,1,1 blocks, width 16) at 32x32, $epochs epochs (at most $minutes minutes)"
rm -rf "$run"
# shellcheck disable=SC2086
"$sieve" train --data "$data" --out "$run" --blocks 1,1,1,1 --width 16 --image-size 32 --fit pad \
  --mean 0.2860 --std 0.3530 --augment crop-flip --epochs "$epochs" --max-minutes "$minutes" --threads 2 --workers 1 ${DEMO_ARGS:-}

echo "== predict (head ranking, -1 threshold tuned on validation)"
"$sieve" predict --run "$run" --data "$data" --out "$dir/submission.csv" --method head
"$sieve" score --submission "$dir/submission.csv" --solution "$data/solution.csv"

echo "== predict (the best method on validation)"
"$sieve" predict --run "$run" --data "$data" --out "$dir/submission-auto.csv" --method auto
"$sieve" score --submission "$dir/submission-auto.csv" --solution "$data/solution.csv"

echo "== report"
"$sieve" report --run "$run" --data "$data" --solution "$data/solution.csv"

echo
echo "demo: submission      $dir/submission-auto.csv (head only: $dir/submission.csv)"
echo "demo: report          $run/report/index.html"
echo "demo: run folder      $run (config.json, metrics.jsonl, best/, last/, calibration.json)"
