"""Real-size benchmark: a Qwen2.5-shaped policy run through the code ``wpauc fit`` runs.

Builds a random checkpoint of a named shape (``benchmarks/shapes/<name>.json``: Qwen2.5-0.5B,
1.5B, 7B as in their Hugging Face config.json, or ``small``/``tiny`` for a CPU), with a
byte-level BPE tokenizer (Qwen2's pre-tokenizer) trained on the catalog's titles, or takes
``--model-path`` of a real local checkpoint (its own tokenizer). Nothing is downloaded. Data:
Office_Products (MiniOneRec layout, SIDs, titles in the prompt) when found, else the
synthetic world. Every part goes through the LightningCLI of ``wpauc`` with
``configs/pretrained/qwen2.5_lora_office.yaml`` and command-line overrides (``run_cli`` +
``trainer.fit`` / ``trainer.validate``, ``wpauc export``, ``load_recommender``):

- ``sft``: SFT steps (bf16 LoRA on every projection + gradient checkpointing, as shipped;
  4-bit with ``lora-4bit``), its ``last.ckpt`` kept for the parts below;
- ``rl <objective>``: RL steps (RL-only run from the base checkpoint, KL beta 0.04) of each
  objective class: TAWinWPAUC, GRPOAUC, BeamPAUC (the shipped objective configs) and
  RankAwareReward;
- ``validate``: ``trainer.validate`` of the SFT checkpoint (``wpauc validate --ckpt_path``),
  exact protocol, rank cap 20 and full counts, diagnostics off and on;
- ``beam``: the rollout's ``constrained_beam_search`` against Hugging Face ``generate`` with
  ``prefix_allowed_tokens_fn`` (``bench_decoding.hf_beam_search``) and against the hardware
  bound (the FLOPs of its tokens / peak, or the weights read per forward / bandwidth);
- ``export``: ``wpauc export`` of the SFT checkpoint, ``load_recommender(...).recommend``.

Prints progress lines as it goes and ONE table at the end; writes it as JSON and markdown
(``<out>/pretrained_<shape>.json`` / ``.md``) after every part, so a run stopped at its limit
leaves what it measured. ``--budget-s`` skips the parts that no longer fit; a part that
outlives its own limit is stopped (SIGALRM) and reported as timed out with what it did.

    python benchmarks/bench_pretrained.py --shape qwen2.5-1.5b        # one H200: <= 6 min
    python benchmarks/bench_pretrained.py --shape small               # CPU: minutes
    python benchmarks/bench_pretrained.py --shape tiny --data synthetic --out /tmp/bench
    python benchmarks/bench_pretrained.py --model-path /models/Qwen2.5-1.5B-Instruct

Figures: step time = median over the steps after ``--warmup-steps``; tokens/s = real tokens
(prompt + target code for SFT; prompt + the group's completion tokens for RL) per second;
MFU = (6 x params x positions run with gradients + 2 x params x positions run without) /
time / peak FLOPs, where params = the matmul weights per token (every decoder layer's
projections + the LM head, the embedding lookup not counted) and positions = what the
transformer ran (counted by a forward hook, padding included); peak FLOPs: H100/H200 bf16
dense 989 TFLOPs (H100 PCIe 756), else ``--peak-tflops``, else n/a. Peak memory:
``torch.cuda.max_memory_allocated`` on a GPU, peak RSS (VmHWM) on a CPU, per part.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from _decoding_setup import environment, timed
from bench_decoding import hf_beam_search
from bench_memory import process_memory_mib, reset_peak_rss
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
SHAPES_DIR = BENCH_DIR / "shapes"
CONFIG = REPO_ROOT / "configs" / "pretrained" / "qwen2.5_lora_office.yaml"
OBJECTIVES = {
    "tawin": str(REPO_ROOT / "configs" / "objective" / "tawin.yaml"),
    "grpo_auc": str(REPO_ROOT / "configs" / "objective" / "grpo_auc.yaml"),
    "beam_pauc": str(REPO_ROOT / "configs" / "objective" / "beam_pauc.yaml"),
    # no shipped config: MiniOneRec's rank-aware reward over a 16-beam rollout
    "rank_aware": json.dumps(
        {"class_path": "wpauc.objectives.RankAwareReward", "init_args": {"num_beams": 16}}
    ),
}
"""Objective name -> the ``--model.objective`` value (a config file or a class spec)."""
MODES = {
    "lora-bf16": [],  # the shipped policy: bf16 weights, LoRA r16 on every projection
    "lora-4bit": ["--model.policy.init_args.quantization=4bit"],
    "full-bf16": ["--model.policy.init_args.lora=null"],
}
"""Mode -> policy overrides on top of the shipped config."""
PEAK_BF16_TFLOPS = {"H100 PCIE": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H200": 989.0}
"""Dense bf16 TFLOPs by device name (datasheet), most specific first."""
PEAK_BANDWIDTH_TBS = {"H100 PCIE": 2.0, "H100 NVL": 3.9, "H100": 3.35, "H200": 4.8}
"""HBM bandwidth in TB/s by device name (datasheet), most specific first."""
OFFICE_TEST_CONTEXTS = 4866
"""Contexts of the Office test split, for the projected full-pass times."""
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""Qwen2's pre-tokenizer split (single digits, words with their leading space)."""
GIB = 2**30
PARTS = ("sft", "rl", "validate", "beam", "export", "diagnostics")
"""The benchmark's parts (``diagnostics``: the validations with diagnostics on)."""

