#!/usr/bin/env bash
# Runs sieve (bench_resnet50), PyTorch (torch_resnet50.py) and ONNX Runtime (ort_resnet50.sh)
# alternately on the same ResNet50 cases and prints one markdown table of median images/s and
# ratios. Builds nothing. See --help.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
py=/usr/bin/python3
all_cases=(eval/224/16 eval/64/64 eval/32/64 train/224/16 train/64/64 train/32/64)

usage() {
  cat <<USAGE
Usage: benchmarks/compare.sh [options] [CASE ...]

For each round and each case, runs sieve, then PyTorch, then (eval cases only) ONNX Runtime,
each as its own process, so slow drifts in machine load hit every side alike. Prints a
markdown table of the median images/s per side over the rounds, the ratios, and the date,
load average, CPU model and thread counts. Progress goes to stderr, the report to stdout.

Cases: ${all_cases[*]} (default: all six).

Options:
  --bench PATH       sieve's bench_resnet50 (default: build/benchmarks/bench_resnet50 under
                     the repository root; it is not built by this script)
  --cases A,B,...    cases, comma-separated (same as listing them as arguments)
  --rounds R         rounds (default 3)
  --min-time S       seconds per case, every side (default 2; sieve gets it as
                     --benchmark_min_time)
  --workdir DIR      ort_resnet50.sh's scratch folder (default: its own default)
  --no-ort           skip ONNX Runtime
  --channels-last    run PyTorch with --channels-last
  -h, --help         this text
USAGE
}

die() { echo "compare.sh: $*" >&2; exit 2; }

