"""The study's statistics against independent oracles: the paired bootstrap against a
brute-force loop, the sign test against scipy, per-user metrics against sorting the
catalog, the expected HR@K against summing the true probabilities of a sorted top K, and
the selection rule (step 0 a candidate, ties to the earlier step) on hand-made curves."""

import json

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from experiments.stats import (
    Run,
    Start,
    difference,
    load_counts,
    load_runs,
    mean_std,
    paired_bootstrap,
    paired_difference,
    per_user,
    sign_test,
    window_metric,
)
from wpauc.metrics.oracle import expected_hit_rate


def test_mean_std_is_the_sample_std():
    assert mean_std([0.1, 0.3, 0.2]) == pytest.approx((0.2, np.std([0.1, 0.3, 0.2], ddof=1)))
    assert mean_std([0.5]) == (0.5, 0.0)


def test_paired_bootstrap_matches_a_brute_force_loop():
    rng = np.random.default_rng(3)
    a, b = rng.random(50), rng.random(50) * 0.8
    mean, low, high = paired_bootstrap(a, b, resamples=300, seed=7)
    # the same resamples drawn one at a time
    draws = np.random.default_rng(7).integers(0, 50, size=(300, 50))
    brute = [float(np.mean([a[i] - b[i] for i in row])) for row in draws]
    assert mean == pytest.approx(np.mean(a - b))
    assert (low, high) == pytest.approx(tuple(np.quantile(brute, [0.025, 0.975])))
    assert low < mean < high


def test_the_bootstrap_interval_covers_a_known_mean():
    """Users whose differences are drawn around +0.05: the interval holds it, not 0."""
    rng = np.random.default_rng(0)
    diff = 0.05 + rng.normal(0, 0.1, size=4000)
    found = difference(diff, np.zeros_like(diff))
    assert found.low < 0.05 < found.high and not found.holds_zero
    assert difference(diff - diff.mean(), np.zeros_like(diff)).holds_zero


@pytest.mark.parametrize(
    ("wins", "losses", "ties"), [(30, 12, 5), (3, 3, 0), (0, 9, 2), (500, 440, 60)]
)
def test_sign_test_matches_scipy(wins, losses, ties):
    a = np.array([1.0] * wins + [0.0] * losses + [0.5] * ties)
    b = np.array([0.0] * wins + [1.0] * losses + [0.5] * ties)
    w, lo, p = sign_test(a, b)
    assert (w, lo) == (wins, losses)
    assert p == pytest.approx(scipy_stats.binomtest(wins, wins + losses, 0.5).pvalue, rel=1e-9)


def counts_of(scores: torch.Tensor, target: torch.Tensor) -> dict[str, np.ndarray]:
    """What `TestRanksWriter` saves, from full scores, by sorting (the oracle's counts)."""
    positive = scores.gather(1, target[:, None])
    gt = (scores > positive).sum(1)
    ge = (scores >= positive).sum(1) - 1
    return {
        "num_negatives": np.array(scores.shape[1] - 1),
        "sample_index": np.arange(len(target), dtype=np.int32),
        "gt": gt.numpy().astype(np.int32),
        "ge": ge.numpy().astype(np.int32),
    }


def test_per_user_metrics_match_the_sorted_catalog():
    torch.manual_seed(0)
    scores = torch.randint(0, 12, (40, 30)).float()  # many ties
    target = torch.randint(0, 30, (40,))
    counts = counts_of(scores, target)
    ge = counts["ge"]
    assert np.array_equal(per_user(counts, "hr@3"), (ge < 3).astype(float))
    ndcg = np.where(ge < 10, 1 / np.log2(ge + 2), 0.0)
    assert per_user(counts, "ndcg@10") == pytest.approx(ndcg)
    # AUC: a tie counts half, against every negative of the row
    for row in range(5):
        s, t = scores[row], int(target[row])
        negatives = torch.cat([s[:t], s[t + 1 :]])
        expected = float(((s[t] > negatives).float() + 0.5 * (s[t] == negatives).float()).mean())
        assert per_user(counts, "auc")[row] == pytest.approx(expected)
    # a width-1 window [K-1, K) is HR@K when there are no ties
    distinct = torch.rand(40, 30)
    counts = counts_of(distinct, target)
    assert per_user(counts, window_metric(4, 1)) == pytest.approx(per_user(counts, "hr@4"))
    with pytest.raises(ValueError, match="expected_hr"):
        per_user(counts, "expected_hr@1")