#: Settings per profile: ``tiny`` (the test, seconds), ``cpu`` (small shapes), ``gpu``.
PROFILES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        sft_steps=2, rl_steps=1, warmup_steps=0, sft_batch_size=4, rl_batch_size=4,
        eval_batch_size=4, capped_contexts=4, full_contexts=4, beam_shapes=["2x5"],
        objectives=list(OBJECTIVES), modes=["lora-bf16", "lora-4bit"], budget_s=600.0,
        part_limit_s=300.0, tokenizer_vocab=400, recommend_repeats=1,
        synthetic={"num_items": 128, "num_users": 48, "max_sequence_length": 8},
    ),
    "cpu": dict(
        sft_steps=6, rl_steps=3, warmup_steps=1, sft_batch_size=8, rl_batch_size=16,
        eval_batch_size=16, capped_contexts=32, full_contexts=16, beam_shapes=["8x20"],
        objectives=list(OBJECTIVES), modes=["lora-bf16", "lora-4bit"], budget_s=1800.0,
        part_limit_s=600.0, tokenizer_vocab=8192, recommend_repeats=3,
        synthetic={"num_items": 1024, "num_users": 600},
    ),
    # one H200 at the 1.5B shape: all of it in about 5 minutes (issue 20's limit: 6)
    "gpu": dict(
        sft_steps=12, rl_steps=3, warmup_steps=1, sft_batch_size=8, rl_batch_size=64,
        eval_batch_size=16, capped_contexts=64, full_contexts=32, beam_shapes=["8x50", "64x20"],
        objectives=list(OBJECTIVES), modes=["lora-bf16", "lora-4bit"], budget_s=300.0,
        part_limit_s=60.0, tokenizer_vocab=8192, recommend_repeats=3,
        synthetic={"num_items": 3459, "num_users": 4000},
    ),
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    shapes = sorted(path.stem for path in SHAPES_DIR.glob("*.json"))
    parser.add_argument(
        "--shape", default="small", help=f"a shape of benchmarks/shapes ({', '.join(shapes)})"
    )
    parser.add_argument("--model-path", help="a real local Hugging Face checkpoint instead")
    parser.add_argument("--data", choices=["auto", "office", "synthetic"], default="auto")
    parser.add_argument(
        "--data-dir",
        help="the amazon18-minionerec folder (default: $WPAUC_DATA/amazon18-minionerec, else "
        "data/amazon18-minionerec in the repository)",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        help="default counts and settings: gpu on CUDA, tiny for --shape tiny (the test's:"
        " seconds), else cpu",
    )
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), help="policy set-ups")
    parser.add_argument("--objectives", nargs="+", choices=sorted(OBJECTIVES))
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="the parts to run (default all; validate and export use the SFT checkpoint when"
        " sft ran, else the base weights / nothing)",
    )
    parser.add_argument("--sft-steps", type=int)
    parser.add_argument("--rl-steps", type=int)
    parser.add_argument("--warmup-steps", type=int, help="steps left out of the median")
    parser.add_argument("--sft-batch-size", type=int)
    parser.add_argument("--rl-batch-size", type=int)
    parser.add_argument("--eval-batch-size", type=int)
    parser.add_argument("--capped-contexts", type=int, help="contexts validated at rank cap 20")
    parser.add_argument("--full-contexts", type=int, help="contexts validated with full counts")
    parser.add_argument(
        "--beam-shapes", nargs="+", help="PROMPTSxBEAMS of the beam comparisons, e.g. 64x20"
    )
    parser.add_argument("--tokenizer-vocab", type=int, help="BPE vocabulary of a random shape")
    parser.add_argument("--recommend-repeats", type=int)
    parser.add_argument("--peak-tflops", type=float, help="peak bf16 TFLOPs (else detected)")
    parser.add_argument(
        "--peak-bandwidth-tbs", type=float, help="memory bandwidth in TB/s (else detected)"
    )
    parser.add_argument("--budget-s", type=float, help="skip the parts that no longer fit")
    parser.add_argument("--part-limit-s", type=float, help="stop a part after this long")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=BENCH_DIR / "results", help="folder of the JSON + markdown"
    )
    parser.add_argument("--name", help="file name stem (default pretrained_<shape>)")
    parser.add_argument("--workdir", type=Path, help="checkpoints and runs (default: a temp dir)")
    parser.add_argument("--keep-workdir", action="store_true")
    args = parser.parse_args(argv)
    args.command = " ".join(
        ["python benchmarks/bench_pretrained.py", *(sys.argv[1:] if argv is None else argv)]
    )
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.profile is None:
        args.profile = "gpu" if args.device == "cuda" else "tiny" if args.shape == "tiny" else "cpu"
    for key, value in PROFILES[args.profile].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.shape_name = Path(args.model_path).name if args.model_path else args.shape
    args.name = args.name or f"pretrained_{args.shape_name}"
    return args


def log(message: str) -> None:
    """A progress line with the seconds since the start (flushed: a killed run keeps it)."""
    print(f"[bench {time.monotonic() - STARTED:7.1f}s] {message}", flush=True)


STARTED = time.monotonic()


# ------------------------------------------------------------------ limits
class PartTimeout(Exception):
    """A part ran past its limit."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise `PartTimeout` in the main thread after `seconds` (SIGALRM, Unix), restoring any
    timer set before (pytest-timeout's), which keeps its own deadline."""
    if not hasattr(signal, "SIGALRM") or math.isinf(seconds):
        yield
        return
    started = time.monotonic()
    outer_remaining, _ = signal.getitimer(signal.ITIMER_REAL)
    outer_handler = signal.getsignal(signal.SIGALRM)

    def handler(signum, frame):
        if outer_remaining and time.monotonic() - started >= outer_remaining - 1e-3:
            if callable(outer_handler):
                outer_handler(signum, frame)
            return
        raise PartTimeout(f"stopped after {seconds:.0f} s")

    signal.signal(signal.SIGALRM, handler)
    first = min(seconds, outer_remaining) if outer_remaining else seconds
    signal.setitimer(signal.ITIMER_REAL, max(first, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, outer_handler)
        if outer_remaining:
            left = outer_remaining - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3))


