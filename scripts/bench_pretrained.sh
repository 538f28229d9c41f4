#!/usr/bin/env bash
# The real-size benchmark (benchmarks/bench_pretrained.py; benchmarks/README.md, "Real-size
# benchmark"): a random Qwen2.5-shaped checkpoint (or --model-path) through the code `wpauc fit`
# runs: SFT, RL per objective, validation (rank cap 20 / full counts, diagnostics off / on),
# the rollout's beam search against HF generate, export + load_recommender; one table, also
# written as JSON + markdown under --out (default benchmarks/results/).
# Usage: bash scripts/bench_pretrained.sh [bench_pretrained.py options]
#   default: --shape qwen2.5-1.5b on a CUDA machine, --shape small on a CPU; e.g.
#   bash scripts/bench_pretrained.sh --shape tiny --data synthetic --out /tmp/bench   # seconds
# A GPU machine without network or the CLI's packages: scripts/bench_pretrained_gpu.sh.
# PYTHON selects the interpreter (default: .venv/bin/python when present, else python).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
shape=$("$PYTHON" -c 'import torch; print("qwen2.5-1.5b" if torch.cuda.is_available() else "small")')
case " $* " in *" --shape"*|*" --model-path"*) exec "$PYTHON" benchmarks/bench_pretrained.py "$@" ;; esac
exec "$PYTHON" benchmarks/bench_pretrained.py --shape "$shape" "$@"