bench="$root/build/benchmarks/bench_resnet50"
rounds=3
min_time=2
workdir=
use_ort=1
torch_flags=()
cases=()
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --bench) (($# >= 2)) || die "--bench needs a value"; bench=$2; shift 2 ;;
    --cases) (($# >= 2)) || die "--cases needs a value"; IFS=, read -r -a more <<<"$2"; cases+=("${more[@]}"); shift 2 ;;
    --rounds) (($# >= 2)) || die "--rounds needs a value"; rounds=$2; shift 2 ;;
    --min-time) (($# >= 2)) || die "--min-time needs a value"; min_time=$2; shift 2 ;;
    --workdir) (($# >= 2)) || die "--workdir needs a value"; workdir=$2; shift 2 ;;
    --no-ort) use_ort=0; shift ;;
    --channels-last) torch_flags+=(--channels-last); shift ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) cases+=("$1"); shift ;;
  esac
done
((${#cases[@]})) || cases=("${all_cases[@]}")
for c in "${cases[@]}"; do
  [[ " ${all_cases[*]} " == *" $c "* ]] || die "unknown case '$c' (known: ${all_cases[*]})"
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer, got '$rounds'"
[[ $min_time =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--min-time must be a number of seconds, got '$min_time'"
[[ -x $bench ]] || die "sieve benchmark '$bench' not found or not executable (build it: meson compile -C build bench_resnet50, or pass --bench)"
[[ -x $py ]] || die "$py not found (needs torch and torchvision)"
bench=$(realpath "$bench")

ort_flags=(--min-time "$min_time")
[[ -n $workdir ]] && ort_flags+=(--workdir "$workdir")
eval_cases=()
for c in "${cases[@]}"; do [[ $c == eval/* ]] && eval_cases+=("$c"); done
((${#eval_cases[@]})) || use_ort=0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
results="$tmp/results.tsv"  # side, case, round, images/s
: >"$results"

# Runs "$@" with stdout to $tmp/out and stderr to $tmp/err; on failure shows both and stops.
run_logged() {
  local what=$1; shift
  if ! "$@" >"$tmp/out" 2>"$tmp/err"; then
    echo "compare.sh: $what failed: $*" >&2
    tail -n 20 "$tmp/out" "$tmp/err" >&2
    exit 1
  fi
}

# images/s from a torch_resnet50.py / ort_resnet50.sh line: `case  ms ms/iter  ips images/s (...)`.
parse_line() {
  local side=$1 c=$2 v
  v=$(awk -v c="$c" '$1 == c && $5 == "images/s" { print $4 }' "$tmp/out")
  [[ $v =~ ^[0-9]+([.][0-9]+)?$ ]] || {
    echo "compare.sh: no '$c ... images/s' line in $side's output:" >&2
    cat "$tmp/out" "$tmp/err" >&2
    exit 1
  }
  echo "$v"
}

parse_sieve() {
  "$py" - "$1" "$tmp/out" <<'PY' || { cat "$tmp/err" >&2; exit 1; }
import json, sys
case, path = sys.argv[1], sys.argv[2]
text = open(path).read()
if not text.strip():
    sys.exit(f"compare.sh: bench_resnet50 printed no JSON for {case} (no benchmark matched?)")
runs = [b for b in json.loads(text)["benchmarks"]
        if b.get("run_type", "iteration") == "iteration" and b["name"].split("/")[:3] == case.split("/")]
if len(runs) != 1:
    sys.exit(f"compare.sh: expected one bench_resnet50 run named {case}, got {[b['name'] for b in runs]}")
if runs[0].get("error_occurred"):
    sys.exit(f"compare.sh: bench_resnet50 {case} failed: {runs[0].get('error_message')}")
if "items_per_second" not in runs[0]:
    sys.exit(f"compare.sh: bench_resnet50 {case} reports no items_per_second")
print(runs[0]["items_per_second"])
PY
}

load() { uptime | sed -n 's/.*load average: *//p'; }
start_date=$(date -u '+%Y-%m-%d %H:%M UTC')
start_load=$(load)

if ((use_ort)); then
  echo "preparing ONNX Runtime (npm install / ONNX export if not cached)" >&2
  run_logged "ort_resnet50.sh --prepare" "$here/ort_resnet50.sh" "${ort_flags[@]}" --prepare "${eval_cases[@]}"
fi

torch_version=''
ort_version=''
for ((r = 1; r <= rounds; ++r)); do
  for c in "${cases[@]}"; do
    progress="round $r/$rounds $c:"
    run_logged "sieve $c" "$bench" "--benchmark_filter=^$c/" --benchmark_format=json "--benchmark_min_time=$min_time"
    v=$(parse_sieve "$c"); printf '%s\t%s\t%s\t%s\n' sieve "$c" "$r" "$v" >>"$results"
    progress+=" sieve $(printf '%.3g' "$v")"

    run_logged "torch_resnet50.py $c" "$py" "$here/torch_resnet50.py" --min-time "$min_time" "${torch_flags[@]}" "$c"
    v=$(parse_line PyTorch "$c"); printf '%s\t%s\t%s\t%s\n' torch "$c" "$r" "$v" >>"$results"
    torch_version=$(head -n 1 "$tmp/out")
    progress+=", PyTorch $v"

    if ((use_ort)) && [[ $c == eval/* ]]; then
      run_logged "ort_resnet50.sh $c" "$here/ort_resnet50.sh" "${ort_flags[@]}" "$c"
      v=$(parse_line ORT "$c"); printf '%s\t%s\t%s\t%s\n' ort "$c" "$r" "$v" >>"$results"
      ort_version=$(head -n 1 "$tmp/out")
      progress+=", ORT $v"
    fi
    echo "$progress images/s" >&2
  done
done

end_date=$(date -u '+%H:%M UTC')
cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)
cat <<HEAD
ResNet50 (+ 1000-class fc) images/s, median of $rounds round(s), sides run alternately per case.
- date: $start_date - $end_date; load average (1, 5, 15 min) at start: $start_load, at end: $(load)
- CPU: ${cpu:-unknown}, $(nproc) online CPU(s)
- sieve: $bench (built $(date -u -r "$bench" '+%Y-%m-%d %H:%M UTC'); repository HEAD $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)), 2 threads set by the benchmark (SIEVE_BENCH_THREADS=${SIEVE_BENCH_THREADS:-unset})
- PyTorch: ${torch_version:-not run}${torch_flags:+, ${torch_flags[*]}}
- ORT: ${ort_version:-not run}

HEAD
"$py" - "$results" "${cases[@]}" <<'PY'
import statistics, sys
path, cases = sys.argv[1], sys.argv[2:]
runs = {}
for line in open(path):
    side, case, _, v = line.split("\t")
    runs.setdefault((side, case), []).append(float(v))

def fmt(v):
    return "-" if v is None else f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"

def median(side, case):
    vs = runs.get((side, case))
    return statistics.median(vs) if vs else None

def ratio(a, b):
    return "-" if a is None or b is None else f"{a / b:.2f}"

print("| case | sieve img/s | PyTorch img/s | ORT img/s | sieve/PyTorch | sieve/ORT |")
print("|---|---:|---:|---:|---:|---:|")
for c in cases:
    s, t, o = median("sieve", c), median("torch", c), median("ort", c)
    print(f"| {c} | {fmt(s)} | {fmt(t)} | {fmt(o)} | {ratio(s, t)} | {ratio(s, o)} |")
spread = []
for side, name in (("sieve", "sieve"), ("torch", "PyTorch"), ("ort", "ORT")):
    ratios = [max(v) / min(v) for (sd, _), v in runs.items() if sd == side and min(v) > 0]
    if ratios:
        spread.append(f"{name} {max(ratios):.2f}")
if spread and len(next(iter(runs.values()))) > 1:
    print()
    print("Largest max/min images/s over the rounds of one case: " + ", ".join(spread) + ".")
PY