# ------------------------------------------------------------------ the model's figures
def matmul_parameters(config) -> int:
    """Weights multiplied per token: every decoder layer's projections + the LM head."""
    hidden, heads = config.hidden_size, config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    mlp = 3 * hidden * config.intermediate_size
    return config.num_hidden_layers * (attention + mlp) + config.vocab_size * hidden


def device_peaks(args: argparse.Namespace) -> tuple[float | None, float | None, str]:
    """(peak FLOP/s, memory bytes/s, where they come from) of the device."""
    flops = None if args.peak_tflops is None else args.peak_tflops * 1e12
    bandwidth = None if args.peak_bandwidth_tbs is None else args.peak_bandwidth_tbs * 1e12
    source = "given"
    if args.device == "cuda":
        name = torch.cuda.get_device_name().upper()
        for key, value in PEAK_BF16_TFLOPS.items():
            if key in name and flops is None:
                flops, source = value * 1e12, f"datasheet ({key})"
                break
        for key, value in PEAK_BANDWIDTH_TBS.items():
            if key in name and bandwidth is None:
                bandwidth = value * 1e12
                break
    if flops is None and bandwidth is None:
        source = "n/a (give --peak-tflops / --peak-bandwidth-tbs)"
    return flops, bandwidth, source


class PositionCounter:
    """Token positions run by the transformer body, with and without gradients (a forward
    pre-hook on every decoder stack of the module: policy, reference copies)."""

    def __init__(self) -> None:
        self.grad = self.no_grad = self.forwards = 0
        self._handles: list = []
        self._hooked: set[int] = set()

    def reset(self) -> None:
        self.grad = self.no_grad = self.forwards = 0

    def attach(self, module: torch.nn.Module) -> None:
        roots = [module]
        reference = getattr(module, "reference", None)
        copy = getattr(reference, "_frozen_copy", None)
        if isinstance(copy, torch.nn.Module):
            roots.append(copy)
        for root in roots:
            for sub in root.modules():
                if id(sub) in self._hooked:
                    continue
                if hasattr(sub, "layers") and hasattr(sub, "embed_tokens"):
                    self._hooked.add(id(sub))
                    self._handles.append(
                        sub.register_forward_pre_hook(self._hook, with_kwargs=True)
                    )

    def _hook(self, module, args, kwargs) -> None:
        tensor = kwargs.get("input_ids")
        if tensor is None and args:
            tensor = args[0]
        if tensor is None:
            embeds = kwargs.get("inputs_embeds")
            positions = 0 if embeds is None else embeds.shape[0] * embeds.shape[1]
        else:
            positions = tensor.numel()
        self.forwards += 1
        if torch.is_grad_enabled():
            self.grad += positions
        else:
            self.no_grad += positions

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._hooked = [], set()


class StepTimer(Callback):
    """Times every training step and validation batch (synchronised on CUDA) and records
    its tokens, contexts and the positions the model ran."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.counter = PositionCounter()
        self.steps: list[dict[str, float]] = []
        self.batches: list[dict[str, float]] = []
        self._started = 0.0
        self.in_flight: tuple[float, int] | None = None
        """(start, contexts) of the validation batch running now (for a stopped part)."""

    def _start(self, pl_module) -> None:
        if not self.counter._handles:
            self.counter.attach(pl_module)
        if self.cuda:
            torch.cuda.synchronize()
        self.counter.reset()
        self._started = time.perf_counter()

    def _seconds(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - self._started

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        seconds = self._seconds()
        tokens = int(batch["attention_mask"].sum())
        if pl_module.in_rl_stage and pl_module.last_rollout is not None:
            tokens += int(pl_module.last_rollout.token_mask.sum())
        else:
            tokens += int(batch["target_code_mask"].sum())
        self.steps.append(self._record(seconds, len(batch["target"]), tokens))
        log(f"  step {len(self.steps)}: {seconds:.3f} s, {tokens} tokens")

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._start(pl_module)
        self.in_flight = (self._started, len(batch["target"]))

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        seconds = self._seconds()
        self.in_flight = None
        contexts = len(batch["target"])
        self.batches.append(self._record(seconds, contexts, int(batch["attention_mask"].sum())))
        log(f"  batch {len(self.batches)}: {contexts} contexts in {seconds:.2f} s")

    def _record(self, seconds: float, contexts: int, tokens: int) -> dict[str, float]:
        counter = self.counter
        return {
            "seconds": seconds,
            "contexts": contexts,
            "tokens": tokens,
            "grad_positions": counter.grad,
            "no_grad_positions": counter.no_grad,
            "forwards": counter.forwards,
        }


# ------------------------------------------------------------------ set-up
def data_root(args: argparse.Namespace) -> Path:
    if args.data_dir:
        return Path(args.data_dir)
    candidates = [Path(os.environ["WPAUC_DATA"])] if os.environ.get("WPAUC_DATA") else []
    candidates += [REPO_ROOT / "data"]
    for root in candidates:
        if (root / "amazon18-minionerec" / "index" / "Office_Products.index.json").is_file():
            return root / "amazon18-minionerec"
    return candidates[0] / "amazon18-minionerec"


def rank_cap_override(rank_cap: int | None) -> str:
    """The exact protocol with `rank_cap` (None: full counts) as a CLI override of the
    ``model.evaluation`` protocol object."""
    spec = {"class_path": "wpauc.evaluation.Exact", "init_args": {"rank_cap": rank_cap}}
    return f"--model.evaluation={json.dumps(spec)}"


def data_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--data.source`` overrides of the chosen data (Office or the synthetic world)."""
    if args.data_kind == "office":
        return [f"--data.source.init_args.data_dir={args.data_path}"]
    spec = {"class_path": "wpauc.data.SyntheticSource", "init_args": args.synthetic}
    return [f"--data.source={json.dumps(spec)}"]


