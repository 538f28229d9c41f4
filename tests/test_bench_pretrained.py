"""The real-size benchmark, ``benchmarks/bench_pretrained.py``: its tiny mode runs every part
end to end on a CPU through the CLI's code (SFT, RL with each objective class, validation
capped and full with diagnostics off and on, the beam search against HF ``generate``, export
and ``load_recommender``), 4-bit is reported as skipped without CUDA, the table is written as
JSON and markdown; its shapes are Qwen2.5's published ones; a part past its limit is stopped
and the timer set before it is kept."""

from __future__ import annotations

import importlib
import json
import signal
import time

import pytest
import torch

from tests.conftest import REPO_ROOT


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    return importlib.import_module("bench_pretrained")


def test_tiny_mode_runs_every_part_on_cpu(bench, tmp_path):
    results = bench.main(
        [
            "--shape=tiny",
            "--data=synthetic",
            "--device=cpu",
            f"--out={tmp_path / 'out'}",
            f"--workdir={tmp_path / 'work'}",
        ]
    )
    rows = {(row["part"], row["setting"]): row for row in results["rows"]}
    ok = [key for key, row in rows.items() if row["status"] == "ok"]
    expected = [
        ("checkpoint", "tiny"),
        ("data", "synthetic"),
        ("sft", "lora-bf16"),
        *[(f"rl {name}", "lora-bf16") for name in ("tawin", "grpo_auc", "beam_pauc", "rank_aware")],
        *[
            ("validate", f"lora-bf16, {counts}, diag {diag}")
            for counts in ("cap 20", "full counts")
            for diag in ("off", "on")
        ],
        ("beam", "lora-bf16, 2 prompts x 5 beams"),
        ("export + recommend", "lora-bf16"),
    ]
    assert sorted(ok) == sorted(expected), {key: row["status"] for key, row in rows.items()}
    for key in expected[2:]:
        row = rows[key]
        assert row["seconds"] > 0 and row["count"] >= 1, row
        assert row["peak_memory_gib"] > 0
    sft = rows[("sft", "lora-bf16")]
    assert sft["tokens_per_s"] > 0 and sft["mfu"] is None  # no peak FLOPs known on this CPU
    assert sft["positions"]["grad_positions"] > 0
    rl = rows[("rl tawin", "lora-bf16")]
    assert rl["positions"]["no_grad_positions"] > 0  # the rollout and the reference
    validation = rows[("validate", "lora-bf16, full counts, diag off")]
    assert validation["positions_per_context"] > 0
    beam = rows[("beam", "lora-bf16, 2 prompts x 5 beams")]
    assert beam["hf_generate_s"] > 0 and beam["bound"] == "n/a"
    if not torch.cuda.is_available():
        skipped = [key for key, row in rows.items() if row["status"] == "skipped"]
        assert skipped and all(setting == "lora-4bit" for _, setting in skipped)

    written = json.loads((tmp_path / "out" / "pretrained_tiny.json").read_text())
    assert written["rows"] == json.loads(json.dumps(results["rows"]))
    table = (tmp_path / "out" / "pretrained_tiny.md").read_text()
    assert "| part | setting | status |" in table and "rl rank_aware" in table
    assert "no verdict" in table  # the goals are the 1.5B shape's on an H200


def test_a_part_past_its_limit_is_stopped_and_the_outer_timer_kept(bench):
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        started = time.monotonic()
        with pytest.raises(bench.PartTimeout), bench.time_limit(0.2):
            time.sleep(3)
        assert time.monotonic() - started < 2
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 3.0 < remaining <= 5.0  # the outer deadline, not reset
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not fired


def test_shapes_are_the_published_qwen25_configs(bench):
    expected = {
        "qwen2.5-0.5b": (896, 24, 14, 2, 4864, 151936, True, 0.49e9),
        "qwen2.5-1.5b": (1536, 28, 12, 2, 8960, 151936, True, 1.54e9),
        "qwen2.5-7b": (3584, 28, 28, 4, 18944, 152064, False, 7.07e9),
    }
    keys = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "vocab_size",
        "tie_word_embeddings",
    )
    for name, (*values, parameters) in expected.items():
        shape = bench.load_shape(name)
        assert tuple(shape[key] for key in keys) == tuple(values), name
        assert shape["rope_theta"] == 1e6 and shape["max_position_embeddings"] == 32768
        config = type("Config", (), shape)
        # the matmul weights: all parameters less the embedding of an untied model
        assert bench.matmul_parameters(config) == pytest.approx(parameters, rel=0.02), name