def test_expected_hit_rate_sums_the_true_mass_of_the_top_k():
    torch.manual_seed(1)
    scores, probs = torch.randn(6, 20), torch.softmax(torch.randn(6, 20), dim=1)
    got = expected_hit_rate(scores, probs, [1, 3, 20])
    for row in range(6):
        order = sorted(range(20), key=lambda i: -float(scores[row, i]))
        for column, k in enumerate([1, 3, 20]):
            assert float(got[row, column]) == pytest.approx(
                float(sum(probs[row, i] for i in order[:k]))
            )
    with pytest.raises(ValueError, match="exceeds"):
        expected_hit_rate(scores, probs, [21])


def fake_start(tmp_path, val: dict[int, float], seed: int = 0) -> Start:
    folder = tmp_path / f"sft_seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    return Start(
        "toy", seed, {s: {"val/ndcg@10": v} for s, v in val.items()}, {"hr@1": 0.1}, folder
    )


def fake_run(curve, seed=0, start=None, name="rl", test=None):
    result = {
        "dataset": "toy",
        "name": name,
        "objective": None,
        "lr": 1e-4,
        "beta": 0.0,
        "seed": seed,
        "sft_seed": None if start is None else start.sft_seed,
        "test": test or {"hr@1": 0.2},
        "curves": {"val/ndcg@10": curve},
    }
    return Run(result, start.folder if start else None, start)


def test_selection_takes_step_0_when_no_validation_beats_the_start(tmp_path):
    start = fake_start(tmp_path, {0: 0.30, 1: 0.10})
    stays = fake_run([[99, 0.29], [199, 0.30]], seed=0, start=start)
    assert (stays.selected_step, stays.selected_value) == (0, 0.30)  # a tie goes to step 0
    assert stays.test == {"hr@1": 0.1}  # the start's test, not the run's
    moves = fake_run([[99, 0.12], [199, 0.15], [299, 0.15]], seed=1, start=start)
    assert (moves.selected_step, moves.test) == (199, {"hr@1": 0.2})
    first_study = fake_run([[99, 0.12], [199, 0.11]])
    assert first_study.selected_step == 99 and first_study.step0_value is None


def write_counts(path, ge):
    ge = np.asarray(ge, dtype=np.int32)
    np.savez_compressed(
        path, num_negatives=50, sample_index=np.arange(len(ge), dtype=np.int32), gt=ge, ge=ge
    )


def test_paired_difference_pairs_runs_by_start_and_seed(tmp_path):
    """Two starts x one seed; RL moves user 0 into the top 1 from start 0 only."""
    starts, runs, controls = {}, [], []
    for sft_seed in (0, 1):
        start = fake_start(tmp_path, {0: 0.1}, seed=sft_seed)
        write_counts(start.counts_path, [5, 0, 7])
        starts[sft_seed] = start
        for name, ge in (("rl", [0 if sft_seed == 0 else 5, 0, 7]), ("control", [5, 0, 7])):
            folder = tmp_path / f"{name}{sft_seed}"
            folder.mkdir()
            write_counts(folder / "test_ranks.npz", ge)
            run = Run({**fake_run([[99, 0.2]], 0, start).result, "name": name}, folder, start)
            (runs if name == "rl" else controls).append(run)
    diff, per_start = paired_difference(runs, None, "hr@1")
    # user 0 gains 1 from start 0 and 0 from start 1: mean over pairs 0.5, over users 1/6
    assert diff.mean == pytest.approx(0.5 / 3) and per_start == pytest.approx({0: 1 / 3, 1: 0.0})
    against_control, _ = paired_difference(runs, controls, "hr@1")
    assert against_control.mean == pytest.approx(diff.mean)
    assert (diff.wins, diff.losses) == (1, 0)