def catalog_titles(args: argparse.Namespace) -> list[str]:
    from wpauc.data import MiniOneRecSource, SyntheticSource

    if args.data_kind == "office":
        source = MiniOneRecSource(data_dir=str(args.data_path), category="Office_Products")
    else:
        source = SyntheticSource(**args.synthetic)
    return list(source.load().catalog.titles)


def train_tokenizer(titles: list[str], vocab_size: int):
    """A byte-level BPE with Qwen2's pre-tokenizer trained on the titles (+ the prompt's
    instruction), eos = pad = ``<|endoftext|>``, no bos, as Qwen2.5's tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from wpauc.data.templates import DEFAULT_INSTRUCTION

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [*titles, f"{DEFAULT_INSTRUCTION}\nHistory:\n\nNext item:"]
    backend.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def load_shape(name: str) -> dict[str, Any]:
    path = Path(name) if name.endswith(".json") else SHAPES_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SHAPES_DIR.glob("*.json")))
        raise SystemExit(f"bench_pretrained: no shape {name!r} (known: {known})")
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


def save_random_checkpoint(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    """A random Qwen2 of the shape + the trained tokenizer in `directory` (bf16)."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    shape = load_shape(args.shape)
    tokenizer = train_tokenizer(catalog_titles(args), args.tokenizer_vocab)
    config = Qwen2Config(
        **{k: v for k, v in shape.items() if k not in ("architectures", "model_type")},
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(args.seed)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    del model
    return {"tokenizer_vocab": len(tokenizer), "config": shape}


# ------------------------------------------------------------------ the benchmark
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cuda = args.device == "cuda"
        self.rows: list[dict[str, Any]] = []
        self.info: dict[str, Any] = {}
        self.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_pretrained_"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.datamodule = None
        self.sft_checkpoints: dict[str, Path] = {}
        self.peak_flops, self.peak_bandwidth, self.peak_source = device_peaks(args)
        self.params = 0

    # ---- the CLI
    def cli_args(self, mode: str, part: str, *extra: str) -> list[str]:
        """The config arguments of one part: the shipped config + overrides."""
        accelerator = "gpu" if self.cuda else "cpu"
        return [
            f"--config={CONFIG}",
            f"--model.policy.init_args.path={self.model_path}",
            f"--trainer.default_root_dir={self.workdir / 'runs' / mode / part}",
            f"--trainer.accelerator={accelerator}",
            "--trainer.devices=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--seed_everything={self.args.seed}",
            *data_overrides(self.args),
            *MODES[mode],
            *extra,
        ]

    def build_cli(self, args: list[str], timer: StepTimer | None = None, keep_checkpoints=False):
        """The LightningCLI of `wpauc` (parsed and instantiated, not run) on the shared data
        module (set up once: the same data and tokenizer in every part)."""
        from wpauc.cli import run_cli

        cli = run_cli(args, run=False)
        if self.datamodule is None:
            self.datamodule = cli.datamodule
            self.datamodule.setup("fit")
        self.datamodule.batch_size = cli.datamodule.batch_size
        self.datamodule.eval_batch_size = cli.datamodule.eval_batch_size
        trainer = cli.trainer
        if not keep_checkpoints:
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, ModelCheckpoint)]
        if timer is not None:
            trainer.callbacks.append(timer)
        return cli

    # ---- bookkeeping
    def remaining(self) -> float:
        return self.args.budget_s - (time.monotonic() - STARTED)

    def memory_start(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        elif Path("/proc/self/clear_refs").exists():
            with contextlib.suppress(OSError):
                reset_peak_rss()

    def memory_peak_gib(self) -> float | None:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / GIB
        try:
            return process_memory_mib("VmHWM") / 1024
        except (OSError, RuntimeError):
            return None

    def part(
        self,
        part: str,
        setting: str,
        function: Callable[[dict], dict],
        min_s: float = 5,
        limit_s: float | None = None,
    ) -> dict[str, Any]:
        """Run one part under its limit (`limit_s`, default ``--part-limit-s``, and never past
        the budget); record its row (ok, timed out, failed, skipped)."""
        row: dict[str, Any] = {"part": part, "setting": setting}
        limit = min(self.args.part_limit_s if limit_s is None else limit_s, self.remaining())
        if limit < min_s:
            row.update(status="skipped", notes=f"budget: {self.remaining():.0f} s left")
            log(f"skip {part} [{setting}]: {row['notes']}")
            return self._record(row)
        log(f"start {part} [{setting}] (limit {limit:.0f} s)")
        state: dict[str, Any] = {}
        started = time.monotonic()
        self.memory_start()
        try:
            with time_limit(limit):
                row.update(function(state))
            row.setdefault("status", "ok")
        except PartTimeout as error:
            row.update(state.get("summary", lambda: {})())
            row["status"] = f"timed out ({error})"
        except (Exception, SystemExit) as error:  # a failed part must not end the benchmark
            traceback.print_exc()
            message = str(error).strip().splitlines()
            row["status"] = f"failed: {type(error).__name__}: {message[0] if message else ''}"[:300]
        row["wall_s"] = time.monotonic() - started
        row["peak_memory_gib"] = self.memory_peak_gib()
        state.clear()
        if self.cuda:  # free the part's GPU memory (a full collection costs ~1 s: GPU only)
            gc.collect()
            torch.cuda.empty_cache()
        return self._record(row)

    def _record(self, row: dict[str, Any]) -> dict[str, Any]:
        self.rows.append(row)
        log(f"done  {row['part']} [{row['setting']}]: {row.get('status')}, {row_line(row)}")
        self.write()
        return row

    def mfu(self, record_seconds: float, grad: float, no_grad: float) -> float | None:
        if self.peak_flops is None or record_seconds <= 0:
            return None
        return (6 * grad + 2 * no_grad) * self.params / record_seconds / self.peak_flops

    # ---- parts
    def setup(self) -> None:
        args = self.args
        args.data_path = data_root(args)
        office = (args.data_path / "index" / "Office_Products.index.json").is_file()
        if args.data == "office" and not office:
            raise SystemExit(f"bench_pretrained: no Office data under {args.data_path}")
        args.data_kind = "office" if args.data != "synthetic" and office else "synthetic"
        self.info["data"] = (
            f"Office_Products ({args.data_path})" if args.data_kind == "office"
            else f"synthetic world {args.synthetic}"
        )  # fmt: skip
        log(f"data: {self.info['data']}; device {args.device}; profile {args.profile}")

        def make_checkpoint(state: dict) -> dict:
            if args.model_path:
                self.model_path = Path(args.model_path)
                return {"notes": f"real checkpoint {self.model_path}"}
            self.model_path = self.workdir / "checkpoint"
            made = save_random_checkpoint(args, self.model_path)
            self.info["tokenizer_vocab"] = made["tokenizer_vocab"]
            return {"notes": f"random {args.shape} + BPE tokenizer of {made['tokenizer_vocab']}"}

        row = self.part("checkpoint", args.shape_name, make_checkpoint, limit_s=math.inf)
        if row["status"] != "ok":
            raise SystemExit(f"bench_pretrained: no checkpoint: {row['status']}")
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.model_path, local_files_only=True)
        self.params = matmul_parameters(config)
        self.info["model"] = {
            "hidden_size": config.hidden_size,
            "num_layers": config.num_hidden_layers,
            "num_heads": config.num_attention_heads,
            "num_kv_heads": config.num_key_value_heads,
            "intermediate_size": config.intermediate_size,
            "vocab_size": config.vocab_size,
            "tied": bool(config.tie_word_embeddings),
            "matmul_parameters": self.params,
        }
        self.config = config

        def set_up_data(state: dict) -> dict:
            self.build_cli(self.cli_args("lora-bf16", "data"))
            dm = self.datamodule
            lengths = [len(example.input_ids) for example in dm.dataset("test")]
            self.info["catalog_items"] = len(dm.catalog)
            self.info["prompt_tokens"] = {
                "mean": statistics.mean(lengths),
                "max": max(lengths),
                "tokenizer": len(dm.tokenizer),
            }
            return {
                "count": len(dm.catalog),
                "notes": f"{len(dm.catalog)} items, test prompts {statistics.mean(lengths):.0f}"
                f" tokens on average (max {max(lengths)}); tokenizer {len(dm.tokenizer)}",
            }

        row = self.part("data", args.data_kind, set_up_data, limit_s=math.inf)
        if row["status"] != "ok":
            raise SystemExit(f"bench_pretrained: no data: {row['status']}")

    def steps_summary(self, timer: StepTimer, unit: str) -> dict[str, Any]:
        steps = timer.steps[self.args.warmup_steps :] or timer.steps
        if not steps:
            return {"count": 0}
        seconds = statistics.median(step["seconds"] for step in steps)
        middle = min(steps, key=lambda step: abs(step["seconds"] - seconds))
        tokens = statistics.median(step["tokens"] for step in steps)
        return {
            "count": len(timer.steps),
            "seconds": seconds,
            "unit": unit,
            "tokens_per_s": tokens / seconds,
            "mfu": self.mfu(
                middle["seconds"], middle["grad_positions"], middle["no_grad_positions"]
            ),
            "steps_s": [round(step["seconds"], 4) for step in timer.steps],
            "positions": {k: middle[k] for k in ("grad_positions", "no_grad_positions")},
        }

    def sft(self, mode: str) -> None:
        args = self.args

        def run(state: dict) -> dict:
            timer = StepTimer(self.cuda)
            state["summary"] = lambda: self.steps_summary(timer, "s/step")
            cli = self.build_cli(
                self.cli_args(
                    mode,
                    "sft",
                    "--model.objective=null",
                    "--trainer.max_epochs=1",
                    f"--trainer.limit_train_batches={args.sft_steps}",
                    "--trainer.limit_val_batches=0",
                    f"--data.batch_size={args.sft_batch_size}",
                ),
                timer,
                keep_checkpoints=True,
            )
            state["cli"] = cli
            cli.trainer.fit(cli.model, datamodule=self.datamodule)
            timer.counter.detach()
            checkpoint = self.workdir / "runs" / mode / "sft" / "checkpoints" / "last.ckpt"
            if checkpoint.is_file():
                self.sft_checkpoints[mode] = checkpoint
            return {**self.steps_summary(timer, "s/step"), "notes": f"batch {args.sft_batch_size}"}

        self.part("sft", mode, run)

    def rl(self, mode: str, objective: str) -> None:
        args = self.args

        def run(state: dict) -> dict:
            timer = StepTimer(self.cuda)
            state["summary"] = lambda: self.steps_summary(timer, "s/step")
            cli = self.build_cli(
                self.cli_args(
                    mode,
                    f"rl_{objective}",
                    f"--model.objective={OBJECTIVES[objective]}",
                    "--model.sft_epochs=0",
                    "--trainer.max_epochs=1",
                    f"--trainer.limit_train_batches={args.rl_steps}",
                    "--trainer.limit_val_batches=0",
                    f"--data.batch_size={args.rl_batch_size}",
                ),
                timer,
            )
            state["cli"] = cli
            cli.trainer.fit(cli.model, datamodule=self.datamodule)
            timer.counter.detach()
            rollout = cli.model.last_rollout
            size = "" if rollout is None else f", group {rollout.group.items.shape[1]}"
            return {
                **self.steps_summary(timer, "s/step"),
                "notes": f"batch {args.rl_batch_size}{size}",
            }

        self.part(f"rl {objective}", mode, run)

    def validate(self, mode: str, capped: bool, diagnostics: bool) -> None:
        args = self.args
        contexts = args.capped_contexts if capped else args.full_contexts
        batches = math.ceil(contexts / args.eval_batch_size)
        counts = "cap 20" if capped else "full counts"
        setting = f"{mode}, {counts}, diag {'on' if diagnostics else 'off'}"

        def summary(timer: StepTimer) -> dict[str, Any]:
            records = timer.batches[1:] if len(timer.batches) > 1 else timer.batches
            done = sum(record["contexts"] for record in records)
            if not done and timer.in_flight is not None:
                # stopped inside its first batch: a lower bound
                started, in_flight = timer.in_flight
                per_context = (time.perf_counter() - started) / in_flight
                return {
                    "count": 0,
                    "seconds": per_context,
                    "unit": "s/context",
                    "lower_bound": True,
                    "projected_test_split_min": per_context * OFFICE_TEST_CONTEXTS / 60,
                }
            if not done:
                return {"count": 0}
            seconds = sum(record["seconds"] for record in records)
            positions = sum(record["no_grad_positions"] for record in records)
            per_context = seconds / done
            return {
                "count": sum(record["contexts"] for record in timer.batches),
                "seconds": per_context,
                "unit": "s/context",
                "mfu": self.mfu(seconds, 0, positions),
                "projected_test_split_min": per_context * OFFICE_TEST_CONTEXTS / 60,
                "positions_per_context": positions / done,
                "batches_s": [round(record["seconds"], 4) for record in timer.batches],
            }

        def run(state: dict) -> dict:
            timer = StepTimer(self.cuda)
            state["summary"] = lambda: summary(timer)
            cli = self.build_cli(
                self.cli_args(
                    mode,
                    "validate",
                    "--model.objective=null",
                    rank_cap_override(20 if capped else None),
                    f"--model.diagnostic_samples={contexts if diagnostics else 0}",
                    f"--data.eval_batch_size={args.eval_batch_size}",
                    f"--trainer.limit_val_batches={batches}",
                    "--trainer.logger=false",
                ),
                timer,
            )
            state["cli"] = cli
            checkpoint = self.sft_checkpoints.get(mode)
            cli.trainer.validate(
                cli.model,
                datamodule=self.datamodule,
                ckpt_path=None if checkpoint is None else str(checkpoint),
                verbose=False,
            )
            timer.counter.detach()
            result = summary(timer)
            first = "" if len(timer.batches) < 2 else " (first batch left out)"
            source = "SFT checkpoint" if checkpoint else "base weights"
            result["notes"] = (
                f"{source}, batch {args.eval_batch_size}{first}; "
                f"{result.get('positions_per_context', 0):.0f} positions/context; "
                f"test split {result.get('projected_test_split_min', 0):.1f} min projected"
            )
            return result

        self.part("validate", setting, run)

    def beam(self, mode: str, prompts: int, beams: int) -> None:
        from wpauc.decoding import ItemTrie, constrained_beam_search

        def run(state: dict) -> dict:
            cli = self.build_cli(self.cli_args(mode, "beam", "--model.objective=null"))
            state["cli"] = cli
            module = cli.model
            device = torch.device("cuda" if self.cuda else "cpu")
            with device:
                module.build(self.datamodule.catalog_context())
            policy = module.policy.to(device).eval()
            trie = module.trie.to(device)
            codes = self.datamodule.item_codes
            lengths = Counter(len(code) for code in codes)
            catalog = f"{len(codes)} items"
            if len(lengths) > 1:
                # HF's search (bench_decoding.hf_beam_search) makes every code as long as the
                # longest: both searches run on the catalog's codes of the commonest length
                length = lengths.most_common(1)[0][0]
                kept = [code for code in codes if len(code) == length]
                trie = ItemTrie.from_codes(kept).to(device)
                catalog = f"the {len(kept)} of {len(codes)} items with {length}-token codes"
            batch = self.datamodule.batch_for(self.datamodule.data.split("test")[:prompts])
            input_ids = batch["input_ids"].to(device)
            attention_mask = batch["attention_mask"].to(device)
            autocast = cli.trainer.precision_plugin.forward_context

            def ours():
                with torch.no_grad(), autocast():
                    return constrained_beam_search(policy, input_ids, attention_mask, trie, beams)

            def hf():
                with torch.no_grad(), autocast():
                    return hf_beam_search(policy, input_ids, attention_mask, trie, beams)

            device_name = device.type
            ours_s, (items, scores) = timed(ours, 3, device_name)
            log(f"  constrained_beam_search: {ours_s * 1e3:.1f} ms")
            # ours warmed the model's kernels up; HF's own warm-up run only where it is cheap
            hf_warm_up = prompts * beams <= 512
            hf_s, (hf_items, hf_scores) = timed(hf, 1, device_name, warm_up=hf_warm_up)
            log(f"  HF generate: {hf_s * 1e3:.1f} ms")
            same = (items == hf_items).all(dim=1).float().mean().item()
            code_length = trie.max_code_length
            tokens = int(attention_mask.sum()) + prompts * beams * (code_length - 1)
            bound_s, bound = None, "n/a"
            flops_s = (
                None if self.peak_flops is None else 2 * self.params * tokens / self.peak_flops
            )
            bytes_s = (
                None
                if self.peak_bandwidth is None
                else code_length * 2 * self.params / self.peak_bandwidth
            )
            candidates = [
                (s, name) for s, name in ((flops_s, "FLOPs"), (bytes_s, "weights read")) if s
            ]
            if candidates:
                bound_s, bound = max(candidates)
            return {
                "count": prompts,
                "seconds": ours_s,
                "unit": "s/search",
                "hf_generate_s": hf_s,
                "vs_hf": hf_s / ours_s,
                "bound_s": bound_s,
                "bound": bound,
                "vs_bound": None if bound_s is None else ours_s / bound_s,
                "notes": (
                    f"{beams} beams over {catalog}; HF {hf_s * 1e3:.1f} ms; bound "
                    + ("n/a" if bound_s is None else f"{bound_s * 1e3:.2f} ms ({bound})")
                    + f"; same items in order on {same:.0%} of prompts, max abs score difference "
                    f"{(scores.float() - hf_scores.float()).abs().max().item():.2g}"
                ),
            }

        self.part("beam", f"{mode}, {prompts} prompts x {beams} beams", run)

    def export(self, mode: str) -> None:
        from wpauc.cli import main as wpauc_main
        from wpauc.export import load_recommender

        def run(state: dict) -> dict:
            checkpoint = self.sft_checkpoints.get(mode)
            if checkpoint is None:
                return {"status": "skipped", "notes": "no SFT checkpoint"}
            output = self.workdir / "exports" / mode
            started = time.perf_counter()
            wpauc_main(
                [
                    "export",
                    *self.cli_args(mode, "sft", "--model.objective=null"),
                    f"--ckpt_path={checkpoint}",
                    f"--output_dir={output}",
                ]
            )
            export_s = time.perf_counter() - started
            log(f"  exported in {export_s:.1f} s")
            started = time.perf_counter()
            recommender = load_recommender(output, device="cuda" if self.cuda else "cpu")
            load_s = time.perf_counter() - started
            history = list(recommender.item_ids[:5])
            repeats = self.args.recommend_repeats
            recommend_s, top = timed(
                lambda: recommender.recommend(history, k=10),
                repeats,
                "cuda" if self.cuda else "cpu",
            )
            if len(set(top)) != 10:
                raise RuntimeError(f"recommend gave {top}")
            recommender = None
            gc.collect()
            for path in sorted(output.glob("*.safetensors")):
                path.unlink()
            return {
                "count": 1,
                "seconds": recommend_s,
                "unit": "s/recommend",
                "export_s": export_s,
                "load_s": load_s,
                "notes": f"export {export_s:.1f} s, load_recommender {load_s:.1f} s, "
                f"recommend(k=10) {recommend_s * 1e3:.1f} ms",
            }

        self.part("export + recommend", mode, run)

    def skipped(self, part: str, setting: str, why: str) -> None:
        self._record({"part": part, "setting": setting, "status": "skipped", "notes": why})

    def run(self) -> None:
        args = self.args
        self.setup()
        quantizable = self.cuda and importlib.util.find_spec("bitsandbytes") is not None
        beam_shapes = [tuple(int(x) for x in shape.split("x")) for shape in args.beam_shapes]
        objectives = [name for name in OBJECTIVES if name in args.objectives]
        first, *others = objectives or [None]
        # the goals first (SFT, the TAWin step, capped and full validation, the beam
        # search), then the other modes (4-bit), the other objectives, the exports; the
        # validations with diagnostics last
        parts = set(args.parts)
        runnable = [m for m in args.modes if m != "lora-4bit" or quantizable]

        def skip_the_others() -> None:
            why = "needs bitsandbytes and a CUDA GPU" + ("" if self.cuda else " (no GPU here)")
            names = {"sft": "sft", "rl": f"rl {first}", "validate": "validate"}
            names["export"] = "export + recommend"
            for mode in (m for m in args.modes if m not in runnable):
                for part in (name for key, name in names.items() if key in parts):
                    self.skipped(part, mode, why)

        if not runnable:
            return skip_the_others()
        main_mode = runnable[0]
        for mode in runnable:
            if "sft" in parts:
                self.sft(mode)
            if first and "rl" in parts:
                self.rl(mode, first)
            if "validate" in parts:
                self.validate(mode, capped=True, diagnostics=False)
            if mode == main_mode and "validate" in parts:
                self.validate(mode, capped=False, diagnostics=False)
            for prompts, beams in beam_shapes if mode == main_mode and "beam" in parts else ():
                self.beam(mode, prompts, beams)
        skip_the_others()
        for objective in others if "rl" in parts else ():
            self.rl(main_mode, objective)
        for mode in runnable if "export" in parts else ():
            self.export(mode)
        if "diagnostics" in parts:
            self.validate(main_mode, capped=True, diagnostics=True)
            self.validate(main_mode, capped=False, diagnostics=True)

    # ---- output
    def results(self) -> dict[str, Any]:
        env = environment(self.args)
        for package in ("lightning", "peft", "bitsandbytes"):
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                env[package] = importlib.metadata.version(package)
        env["date"] = time.strftime("%Y-%m-%d")
        return {
            "command": self.args.command,
            "environment": env,
            "shape": self.args.shape_name,
            "profile": self.args.profile,
            "peak_flops": self.peak_flops,
            "peak_bandwidth": self.peak_bandwidth,
            "peak_source": self.peak_source,
            "setup": self.info,
            "rows": self.rows,
            "elapsed_s": time.monotonic() - STARTED,
        }

    def write(self) -> None:
        results = self.results()
        out = self.args.out
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{self.args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / f"{self.args.name}.md").write_text(markdown(results))


