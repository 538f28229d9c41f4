#!/usr/bin/env bash
# The study's run plan (experiments/README.md), highest value first, one heavy job at a
# time on one thread. Every piece skips what has finished and commits each finished run, so
# the script can be stopped and started again; it runs from the repository root.
#   nohup experiments/run_plan.sh > experiments/results/study/plan.log 2>&1 &
# The code runs from a snapshot of HEAD (the working tree is shared with work in progress);
# results land in this repository's experiments/results/study and are committed here.
# The body is one block, read whole before it runs: editing this file while it runs is safe.
set -euo pipefail
{
cd "$(dirname "$0")/.."
REPO=$PWD
CODE=${STUDY_CODE:-/tmp/wpauc_study_code}
rm -rf "$CODE" && mkdir -p "$CODE"
git archive HEAD wpauc experiments configs | tar -x -C "$CODE"
export WPAUC_STUDY_COMMIT=$(git rev-parse HEAD)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 WPAUC_DATA="${WPAUC_DATA:-$REPO/data}"  # as the configs: data/ of the repository
study() {
  (cd "$CODE" && "$REPO/.venv/bin/python" -m experiments.study --out "$REPO/experiments/results/study" \
    --threads 1 --commit "$@")
}
REAL=(--val-rank-cap 20)
SEEDS=(--sft-seeds 0 1 2 --seeds 0 1 2)

# 1. headline rows, 3 SFT starts x 3 RL seeds: the start, the matched control and the
#    variant the rule picked on the first study's validation curves
study --dataset synthetic --plan main --only sft_matched tawin_gated --lrs 3e-4 --beta 0.04 "${SEEDS[@]}"
#    and gated TAWin with tail negatives (the correction for the out-of-beam mass), start 0
study --dataset synthetic --plan main --only tawin_gated_tail --lrs 3e-4 --beta 0.04
study --dataset office --plan main --only sft_matched beam_pauc_gated --lrs 3e-4 --beta 0.04 "${SEEDS[@]}" "${REAL[@]}"
# 2. steering on the synthetic world, from start 0: width-K and width-1 windows [K-1, K)
#    beside each other
study --dataset synthetic --plan sweep --only sweep_tawin_gated_k1 sweep_tawin_gated_k3 sweep_tawin_gated_k20 --lrs 3e-4 --beta 0.04
study --dataset synthetic --plan sweep1 --only sweep1_tawin_gated_k3 sweep1_tawin_gated_k10 sweep1_tawin_gated_k20 --lrs 3e-4 --beta 0.04
# 3. controls at the other learning rate, and Industrial: its start, controls, the RL row
study --dataset synthetic --plan main --only sft_matched --lrs 1e-4
study --dataset office --plan main --only sft_matched --lrs 1e-4 "${REAL[@]}"
study --dataset industrial --plan main --only sft_matched tawin_gated --lrs 3e-4 --beta 0.04 "${REAL[@]}"
study --dataset industrial --plan main --only sft_matched --lrs 1e-4 "${REAL[@]}"
# 4. steering on Office, from start 0, and its tail negatives
study --dataset office --plan main --only tawin_gated --lrs 3e-4 --beta 0.04 "${REAL[@]}"
study --dataset office --plan sweep --only sweep_tawin_gated_k1 sweep_tawin_gated_k3 sweep_tawin_gated_k20 --lrs 3e-4 --beta 0.04 "${REAL[@]}"
study --dataset office --plan sweep1 --only sweep1_tawin_gated_k3 sweep1_tawin_gated_k10 sweep1_tawin_gated_k20 --lrs 3e-4 --beta 0.04 "${REAL[@]}"
study --dataset office --plan main --only tawin_gated_tail --lrs 3e-4 --beta 0.04 "${REAL[@]}"
# 5. tail negatives at the weight the bound asks for (tail_weight 0.1), start 0
study --dataset synthetic --plan main --only tawin_gated_tail_small --lrs 3e-4 --beta 0.04
study --dataset office --plan main --only tawin_gated_tail_small --lrs 3e-4 --beta 0.04 "${REAL[@]}"
#    and on the synthetic world from starts 1 and 2 too, beside the headline's 3 x 3
study --dataset synthetic --plan main --only tawin_gated_tail_small --lrs 3e-4 --beta 0.04 "${SEEDS[@]}"
exit
}
