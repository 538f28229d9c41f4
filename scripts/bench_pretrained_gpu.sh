#!/usr/bin/env bash
# The real-size benchmark (benchmarks/bench_pretrained.py) on a GPU machine that has torch,
# transformers, peft, lightning, torchmetrics and tensorboard but no network and none of
# omegaconf, jsonargparse (+ docstring-parser, typeshed-client) or bitsandbytes, such as
# this workplace's H200 device machine. Two steps:
#
#   bash scripts/bench_pretrained_gpu.sh prepare
#       HERE, with network: downloads those wheels (for CPython 3.12, x86-64 Linux) into
#       .wheels/ (git-ignored), keeps only the cuda130 library of bitsandbytes (its wheel is
#       120 MiB unpacked, 3.9 MiB with CUDA 13.0's library alone), copies the Office data
#       (MiniOneRec layout, 13 MiB) into .wheels/data/ and checks that the working tree plus
#       .wheels/ stay under the 64 MiB that travel.
#
#   bash scripts/bench_pretrained_gpu.sh device
#       THERE (the device tool: run(command="bash scripts/bench_pretrained_gpu.sh device",
#       carry=[".wheels"], timeout_s=480)): installs the wheels offline
#       (pip install --no-index --find-links .wheels --target /tmp/site), prints the library
#       versions and the GPU, and runs the benchmark at the 1.5B shape on the Office data;
#       its table (JSON + markdown) and its whole log go to $OUT (default
#       runs/bench_pretrained_gpu). The benchmark's own budget (--budget-s, 320 s in its gpu
#       profile) keeps it under 6 minutes on one H200.
#
# Environment: BENCH_SHAPE (default qwen2.5-1.5b), BENCH_ARGS (more bench_pretrained.py
# arguments, e.g. "--modes lora-bf16"), PYTHON (default: .venv/bin/python here when present,
# else python3), BENCH_SITE (install target, default /tmp/site), BENCH_WHEELS (the pinned
# requirements below). Both steps also run on a CPU machine (the device step then runs the
# shape on the CPU, 4-bit reported as skipped): BENCH_SHAPE=tiny for a check in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS_DIR=.wheels
LIMIT_MIB=64
BENCH_WHEELS=${BENCH_WHEELS:-"omegaconf==2.4.0 jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.15.0 bitsandbytes==0.50.0"}
PACKAGES=$(for requirement in $BENCH_WHEELS; do printf '%s ' "${requirement%%[=<>]*}"; done)

choose_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON";
    elif [ -x .venv/bin/python ]; then echo .venv/bin/python;
    else echo python3; fi
}

find_office() {
    local root
    for root in "${WPAUC_DATA:-}" data; do
        if [ -n "$root" ] && [ -f "$root/amazon18-minionerec/index/Office_Products.index.json" ]; then
            echo "$root/amazon18-minionerec"
            return
        fi
    done
}

prepare() {
    local python office data
    python=$(choose_python)
    mkdir -p "$WHEELS_DIR"
    rm -f "$WHEELS_DIR"/*.whl  # one version of each: two would stop the install there
    # shellcheck disable=SC2086  # the requirements are words
    "$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEELS_DIR" $BENCH_WHEELS
    "$python" - "$WHEELS_DIR" <<'SLIM'
"""Rewrite the bitsandbytes wheel with its CPU and CUDA 13.0 libraries alone (its RECORD
too, so pip installs it as any wheel)."""
import sys
import zipfile
from pathlib import Path

KEEP = ("libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so")
for wheel in Path(sys.argv[1]).glob("bitsandbytes-*.whl"):
    slim = wheel.with_suffix(".slim")
    dropped = set()
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as out:
        names = source.namelist()
        for name in names:
            base = name.rsplit("/", 1)[-1]
            if base.startswith("libbitsandbytes_") and base not in KEEP:
                dropped.add(name)
        for name in names:
            if name in dropped:
                continue
            data = source.read(name)
            if name.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(l for l in lines if l.split(",", 1)[0] not in dropped).encode()
            out.writestr(source.getinfo(name), data)
    slim.replace(wheel)
    print(f"{wheel.name}: kept {', '.join(KEEP)}; dropped {len(dropped)} other libraries")
SLIM
    office=$(find_office)
    data="$WHEELS_DIR/data/amazon18-minionerec"
    rm -rf "$WHEELS_DIR/data"
    if [ -n "$office" ]; then
        mkdir -p "$data"/{train,valid,test,index}
        for split in train valid test; do cp "$office/$split"/Office_Products_*.csv "$data/$split/"; done
        cp "$office"/index/Office_Products.{index,item}.json "$data/index/"
        echo "Office data copied from $office"
    else
        echo "no Office data found (WPAUC_DATA, data/): the device runs the synthetic world"
    fi
    local tree carried total
    tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
    carried=$(du -sb "$WHEELS_DIR" | cut -f1)
    total=$((tree + carried))
    ls -l "$WHEELS_DIR"
    echo "working tree $((tree / 1024)) KiB + $WHEELS_DIR $((carried / 1024)) KiB = $((total / 1048576)) MiB (limit $LIMIT_MIB MiB)"
    if [ "$total" -ge $((LIMIT_MIB * 1048576)) ]; then
        echo "bench_pretrained_gpu: over the $LIMIT_MIB MiB that travel" >&2
        exit 1
    fi
    echo 'next, with the device tool: run(command="bash scripts/bench_pretrained_gpu.sh device", carry=[".wheels"], timeout_s=480)'
}

device() {
    local python site out shape
    python=$(choose_python)
    site=${BENCH_SITE:-/tmp/site}
    out=${OUT:-runs/bench_pretrained_gpu}
    shape=${BENCH_SHAPE:-qwen2.5-1.5b}
    mkdir -p "$out"
    if ! ls "$WHEELS_DIR"/*.whl >/dev/null 2>&1; then
        echo "bench_pretrained_gpu: no wheels in $WHEELS_DIR: run the prepare step first (and carry .wheels)" >&2
        exit 1
    fi
    # shellcheck disable=SC2086  # the package names are words
    "$python" -m pip install -q --no-index --find-links "$WHEELS_DIR" --no-deps --no-compile \
        --no-cache-dir --upgrade --target "$site" $PACKAGES
    export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    if [ -f "$WHEELS_DIR/data/amazon18-minionerec/index/Office_Products.index.json" ]; then
        export WPAUC_DATA="$PWD/$WHEELS_DIR/data"
    fi
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
    "$python" - <<'VERSIONS'
import importlib.metadata as metadata
import platform

import torch

names = ["torch", "transformers", "peft", "lightning", "torchmetrics", "tokenizers",
         "jsonargparse", "omegaconf", "bitsandbytes"]
versions = []
for name in names:
    try:
        versions.append(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        versions.append(f"{name} missing")
cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"python {platform.python_version()}; " + ", ".join(versions) + f"; {cuda}", flush=True)
VERSIONS
    set -o pipefail
    # shellcheck disable=SC2086  # BENCH_ARGS are words
    "$python" benchmarks/bench_pretrained.py --shape "$shape" --out "$out" ${BENCH_ARGS:-} 2>&1 \
        | tee "$out/bench.log"
}

case "${1:-}" in
    prepare) prepare ;;
    device) device ;;
    *)
        echo "usage: bash scripts/bench_pretrained_gpu.sh prepare|device (see the comments at the top)" >&2
        exit 2
        ;;
esac