# ------------------------------------------------------------------ the table
COLUMNS = ("part", "setting", "status", "n", "time", "tokens/s", "MFU", "HF / ours",
           "ours / bound", "peak mem", "notes")  # fmt: skip


def table_cells(row: dict[str, Any]) -> list[str]:
    seconds, unit = row.get("seconds"), row.get("unit", "")
    if seconds is None:
        time_cell = ""
    elif seconds < 1:
        time_cell = f"{seconds * 1e3:.1f} ms{unit[1:]}"
    else:
        time_cell = f"{seconds:.2f} {unit}"
    if time_cell and row.get("lower_bound"):
        time_cell = "> " + time_cell

    def number(key: str, form: str) -> str:
        value = row.get(key)
        return "" if value is None else form.format(value)

    memory = row.get("peak_memory_gib")
    return [
        row["part"],
        row["setting"],
        row.get("status", ""),
        "" if row.get("count") is None else str(row["count"]),
        time_cell,
        number("tokens_per_s", "{:,.0f}"),
        ("n/a" if row["mfu"] is None else f"{row['mfu']:.1%}") if "mfu" in row else "",
        number("vs_hf", "{:.1f}x"),
        number("vs_bound", "{:.1f}x"),
        "" if memory is None else f"{memory:.2f} GiB",
        row.get("notes", ""),
    ]


