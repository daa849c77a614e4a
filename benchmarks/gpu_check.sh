#!/usr/bin/env bash
# The GPU check of issue 14, in one command: about 8 minutes at most on one H100.
#
#   benchmarks/gpu_check.sh DATA_DIR             # on a machine with an NVIDIA GPU, CuPy (and PyTorch)
#   benchmarks/gpu_check.sh --dry-run DATA_DIR   # every stage on the CuPy stand-in, tiny sizes, CPU only
#                                                # (same as GPU_CHECK_DRY_RUN=1; CI runs it)
#
# DATA_DIR holds cifar-10-batches-py/ (e.g. a git-ignored copy of ../shared/data, the 5,170-image
# CIFAR-10 subset). Logs go to $OUT/gpu_check/ (OUT defaults to a new temporary folder): one log per
# stage, NN_<stage>.log, and summary.txt. Stages, each under its own `timeout`; a stage that fails or
# times out is reported and the next one still runs; the exit status is 1 if any failed:
#
#   env        nvidia-smi, Python, CuPy and PyTorch versions, the device
#   counts     kernel launches and syncs of a ResNet-110 step (counted by the stand-in, also on a GPU)
#   tests      python -m pytest -m gpu: minisd's GPU path on CuPy (lessons, training CLI, step_time)
#   step_time  benchmarks/step_time.py ResNet-20 and -110 against PyTorch CUDA (fp32, TF32 off),
#              stochastic/constant ratios, the plain-loop ratio, peak memory
#   train      ResNet-110 for 2 epochs on DATA_DIR (1,000 images held out for validation)
#   resume     --resume of that run for one more epoch (3 of 3)
set -u -o pipefail
cd "$(dirname "$0")/.."

DRY="${GPU_CHECK_DRY_RUN:-0}"
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
if [ $# -ne 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
DATA="$1"
if [ ! -d "$DATA/cifar-10-batches-py" ]; then
    echo "error: $DATA/cifar-10-batches-py not found (DATA_DIR must hold the CIFAR-10 python folder)" >&2
    exit 2
fi
OUT="${OUT:-$(mktemp -d -t minisd-gpu-check-XXXXXX)}"
LOG="$OUT/gpu_check"
mkdir -p "$LOG"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's minisd, installed or not
PYTHON="${PYTHON:-python3}"  # the interpreter: python3 from PATH unless set (the tests set it to theirs)

if [ "$DRY" = "1" ]; then
    PY=("$PYTHON" tests/support/run_with_standin.py)  # cupy is the NumPy-backed stand-in
    export MINISD_TEST_STANDIN=1
    TESTS=("tests/test_gpu_path.py::test_training_step_matches_numpy[8]")
    STEP_TIME=(--depth 8 --batch-size 4 --steps 2 --warmup 1 --plain-steps 2)
    TRAIN=(--depth 8 --batch-size 16 --limit-train 200 --valid-size 40 --eval-batch-size 100)
    COUNT_DEPTH=8
    T_ENV=60 T_COUNTS=60 T_TESTS=120 T_STEP=120 T_TRAIN=120 T_RESUME=120
else
    PY=("$PYTHON")
    TESTS=(-m gpu)
    STEP_TIME=(--depth 20 110 --batch-size 128 --steps 5 --warmup 2)
    TRAIN=(--depth 110 --batch-size 128 --valid-size 1000)
    COUNT_DEPTH=110
    T_ENV=30 T_COUNTS=30 T_TESTS=150 T_STEP=120 T_TRAIN=90 T_RESUME=60  # 480 s in all
fi

RUN="$OUT/run-resnet${TRAIN[1]}"
SUMMARY=()
FAILED=0
N=0
T_START=$(date +%s)

stage() {  # stage NAME SECONDS COMMAND...: run it under `timeout`, log to $LOG/NN_NAME.log
    local name="$1" secs="$2"
    shift 2
    N=$((N + 1))
    local log
    log="$LOG/$(printf %02d "$N")_$name.log"
    local t0 rc status
    t0=$(date +%s)
    echo "== $name (timeout ${secs} s): $*" | tee "$log"
    timeout -k 10 "$secs" "$@" >>"$log" 2>&1
    rc=$?
    case $rc in
        0) status="ok" ;;
        124 | 137) status="TIMEOUT"; FAILED=1 ;;
        *) status="FAILED (exit $rc)"; FAILED=1 ;;
    esac
    local line
    line=$(printf "%-10s %-18s %4d s  %s" "$name" "$status" $(($(date +%s) - t0)) "$log")
    echo "$line"
    [ "$status" = "ok" ] || tail -n 15 "$log" | sed 's/^/    /'
    SUMMARY+=("$line")
}

# the env stage, as a script of its own so that `timeout` can run it
cat >"$LOG/env.sh" <<EOF
echo "date: \$(date -u +%Y-%m-%dT%H:%M:%SZ)   commit: \$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "dry run: $DRY   data: $DATA   out: $OUT"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
else
    echo "nvidia-smi: not found"
fi
"$PYTHON" -VV
"$PYTHON" -m pip list 2>/dev/null | grep -i -E "^(numpy|cupy|cupy-cuda[0-9]+x|torch) " || true
${PY[*]} -c "\$(cat <<'PYEOF'
import os, platform
import numpy
print(f"NumPy {numpy.__version__}, {platform.machine()}, {os.cpu_count()} CPUs")
try:
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name, mem = props["name"].decode(), props["totalGlobalMem"] / 2**30
    print(f"CuPy {cupy.__version__}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, "
          f"driver {cupy.cuda.runtime.driverGetVersion()}, {name}, {mem:.0f} GiB")
except Exception as e:
    print(f"CuPy: not usable ({type(e).__name__}: {e})")
try:
    import torch
    print(f"PyTorch {torch.__version__}, CUDA {torch.version.cuda}, available {torch.cuda.is_available()}")
except Exception as e:
    print(f"PyTorch: not usable ({type(e).__name__}: {e})")
import minisd
print(f"minisd {minisd.__version__} from {minisd.__file__}; gpu_available {minisd.gpu_available()}")
PYEOF
)"
EOF

echo "minisd GPU check$([ "$DRY" = 1 ] && echo " (dry run on the CuPy stand-in)"): logs in $LOG"
stage env "$T_ENV" bash "$LOG/env.sh"
stage counts "$T_COUNTS" "$PYTHON" tests/test_gpu_path.py "$COUNT_DEPTH"
stage tests "$T_TESTS" "$PYTHON" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
stage step_time "$T_STEP" "${PY[@]}" benchmarks/step_time.py --device gpu "${STEP_TIME[@]}"
stage train "$T_TRAIN" "${PY[@]}" -m minisd.train --data-dir "$DATA" "${TRAIN[@]}" --epochs 2 --device gpu \
    --seed 0 --out "$RUN" --no-progress
stage resume "$T_RESUME" "${PY[@]}" -m minisd.train --resume "$RUN/last.npz" --epochs 3 --no-progress

{
    echo "minisd GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), dry run: $DRY, $(($(date +%s) - T_START)) s in all"
    printf '%s\n' "${SUMMARY[@]}"
} | tee "$LOG/summary.txt"
exit $FAILED