def test_load_runs_ties_runs_to_their_starts(tmp_path):
    start_dir = tmp_path / "toy" / "sft_seed0"
    start_dir.mkdir(parents=True)
    start_record = {
        "dataset": "toy",
        "sft_seed": 0,
        "val_by_data_seed": {"0": {"val/ndcg@10": 0.3}},
        "test": {},
    }
    (start_dir / "result.json").write_text(json.dumps(start_record))
    for name, sft_seed in (("new", 0), ("old", None)):
        folder = tmp_path / "toy" / name
        folder.mkdir()
        result = fake_run([[99, 0.2]]).result | {"name": name, "sft_seed": sft_seed}
        (folder / "result.json").write_text(json.dumps(result))
    runs = {run.result["name"]: run for run in load_runs(tmp_path)["toy"]}
    assert runs["new"].start.sft_seed == 0 and runs["new"].selected_step == 0
    assert runs["old"].start is None and runs["old"].selected_step == 99


def test_the_ranks_writer_saves_the_counts_behind_the_logged_test_metrics(tmp_path):
    """A tiny synthetic test run: the saved counts give back every logged metric, and the
    expected HR@K is the true mass of the policy's top K, recomputed here by sorting."""
    from tests.helpers.runs import QUICKSTART, TINY_WORLD
    from wpauc.cli import run_cli
    from wpauc.decoding import score_items
    from wpauc.metrics.functional import hit_rate_from_ranks, positive_ranks

    writer = (
        '{"class_path": "wpauc.callbacks.TestRanksWriter", "init_args": {"oracle_ks": [1, 5, 64]}}'
    )
    cli = run_cli(
        [
            "test",
            f"--config={QUICKSTART}",
            *TINY_WORLD,
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.callbacks+={writer}",
        ]
    )
    counts = load_counts(tmp_path / "test_ranks.npz")
    logged = cli.trainer.callback_metrics
    for metric in ("hr@1", "hr@5", "ndcg@10", "auc"):
        assert per_user(counts, metric).mean() == pytest.approx(
            float(logged[f"test/{metric}"]), abs=1e-6
        )
    module, data = cli.model, cli.datamodule
    batch = next(iter(data.test_dataloader()))
    scores = score_items(module.policy, batch["input_ids"], batch["attention_mask"], module.trie)
    probs = data.data.true_next_item_probs["test"][batch["sample_index"]]
    # the saved arrays are in sample_index order: the positions of this batch's contexts
    rows = np.searchsorted(counts["sample_index"], batch["sample_index"].numpy())
    for row, sample in enumerate(rows):
        order = scores[row].argsort(descending=True)
        assert counts["expected_hr"][sample, 1] == pytest.approx(
            float(probs[row, order[:5]].sum()), abs=1e-5
        )
    assert counts["expected_hr"][:, 2] == pytest.approx(1.0, abs=1e-5)  # the whole catalog
    ranks = positive_ranks(scores, batch["target"])
    assert np.array_equal(counts["ge"][rows], ranks.ge.numpy())
    assert hit_rate_from_ranks(ranks, 1).numpy() == pytest.approx(per_user(counts, "hr@1")[rows])


def test_a_first_study_run_gets_step_0_from_a_start_that_reproduces_its_own(tmp_path):
    test = {"hr@1": 0.05, "hr@10": 0.1, "hr@20": 0.2, "ndcg@10": 0.08, "auc": 0.7}
    start_dir = tmp_path / "toy" / "sft_seed0"
    start_dir.mkdir(parents=True)
    record = {"dataset": "toy", "sft_seed": 0, "test": test}
    record["val_by_data_seed"] = {"0": {"val/ndcg@10": 0.3}}
    (start_dir / "result.json").write_text(json.dumps(record))
    folder = tmp_path / "toy" / "old"
    folder.mkdir()
    (folder / "result.json").write_text(json.dumps(fake_run([[99, 0.2]]).result | {"name": "old"}))
    first = {f"test/{k}": v for k, v in test.items()}
    (tmp_path / "toy" / "sft_start.json").write_text(json.dumps(first))
    (run,) = load_runs(tmp_path)["toy"]
    assert run.start is None and run.selected_step == 0 and run.test == test
    first["test/auc"] = 0.71  # another start: step 0 unknown
    (tmp_path / "toy" / "sft_start.json").write_text(json.dumps(first))
    (run,) = load_runs(tmp_path)["toy"]
    assert run.reproduced_start is None and run.selected_step == 99
