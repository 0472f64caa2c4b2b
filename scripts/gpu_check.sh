#!/usr/bin/env bash
# The one check to run on a machine with a CUDA GPU, from the repository root, in under 9 minutes:
#   bash scripts/gpu_check.sh
# It assumes torch with CUDA is installed already (no internet needed): grokscope is installed over it with
# --no-deps, then the CUDA cases of the device tests run, then benchmarks/gpu.py --device cuda. Every step is
# timed and bounded (30 + 90 + 150 + 230 s at most: under 9 minutes); a failed step is reported and the next one
# still runs. Output in $OUT (else gpu-check-out/): one log per step, gpu.json (the benchmark's numbers, written
# after every section) and summary.txt. Exit status: the number of failed steps. The benchmark times the mainline
# step eager and under torch.compile (reduce-overhead: CUDA graphs), with the compile seconds, and a compiled run;
# the tests include the compiled run's CUDA case (tests/test_compile.py). Inductor caches what it compiled (in
# /tmp/torchinductor_$USER): a second run of this script compiles faster than the first.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-gpu-check-out}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python}"
failed=0
: > "$OUT_DIR/summary.txt"

step() {  # step NAME SECONDS COMMAND...: run it with a time limit, log it, record its status and duration
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.log"
  local rc=${PIPESTATUS[0]}
  local line="$name: rc=$rc, $((SECONDS - t0)) s"
  [ "$rc" -eq 124 ] && line="$line (time limit)"
  [ "$rc" -ne 0 ] && failed=$((failed + 1))
  echo "$line" | tee -a "$OUT_DIR/summary.txt"
}

step env 30 "$PY" -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'CUDA', \
torch.version.cuda, 'available', torch.cuda.is_available(), [torch.cuda.get_device_name(i) for i in \
range(torch.cuda.device_count())]); sys.exit(0 if torch.cuda.is_available() else 1)"
nvidia-smi -L 2>&1 | tee -a "$OUT_DIR/env.log" || true
# grokscope itself, over the torch already there; its light dependencies only if they are missing
step install 90 bash -c "$PY -m pip install -q --no-deps -e . && ($PY -c 'import grokscope.cli' 2>/dev/null \
|| $PY -m pip install -q -e .) && $PY -c 'import grokscope, torch; print(grokscope.__file__, torch.__version__)'"
step tests 150 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_devices.py tests/test_gpu_bench.py \
tests/test_interp_device.py tests/test_dynamics.py tests/test_muon.py tests/test_compile.py -k cuda
step bench 230 "$PY" benchmarks/gpu.py --device cuda --compile reduce-overhead --budget 100 --json "$OUT_DIR/gpu.json"
echo "failed steps: $failed" | tee -a "$OUT_DIR/summary.txt"
exit "$failed"
