"""Set-up shared by bench_decoding.py and bench_group_forward.py: the benchmark model, the SID
catalog, left-padded prompts, timing and the results file."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from transformers import Qwen2Config, Qwen2ForCausalLM

RESULTS_DIR = Path(__file__).resolve().parent / "results"
OFFICE_INDEX = (
    Path(os.environ.get("WPAUC_DATA", "data"))  # where the configs find the data too
    / "amazon18-minionerec"
    / "index"
    / "Office_Products.index.json"
)
CODE_LEVELS, CODE_VALUES = 3, 256
NUM_SPECIALS = 32
"""Vocabulary = 3 x 256 SID tokens (level l, value v -> l * 256 + v) + 32 specials/prompt words."""
EOS, PAD = (
    CODE_LEVELS * CODE_VALUES + NUM_SPECIALS - 2,
    CODE_LEVELS * CODE_VALUES + NUM_SPECIALS - 1,
)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, threads, device and repeat options of both benchmarks."""
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (reported)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--hidden-size", type=int, default=128, help="model width")
    parser.add_argument("--num-layers", type=int, default=2, help="transformer blocks")
    parser.add_argument("--num-heads", type=int, default=4, help="attention heads")
    parser.add_argument("--num-kv-heads", type=int, default=2, help="key/value heads")
    parser.add_argument("--intermediate-size", type=int, default=512, help="MLP width")
    parser.add_argument(
        "--head-dim", type=int, default=None, help="head size (default: width / heads)"
    )
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help="vocabulary (default: the SID tokens + 32; e.g. 151936, Qwen2.5's)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs of our methods (median reported)"
    )
    parser.add_argument(
        "--baseline-repeats", type=int, default=1, help="timed runs of the (slow) baselines"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the model, prompts and catalog"
    )


def bench_model(args: argparse.Namespace) -> Qwen2ForCausalLM:
    """A random Qwen2 over the SID vocabulary, or ``--vocab-size`` tokens of which the SID
    tokens are the first (sdpa attention, float32), in eval mode."""
    torch.manual_seed(args.seed)
    config = Qwen2Config(
        vocab_size=args.vocab_size or CODE_LEVELS * CODE_VALUES + NUM_SPECIALS,
        head_dim=args.head_dim,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        num_key_value_heads=args.num_kv_heads,
        intermediate_size=args.intermediate_size,
        max_position_embeddings=512,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=EOS,
    )
    return Qwen2ForCausalLM(config).to(args.device).eval()


def model_description(model: Qwen2ForCausalLM) -> dict:
    """The architecture figures a reader needs to reproduce the run."""
    config = model.config
    return {
        "architecture": "Qwen2ForCausalLM (random init, float32, sdpa)",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "num_kv_heads": config.num_key_value_heads,
        "head_dim": getattr(config, "head_dim", None)
        or config.hidden_size // config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
    }


def sid_catalog(source: str, num_items: int, seed: int) -> tuple[list[list[int]], str]:
    """3-token SID codes: Office_Products' distinct SIDs (MiniOneRec index) or random ones.

    Office holds 3459 items with 3444 distinct SIDs; the benchmark keeps the distinct SIDs (the
    collisions need a 4th disambiguation token, which would make the codes variable-length).
    """
    if source == "office" or (source == "auto" and OFFICE_INDEX.is_file()):
        index = json.loads(OFFICE_INDEX.read_text())
        codes = {
            tuple(
                level * CODE_VALUES + int(token.split("_")[1].rstrip(">"))
                for level, token in enumerate(sid)
            )
            for sid in index.values()
        }
        return [
            list(code) for code in sorted(codes)
        ], f"Office_Products distinct SIDs ({OFFICE_INDEX})"
    generator = torch.Generator().manual_seed(seed)
    values = torch.randint(0, CODE_VALUES, (2 * num_items, CODE_LEVELS), generator=generator)
    codes = (values + torch.arange(CODE_LEVELS) * CODE_VALUES).unique(dim=0)
    codes = codes[torch.randperm(len(codes), generator=generator)[:num_items]]
    return codes.tolist(), "random distinct 3-token SIDs over 256 values per level"


def left_padded_prompts(
    num_prompts: int, min_length: int, max_length: int, seed: int, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random prompts of SID tokens with lengths in [min_length, max_length], left-padded."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_length, max_length + 1, (num_prompts,), generator=generator)
    width = int(lengths.max())
    input_ids = torch.randint(
        0, CODE_LEVELS * CODE_VALUES, (num_prompts, width), generator=generator
    )
    attention_mask = (torch.arange(width) >= width - lengths[:, None]).long()
    input_ids = input_ids.masked_fill(attention_mask == 0, PAD)
    return input_ids.to(device), attention_mask.to(device)


def timed(
    function: Callable[[], object], repeats: int, device: str, warm_up: bool = True
) -> tuple[float, object]:
    """Median wall time in seconds over ``repeats`` runs (after one untimed warm-up run unless
    ``warm_up`` is False), and the last run's result."""
    if warm_up:
        function()
    times, result = [], None
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = function()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def environment(args: argparse.Namespace) -> dict:
    """Threads, device and library versions of the run."""
    device = args.device
    return {
        "threads": torch.get_num_threads(),
        "device": device,
        "device_name": torch.cuda.get_device_name(device)
        if device.startswith("cuda")
        else _cpu_name(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def write_results(name: str, results: dict) -> Path:
    """Writes ``benchmarks/results/<name>.json`` and returns its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()
