"""Peak memory of policy + reference: a LoRA policy whose reference is the same model with
the adapter disabled (no second copy) against a reference that is a frozen copy.

A random Qwen2 checkpoint (no download) is saved to a temporary directory and loaded
through `PretrainedPolicy`, its tokenizer extended with 3 x 256 SID code tokens. Each
configuration then runs in a fresh subprocess (so one run's memory cannot hide another's)
that builds the policy and the reference and takes one RL-like step: policy and reference
log-probs of a batch, loss = -logp + k3 KL, backward, AdamW step. Reported per
configuration and device:

- weights_mib: bytes of the distinct parameter and buffer storages of policy + reference;
- reference_extra_mib: the part of it that only the reference holds (its copy);
- trainable_mib: bytes of the trainable parameters (their grads and AdamW states follow);
- peak_mib: CPU: process peak RSS during build + step above the RSS before the build
  (Linux: /proc/self/status VmHWM, reset through /proc/self/clear_refs); CUDA:
  torch.cuda.max_memory_allocated over build + step.

    python benchmarks/bench_memory.py                                  # hidden 512, 8 layers
    python benchmarks/bench_memory.py --hidden-size 128 --num-layers 2 # a quick check

Prints a table and writes benchmarks/results/memory.json.
"""

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "memory.json"
MIB = 2**20
CONFIGURATIONS = {
    "lora_adapter_disabled": dict(use_lora=True, frozen_copy=False),
    "lora_frozen_copy": dict(use_lora=True, frozen_copy=True),
    "full_finetune_frozen_copy": dict(use_lora=False, frozen_copy=True),
}
"""Name -> (train with LoRA?, reference as a frozen copy?)."""
CODE_LEVELS, CODE_VALUES, NUM_ITEMS = 3, 256, 3500


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden-size", type=int, default=512, help="model width")
    parser.add_argument("--num-layers", type=int, default=8, help="transformer blocks")
    parser.add_argument("--num-heads", type=int, default=8, help="attention heads")
    parser.add_argument("--num-kv-heads", type=int, default=2, help="key/value heads")
    parser.add_argument("--intermediate-size", type=int, default=2048, help="MLP width")
    parser.add_argument("--num-words", type=int, default=8000, help="checkpoint vocabulary words")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per step")
    parser.add_argument("--seq-len", type=int, default=64, help="tokens per sequence")
    parser.add_argument(
        "--devices",
        nargs="+",
        default=None,
        help="devices to measure (default: cpu, plus cuda when available)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="JSON results file")
    # Internal: one configuration in this process, its metrics printed as a JSON line.
    parser.add_argument("--worker", choices=sorted(CONFIGURATIONS), help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def storage_bytes(modules: list[torch.nn.Module]) -> dict[int, int]:
    """Bytes of each distinct parameter/buffer storage of `modules`, keyed by data pointer."""
    storages = {}
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return storages


def process_memory_mib(field: str) -> float:
    """A memory field of this process from /proc/self/status (VmRSS: now, VmHWM: peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field} line")


def reset_peak_rss() -> float:
    """Restart the peak-RSS count from the current RSS (so the imports' transient peak does
    not hide the model's) and return the current RSS in MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return process_memory_mib("VmRSS")


def run_worker(args: argparse.Namespace) -> dict[str, float]:
    """Build one configuration, take one step, and return its memory figures."""
    from transformers import AutoTokenizer

    from wpauc.models import LoraSettings, PretrainedPolicy, ReferenceModel

    configuration = CONFIGURATIONS[args.worker]
    device = torch.device(args.device)
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint, local_files_only=True)
    code_tokens = [
        [f"<{chr(97 + level)}_{value}>" for value in range(CODE_VALUES)]
        for level in range(CODE_LEVELS)
    ]
    tokenizer.add_tokens([token for level in code_tokens for token in level])
    generator = torch.Generator().manual_seed(0)
    item_numbers = torch.randperm(CODE_VALUES**CODE_LEVELS, generator=generator)[
        :NUM_ITEMS
    ].tolist()
    item_codes = [
        tokenizer.convert_tokens_to_ids(
            [
                code_tokens[level][number // CODE_VALUES ** (CODE_LEVELS - 1 - level) % CODE_VALUES]
                for level in range(CODE_LEVELS)
            ]
        )
        for number in item_numbers
    ]
    input_ids = torch.randint(len(tokenizer), (args.batch_size, args.seq_len), generator=generator)
    input_ids = input_ids.to(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before_build = reset_peak_rss() if device.type == "cpu" else 0.0

    lora = LoraSettings(dropout=0.0) if configuration["use_lora"] else None
    policy = (
        PretrainedPolicy(str(args.checkpoint), lora=lora).build(tokenizer, item_codes).to(device)
    )
    reference = ReferenceModel(policy, frozen_copy=configuration["frozen_copy"])
    trainable = [parameter for parameter in policy.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)

    policy.train()
    targets = input_ids[:, 1:, None]
    logprobs = policy(input_ids=input_ids).logits[:, :-1].log_softmax(-1).gather(-1, targets)
    with reference.activated() as reference_model:
        reference_logits = reference_model(input_ids=input_ids).logits[:, :-1]
        reference_logprobs = reference_logits.log_softmax(-1).gather(-1, targets)
    log_ratio = reference_logprobs - logprobs
    loss = (log_ratio.exp() - log_ratio - 1).mean() - logprobs.mean()
    loss.backward()
    optimizer.step()

    policy_storages = storage_bytes([policy])
    with reference.activated() as reference_model:
        all_storages = storage_bytes([policy, reference_model])
    figures = {
        "weights_mib": sum(all_storages.values()) / MIB,
        "reference_extra_mib": sum(
            size for pointer, size in all_storages.items() if pointer not in policy_storages
        )
        / MIB,
        "trainable_mib": sum(p.numel() * p.element_size() for p in trainable) / MIB,
    }
    if device.type == "cuda":
        figures["peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
    else:
        figures["peak_mib"] = process_memory_mib("VmHWM") - rss_before_build
    return figures


def main() -> None:
    args = parse_args()
    if args.worker is not None:
        print(json.dumps(run_worker(args)))
        return

    from _checkpoint import save_random_checkpoint

    from wpauc.models import TinyQwen2Policy

    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    architecture = TinyQwen2Policy(
        num_layers=args.num_layers,
        hidden_size=args.hidden_size,
        num_heads=args.num_heads,
        num_kv_heads=args.num_kv_heads,
        intermediate_size=args.intermediate_size,
        tie_word_embeddings=False,
        seed=0,
    )
    settings = {
        key: value
        for key, value in vars(args).items()
        if key not in ("worker", "device", "checkpoint", "devices", "output")
    }
    results: dict = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "settings": {**settings, "code_tokens": CODE_LEVELS * CODE_VALUES, "num_items": NUM_ITEMS},
        "machine": {"torch": torch.__version__, "cpu": platform.processor() or platform.machine()},
        "devices": {},
    }
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = save_random_checkpoint(Path(directory), args.num_words, architecture)
        for device in devices:
            if device == "cuda":
                results["machine"]["cuda"] = torch.cuda.get_device_name()
            results["devices"][device] = {}
            for name in CONFIGURATIONS:
                command = [
                    sys.executable,
                    __file__,
                    "--worker",
                    name,
                    "--device",
                    device,
                    "--checkpoint",
                    str(checkpoint),
                    "--batch-size",
                    str(args.batch_size),
                    "--seq-len",
                    str(args.seq_len),
                ]
                completed = subprocess.run(command, capture_output=True, text=True, check=False)
                if completed.returncode != 0:
                    raise RuntimeError(f"{name} on {device} failed:\n{completed.stderr[-3000:]}")
                figures = json.loads(completed.stdout.strip().splitlines()[-1])
                results["devices"][device][name] = figures
                print(
                    f"{device:5s} {name:27s} "
                    + "  ".join(f"{key} {value:9.1f}" for key, value in figures.items()),
                    flush=True,
                )

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
