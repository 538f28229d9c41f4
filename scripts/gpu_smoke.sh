#!/usr/bin/env bash
# GPU smoke test of the pretrained path (tests/test_gpu_smoke.py, `pytest -m gpu`; docs/gpu.md):
# on a random Qwen2 checkpoint saved locally, LoRA on bf16 weights, LoRA on 4-bit and 8-bit
# bitsandbytes weights and full fine-tuning in bf16 each run SFT steps, RL steps with a KL
# term (beta > 0; the reference is checked against the SFT policy), exact evaluation of the
# test split, then load the last checkpoint as a user does: `wpauc test --ckpt_path`, a
# resumed fit, an RL run from it (`model.init_from`), `wpauc export` and recommendations from
# the export, on CUDA. Then, at Qwen2.5-0.5B's shape (random weights, nothing downloaded),
# the exact validation of 64 contexts (full counts with diagnostics; rank cap 20) must finish
# in bf16 + LoRA within a generous bound. Prints every wall time. A few minutes on one GPU
# (about 1 GB of disk for the 0.5B-shape checkpoint); -k qwen2_5 runs only the real shape,
# -k lora-4bit only that configuration.
#
# Needs a CUDA GPU, a CUDA build of torch and bitsandbytes (pip install -e ".[quant,dev]";
# scripts/setup.sh installs the CPU build of torch, which cannot run this).
# Usage: bash scripts/gpu_smoke.sh [pytest options, e.g. -k lora-4bit, -k qwen2_5]
# PYTHON selects the interpreter (default: .venv/bin/python when present, else python).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
"$PYTHON" - <<'CHECK'
import importlib.util
import sys

import torch

problems = []
if not torch.cuda.is_available():
    problems.append(f"torch {torch.__version__} sees no CUDA device (a CPU build, or no GPU)")
if importlib.util.find_spec("bitsandbytes") is None:
    problems.append("bitsandbytes is not installed (pip install -e '.[quant]')")
if problems:
    sys.exit("gpu_smoke: " + "; ".join(problems))
print(f"gpu_smoke: torch {torch.__version__} on {torch.cuda.get_device_name()}")
CHECK
exec "$PYTHON" -m pytest -m gpu -s -q -p no:cacheprovider tests/test_gpu_smoke.py "$@"
