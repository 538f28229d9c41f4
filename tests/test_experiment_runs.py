"""experiments/runs.py, the module the experiment drivers and reports share: the seeds of a
run, README splicing, the shipped objective pieces, and the import rule (a driver imports
the shared modules, never another driver)."""

import ast
from pathlib import Path

import pytest

from experiments.runs import CONFIGS, objective_piece, seed_args, splice_between
from experiments.study import VARIANTS

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SHARED = {"experiments.runs", "experiments.stats"}
REPORTS = {"experiments.report", "experiments.study_report"}


def test_seed_args_seed_what_the_run_uses():
    assert seed_args(3) == [
        "--seed_everything=3",
        "--model.policy.init_args.seed=3",
        "--model.rollout_seed=3",
        "--data.seed=3",
    ]
    assert seed_args(1, policy_init=False) == [
        "--seed_everything=1",
        "--model.rollout_seed=1",
        "--data.seed=1",
    ]
    assert "--model.rollout_seed=0" not in seed_args(0, rollouts=False)


def test_splice_between_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- a -->\nold\n<!-- b -->\noutro\n")
    splice_between(readme, "<!-- a -->", "<!-- b -->", "new")
    assert readme.read_text() == "intro\n<!-- a -->\nnew\n<!-- b -->\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        splice_between(readme, "<!-- c -->", "<!-- b -->", "new")


@pytest.mark.parametrize(
    ("variant", "piece"), [("tawin_gated", "tawin"), ("beam_pauc_gated", "beam_pauc")]
)
def test_the_study_runs_the_shipped_pieces_as_they_are(variant, piece):
    assert VARIANTS[variant] == objective_piece(CONFIGS / "objective" / f"{piece}.yaml")


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.py")), ids=lambda p: p.name)
def test_a_driver_imports_the_shared_modules_and_its_report_only(path):
    imported = {
        node.module
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("experiments")
    }
    assert imported <= SHARED | REPORTS, path.name
    if f"experiments.{path.stem}" in REPORTS:
        assert imported <= SHARED, path.name