def row_line(row: dict[str, Any]) -> str:
    cells = table_cells(row)
    return "; ".join(
        f"{name} {cell}" for name, cell in zip(COLUMNS[3:], cells[3:], strict=True) if cell
    )


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [
        f"`{results['command']}`",
        "",
        f"{env['device_name']} ({env['device']}, {env['threads']} threads), torch {env['torch']},"
        f" transformers {env['transformers']}, peft {env.get('peft', '-')}, lightning "
        f"{env.get('lightning', '-')}, bitsandbytes {env.get('bitsandbytes', 'not installed')};"
        f" {env['date']}; shape {results['shape']} ({results['setup'].get('model', {})}); data "
        f"{results['setup'].get('data')}; peak {_peak(results)}; {results['elapsed_s']:.0f} s "
        "in all.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in results["rows"]:
        cells = [cell.replace("|", "/") for cell in table_cells(row)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Goals of issue 20 (set for the 1.5B shape on one H200, Office data):", ""]
    lines += [f"- {line}" for line in goals(results)]
    return "\n".join(lines) + "\n"


def _peak(results: dict[str, Any]) -> str:
    flops, bandwidth = results["peak_flops"], results["peak_bandwidth"]
    if flops is None and bandwidth is None:
        return "n/a"
    parts = []
    if flops is not None:
        parts.append(f"{flops / 1e12:.0f} TFLOPs")
    if bandwidth is not None:
        parts.append(f"{bandwidth / 1e12:.2f} TB/s")
    return " and ".join(parts) + f" ({results['peak_source']})"


def _find(rows: list[dict[str, Any]], part: str, setting: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["part"] == part and r["setting"] == setting), None)


def goals(results: dict[str, Any]) -> list[str]:
    """Issue 20's goals (stated for the 1.5B shape on one H200, Office), against this run."""
    rows, mode = results["rows"], "lora-bf16"
    as_set = (
        results["shape"] == "qwen2.5-1.5b"
        and results["environment"]["device"] == "cuda"
        and str(results["setup"].get("data", "")).startswith("Office")
    )
    checks = [
        ("Office test split (4866 contexts) exactly at K <= 20 in <= 5 min",
         _find(rows, "validate", f"{mode}, cap 20, diag off"), "projected_test_split_min", 5.0,
         "{:.1f} min projected"),
        ("the same with full counts (AUC, WPAUC) in <= 15 min",
         _find(rows, "validate", f"{mode}, full counts, diag off"), "projected_test_split_min",
         15.0, "{:.1f} min projected"),
        ("an RL step (TAWin, batch 64, 20 beams) <= 2 s", _find(rows, "rl tawin", mode),
         "seconds", 2.0, "{:.2f} s"),
    ]  # fmt: skip
    lines = []
    for goal, row, key, limit, form in checks:
        value = None if row is None else row.get(key)
        if value is None:
            status = "not measured" + ("" if row is None else f" ({row.get('status')})")
        else:
            bound = "at least " if row.get("lower_bound") else ""
            verdict = "met" if value <= limit and not bound else f"missed ({value / limit:.1f}x)"
            if not as_set:
                verdict = "no verdict: not the goal's set-up"
            status = f"{bound}{form.format(value)}: {verdict}"
            if key == "seconds" and "batch 64" not in row.get("notes", ""):
                status += f" (this run: {row.get('notes')})"
        lines.append(f"{goal}: {status}")
    sft = _find(rows, "sft", mode)
    mfu = None if sft is None else sft.get("mfu")
    verdict = (
        "no verdict: not the goal's set-up"
        if not as_set
        else "met"
        if mfu and mfu >= 0.4
        else "missed"
    )
    lines.append(
        "SFT >= 40% of the bf16 FLOPs ceiling (stretch): "
        + ("not measured" if mfu is None else f"{mfu:.1%}: {verdict}")
    )
    return lines


def print_table(results: dict[str, Any]) -> None:
    rows = [list(COLUMNS)] + [table_cells(row) for row in results["rows"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    print()
    for index, row in enumerate(rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
            + "  "
            + row[-1]
        )
        if index == 0:
            print("  ".join("-" * width for width in widths) + "  -----")
    for line in goals(results):
        print(f"goal: {line}")
    print(flush=True)


def quieten() -> None:
    """Keep the output to the benchmark's lines: no Lightning info lines (GPU available,
    checkpoint restored, ...), no loading bars, no warning about the CLI's `args`."""
    import logging
    import warnings

    from transformers.utils import logging as transformers_logging

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    global STARTED
    STARTED = time.monotonic()
    args = parse_args(argv)
    quieten()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench(args)
    try:
        bench.run()
    finally:
        results = bench.results()
        bench.write()
        print_table(results)
        print(f"written to {args.out / args.name}.json and .md", flush=True)
        if not args.keep_workdir and args.workdir is None:
            import shutil

            shutil.rmtree(bench.workdir, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
