#!/usr/bin/env bash
# ONNX Runtime side of bench_resnet50's eval cases: exports torchvision resnet50 to ONNX with
# /usr/bin/python3 + torch, installs onnxruntime-node from npm into a scratch folder, and times
# the cases with benchmarks/ort_resnet50.mjs. See --help.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=/usr/bin/python3
all_cases=(eval/224/16 eval/64/64 eval/32/64)

usage() {
  cat <<USAGE
Usage: benchmarks/ort_resnet50.sh [options] [CASE ...]

Times ONNX Runtime (onnxruntime-node, CPU, intraOpNumThreads=2, interOpNumThreads=1,
graphOptimizationLevel 'all') on torchvision's resnet50 (1000 classes, random init with seed 0,
eval mode) and prints \`case  ms/iter  images/s (n iterations)\` like torch_resnet50.py.
Each case warms up one run, then runs for at least --min-time seconds.

Cases: ${all_cases[*]} (default: all). ONNX Runtime has no train cases.

Options:
  --min-time S       seconds per case (default 2)
  --workdir DIR      scratch folder for node_modules and the .onnx files
                     (default \${XDG_CACHE_HOME:-\$HOME/.cache}/sieve-bench/ort)
  --dynamic          one model with dynamic batch/height/width axes instead of one
                     fixed-shape model per case (the default)
  --ort-version V    onnxruntime-node version to install (default 1.30.0)
  --force-export     re-export the models even if present
  --prepare          install and export only; time nothing
  -h, --help         this text

Needs node + npm (Debian: apt-get install nodejs npm) and /usr/bin/python3 with torch and
torchvision. npm runs with --ignore-scripts: the package's postinstall downloads extra
binaries, which fails offline, and the CPU binding ships inside the package anyway.
USAGE
}

die() { echo "ort_resnet50.sh: $*" >&2; exit 2; }

min_time=2
workdir="${XDG_CACHE_HOME:-$HOME/.cache}/sieve-bench/ort"
dynamic=0
ort_version=1.30.0
force_export=0
prepare_only=0
cases=()
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --min-time) (($# >= 2)) || die "--min-time needs a value"; min_time=$2; shift 2 ;;
    --workdir) (($# >= 2)) || die "--workdir needs a value"; workdir=$2; shift 2 ;;
    --ort-version) (($# >= 2)) || die "--ort-version needs a value"; ort_version=$2; shift 2 ;;
    --dynamic) dynamic=1; shift ;;
    --force-export) force_export=1; shift ;;
    --prepare) prepare_only=1; shift ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) cases+=("$1"); shift ;;
  esac
done
((${#cases[@]})) || cases=("${all_cases[@]}")
for c in "${cases[@]}"; do
  [[ " ${all_cases[*]} " == *" $c "* ]] || die "unknown case '$c' (ONNX Runtime runs only: ${all_cases[*]})"
done
[[ $min_time =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--min-time must be a number of seconds, got '$min_time'"

command -v node >/dev/null || die "node not found on PATH (Debian: apt-get install nodejs)"
command -v npm >/dev/null || die "npm not found on PATH (Debian: apt-get install npm)"
[[ -x $py ]] || die "$py not found (needs torch and torchvision)"

mkdir -p "$workdir/models"
workdir=$(cd "$workdir" && pwd)
models="$workdir/models"

# --- onnxruntime-node ------------------------------------------------------------------------
installed_version() {
  node -e 'try { console.log(require(process.argv[1]).version) } catch { }' \
    "$workdir/node_modules/onnxruntime-node/package.json"
}
if [[ $(installed_version) != "$ort_version" ]]; then
  echo "installing onnxruntime-node@$ort_version into $workdir (npm, --ignore-scripts)" >&2
  [[ -f $workdir/package.json ]] || echo '{ "name": "sieve-ort-bench", "private": true }' >"$workdir/package.json"
  (cd "$workdir" && npm install "onnxruntime-node@$ort_version" --ignore-scripts --no-audit --no-fund \
      --loglevel=error >&2) || die "npm install onnxruntime-node@$ort_version failed in $workdir"
  [[ $(installed_version) == "$ort_version" ]] || die "npm did not install onnxruntime-node@$ort_version in $workdir"
fi
platform=$(node -p 'process.platform + "/" + process.arch')
binding=$(find "$workdir/node_modules/onnxruntime-node/bin" -path "*/$platform/onnxruntime_binding.node" -print -quit 2>/dev/null || true)
[[ -n $binding ]] || die "onnxruntime-node@$ort_version in $workdir has no native binding for $platform"
(cd "$workdir" && node -e 'require("onnxruntime-node")') ||
  die "onnxruntime-node's binding $binding does not load (see the error above)"

# --- ONNX export -----------------------------------------------------------------------------
# Args: output file, then "dynamic" or "SIZE BATCH".
export_model() {
  local out=$1; shift
  echo "exporting $out" >&2
  "$py" - "$out.tmp.$$" "$@" <<'PY' || { rm -f "$out.tmp.$$"; die "ONNX export of $out failed"; }
import sys
import torch
import torchvision

out, spec = sys.argv[1], sys.argv[2:]
torch.manual_seed(0)
model = torchvision.models.resnet50().eval()
dynamic = spec == ["dynamic"]
size, batch = (224, 2) if dynamic else (int(spec[0]), int(spec[1]))
axes = {"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}} if dynamic else None
with torch.no_grad():
    torch.onnx.export(model, torch.randn(batch, 3, size, size), out, input_names=["input"],
                      output_names=["logits"], dynamic_axes=axes, opset_version=17,
                      do_constant_folding=True)
PY
  mv "$out.tmp.$$" "$out"
}
if ((dynamic)); then
  f="$models/resnet50_dynamic.onnx"
  if ((force_export)) || [[ ! -s $f ]]; then export_model "$f" dynamic; fi
else
  for c in "${cases[@]}"; do
    IFS=/ read -r _ size batch <<<"$c"
    f="$models/resnet50_s${size}_b${batch}.onnx"
    if ((force_export)) || [[ ! -s $f ]]; then export_model "$f" "$size" "$batch"; fi
  done
fi
((prepare_only)) && exit 0

# --- run -------------------------------------------------------------------------------------
flags=(--ort-dir "$workdir" --models "$models" --min-time "$min_time")
((dynamic)) && flags+=(--dynamic)
exec node "$here/ort_resnet50.mjs" "${flags[@]}" "${cases[@]}"
