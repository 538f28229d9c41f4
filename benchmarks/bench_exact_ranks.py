"""Cost of exact full-catalog ranks: threshold-pruned ranking against scoring every item and
against a 20-beam search, on Amazon Office_Products as SIDs and as titles.

For each codec the script builds the data module (SIDs: MiniOneRec layout; titles: a D3-layout
copy of the same data written to a temporary folder, titles from ``index/<category>.item.json``),
trains the config's tiny Qwen2 by SFT for ``--train-seconds`` (or loads the state dict saved by
an earlier run in ``--model-dir``, or a Lightning checkpoint given with ``--sft-checkpoint``),
then times, on the first test contexts in batches of ``--batch-size``:

- ``exact_positive_ranks`` (the default exact protocol of validation and test), on
  ``--contexts`` contexts (``0``: the whole test split);
- ``score_items`` + ``positive_ranks`` on the first ``--score-items-contexts`` of them, whose
  counts must equal the pruned ones exactly;
- ``constrained_beam_search`` of ``--beams`` beams on the first ``--beam-contexts``;
- ``exact_positive_ranks(rank_cap=--rank-cap)`` (``model.evaluation.rank_cap``: exact HR@K and
  NDCG@K for K <= the cap, no AUC) on the first ``--capped-contexts`` (default: as many as
  ``--contexts``), whose counts must equal the full ones below the cap and flag exactly the
  contexts whose positive ``rank-cap`` items out-score;

and reports the time per context, the ratios, the projected time of a full pass over the test
split, the positive's rank (``ge``) distribution and the number of prefixes run per context
(the pruned ranking's cost, with and without the cap), beside the trie's inner nodes
(``score_items``' cost).

    python benchmarks/bench_exact_ranks.py --threads 2                  # both codecs
    python benchmarks/bench_exact_ranks.py --codecs sid --train-seconds 60 --contexts 128 \\
        --score-items-contexts 16 8 --beam-contexts 64 --name exact_ranks_smoke   # quick check

Prints the figures and writes benchmarks/results/<name>.json (default name: exact_ranks).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _decoding_setup import environment, write_results

from wpauc.data import D3Source, MiniOneRecSource, RecDataModule, TitleCodec
from wpauc.decoding import (
    ItemTrie,
    completion_logprobs,
    constrained_beam_search,
    exact_positive_ranks,
    score_items,
)
from wpauc.metrics import positive_ranks
from wpauc.models import TinyQwen2Policy

DATA_DIR = Path(os.environ.get("WPAUC_DATA", "data")) / "amazon18-minionerec"  # as the configs
CATEGORY = "Office_Products"
ARCHITECTURES = {
    # configs/office/sft.yaml and configs/d3/sft_title.yaml
    "sid": TinyQwen2Policy(
        num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, intermediate_size=256, seed=0
    ),
    "title": TinyQwen2Policy(
        num_layers=2, hidden_size=128, num_heads=4, num_kv_heads=2, intermediate_size=512, seed=0
    ),
}
RANK_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codecs", nargs="+", choices=["sid", "title"], default=["sid", "title"])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (reported)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="MiniOneRec-layout data")
    parser.add_argument(
        "--train-seconds", type=float, default=600, help="SFT time budget per codec (wall clock)"
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path("runs/bench_exact_ranks"),
        help="trained models are saved here as <codec>.pt and reused by later runs",
    )
    parser.add_argument(
        "--sft-checkpoint",
        action="append",
        default=[],
        metavar="CODEC=PATH",
        help="use the policy of a Lightning checkpoint (e.g. sft.yaml's best.ckpt) for a codec",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="contexts per call")
    parser.add_argument(
        "--contexts", type=int, default=256, help="test contexts ranked exactly (0: all)"
    )
    parser.add_argument(
        "--score-items-contexts",
        type=int,
        nargs=2,
        default=(128, 8),
        metavar=("SID", "TITLE"),
        help="contexts scored by score_items (it takes seconds per title context)",
    )
    parser.add_argument("--beam-contexts", type=int, default=256, help="contexts beam-searched")
    parser.add_argument("--beams", type=int, default=20, help="beam width")
    parser.add_argument(
        "--rank-cap", type=int, default=20, help="rank cap of the capped pruned ranking"
    )
    parser.add_argument(
        "--capped-contexts",
        type=int,
        default=None,
        help="contexts ranked with the cap (default: as many as --contexts; 0: all)",
    )
    parser.add_argument(
        "--renormalize",
        action="store_true",
        help="rank by log-probs renormalised over the allowed continuations (all three methods)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the training order")
    parser.add_argument(
        "--name", default="exact_ranks", help="results file benchmarks/results/<name>.json"
    )
    return parser.parse_args()


def write_d3_copy(data_dir: Path, target: Path) -> None:
    """The MiniOneRec Office data in the D3 / BIGRec / ReRe layout: ``info/<category>.txt``
    (``title<TAB>item_id``, whitespace-normalised titles from ``item.json``) and the split CSVs
    with the columns D3Source reads."""
    items = json.loads((data_dir / "index" / f"{CATEGORY}.item.json").read_text())
    (target / "info").mkdir(parents=True)
    lines = [f"{' '.join(item['title'].split())}\t{item_id}\n" for item_id, item in items.items()]
    (target / "info" / f"{CATEGORY}.txt").write_text("".join(lines))
    for split in ("train", "valid", "test"):
        (source,) = (data_dir / split).glob(f"{CATEGORY}*.csv")
        (target / split).mkdir()
        with (
            source.open(newline="") as read,
            (target / split / f"{CATEGORY}.csv").open("w", newline="") as write,
        ):
            writer = csv.writer(write)
            writer.writerow(["user_id", "history_item_id", "item_id"])
            for row in csv.DictReader(read):
                writer.writerow([row["user_id"], row["history_item_id"], row["item_id"]])


def data_module(codec: str, data_dir: Path, scratch: Path, batch_size: int) -> RecDataModule:
    if codec == "sid":
        source = MiniOneRecSource(str(data_dir), CATEGORY)
        module = RecDataModule(source, batch_size=batch_size, eval_batch_size=batch_size)
    else:
        write_d3_copy(data_dir, scratch / "d3")
        source = D3Source(str(scratch / "d3"), CATEGORY)
        module = RecDataModule(
            source, codec=TitleCodec(), batch_size=batch_size, eval_batch_size=batch_size
        )
    module.setup("fit")
    return module


def trained_policy(
    codec: str, datamodule: RecDataModule, args: argparse.Namespace
) -> tuple[torch.nn.Module, dict]:
    """The codec's tiny Qwen2: from ``--sft-checkpoint``, from ``--model-dir``, or trained now."""
    model = ARCHITECTURES[codec].build(datamodule.tokenizer, datamodule.item_codes)
    checkpoints = dict(entry.split("=", 1) for entry in args.sft_checkpoint)
    saved = args.model_dir / f"{codec}.pt"
    if codec in checkpoints:
        state = torch.load(checkpoints[codec], map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(
            {k[len("policy.") :]: v for k, v in state.items() if k[:7] == "policy."}
        )
        training = {"source": checkpoints[codec]}
    elif saved.is_file():
        stored = torch.load(saved, map_location="cpu", weights_only=True)
        model.load_state_dict(stored["weights"])
        training = {"source": str(saved), **stored["training"]}
    else:
        training = train(model, datamodule, args)
        args.model_dir.mkdir(parents=True, exist_ok=True)
        torch.save({"weights": model.state_dict(), "training": training}, saved)
        training = {"source": f"trained now, saved to {saved}", **training}
    return model.to(args.device).eval(), training


def train(model: torch.nn.Module, datamodule: RecDataModule, args: argparse.Namespace) -> dict:
    """SFT as ``RecommenderModule`` does it (mean NLL of the target code's tokens, AdamW, lr
    3e-3 as the configs) over shuffled training batches until ``--train-seconds`` run out."""
    model.to(args.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(args.seed)
    dataset = datamodule.dataset("train")
    collate = datamodule.val_dataloader().collate_fn
    start, steps, samples, loss = time.perf_counter(), 0, 0, torch.tensor(torch.nan)
    while time.perf_counter() - start < args.train_seconds:
        order = torch.randperm(len(dataset), generator=generator).tolist()
        for first in range(0, len(order), args.batch_size):
            batch = collate([dataset[index] for index in order[first : first + args.batch_size]])
            batch = {key: value.to(args.device) for key, value in batch.items()}
            loss = sft_loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps, samples = steps + 1, samples + len(batch["target"])
            if time.perf_counter() - start >= args.train_seconds:
                break
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "steps": steps,
        "epochs": round(samples / len(dataset), 2),
        "last_loss": round(loss.item(), 3),
    }


def sft_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean NLL of the target code's tokens, as ``RecommenderModule``'s SFT step."""
    code, code_mask = batch["target_code"][:, None], batch["target_code_mask"][:, None]
    log_probs = completion_logprobs(
        model, batch["input_ids"], batch["attention_mask"], code, code_mask
    )
    return -(log_probs * code_mask).sum() / code_mask.sum()


def run_batches(
    datamodule: RecDataModule,
    count: int,
    batch_size: int,
    device: str,
    function: Callable[[dict[str, torch.Tensor]], object],
) -> tuple[float, list]:
    """Calls ``function`` on the first ``count`` test contexts in batches; returns the wall time
    of the calls (data loading excluded) and their results."""
    dataset = datamodule.dataset("test")
    collate = datamodule.val_dataloader().collate_fn
    seconds, results = 0.0, []
    for first in range(0, count, batch_size):
        examples = [dataset[index] for index in range(first, min(first + batch_size, count))]
        batch = {key: value.to(device) for key, value in collate(examples).items()}
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        results.append(function(batch))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
    return seconds, results


def quantiles(values: torch.Tensor) -> dict[str, float]:
    points = torch.quantile(values.double(), torch.tensor(RANK_QUANTILES, dtype=torch.float64))
    summary = {
        f"p{round(100 * q)}": round(float(v), 1)
        for q, v in zip(RANK_QUANTILES, points, strict=True)
    }
    return {"mean": round(float(values.double().mean()), 1), **summary}


def cost_by_rank(ge: torch.Tensor, expansions: torch.Tensor) -> dict[str, dict]:
    """Share of contexts and mean prefixes run, by the positive's rank ``ge``."""
    edges = [0, 10, 100, 1000, None]
    buckets = {}
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (ge >= low) & (ge < high if high is not None else True)
        name = f"{low}-{high - 1}" if high is not None else f">={low}"
        buckets[name] = {
            "share": round(float(inside.float().mean()), 3),
            "mean_prefixes": round(float(expansions[inside].float().mean()), 1)
            if inside.any()
            else None,
        }
    return buckets


def bench_codec(codec: str, args: argparse.Namespace, scratch: Path) -> dict:
    datamodule = data_module(codec, args.data_dir, scratch, args.batch_size)
    trie = ItemTrie.from_codes(datamodule.item_codes)
    model, training = trained_policy(codec, datamodule, args)
    num_test = len(datamodule.dataset("test"))
    contexts = num_test if args.contexts == 0 else min(args.contexts, num_test)
    scored = min(args.score_items_contexts[codec == "title"], contexts)
    beamed = min(args.beam_contexts, num_test)
    capped_contexts = contexts if args.capped_contexts is None else args.capped_contexts
    capped_contexts = num_test if capped_contexts == 0 else min(capped_contexts, num_test)

    def pruned(batch, rank_cap=None):
        return exact_positive_ranks(
            model,
            batch["input_ids"],
            batch["attention_mask"],
            trie,
            batch["target"],
            renormalize=args.renormalize,
            rank_cap=rank_cap,
        )

    def capped(batch):
        return pruned(batch, args.rank_cap)

    def full(batch):
        scores = score_items(
            model, batch["input_ids"], batch["attention_mask"], trie, args.renormalize
        )
        return positive_ranks(scores, batch["target"])

    def beam(batch):
        return constrained_beam_search(
            model, batch["input_ids"], batch["attention_mask"], trie, args.beams, args.renormalize
        )

    pruned_s, counts = run_batches(datamodule, contexts, args.batch_size, args.device, pruned)
    full_s, table_ranks = run_batches(datamodule, scored, args.batch_size, args.device, full)
    beam_s, _ = run_batches(datamodule, beamed, args.batch_size, args.device, beam)
    gt = torch.cat([c.gt for c in counts]).cpu()
    ge = torch.cat([c.ge for c in counts]).cpu()
    expansions = torch.cat([c.expansions for c in counts]).cpu()
    same = torch.equal(torch.cat([r.gt for r in table_ranks]).cpu(), gt[:scored]) and torch.equal(
        torch.cat([r.ge for r in table_ranks]).cpu(), ge[:scored]
    )
    # the pruned times of the contexts score_items ran on, for like-for-like ratios
    pruned_scored_s, _ = run_batches(datamodule, scored, args.batch_size, args.device, pruned)
    capped_scored_s, _ = run_batches(datamodule, scored, args.batch_size, args.device, capped)
    capped_s, capped_counts = run_batches(
        datamodule, capped_contexts, args.batch_size, args.device, capped
    )
    per_context = {
        "pruned_ms": 1e3 * pruned_s / contexts,
        "score_items_ms": 1e3 * full_s / scored,
        "pruned_on_score_items_contexts_ms": 1e3 * pruned_scored_s / scored,
        "beam_ms": 1e3 * beam_s / beamed,
        "capped_ms": 1e3 * capped_s / capped_contexts,
        "capped_on_score_items_contexts_ms": 1e3 * capped_scored_s / scored,
    }
    num_negatives = trie.num_items - 1
    return {
        "catalog": {
            "items": trie.num_items,
            "trie_nodes": trie.num_nodes,
            "inner_nodes": int((trie.node_item < 0).sum()) - 1,
            "max_code_length": trie.max_code_length,
            "mean_code_length": round(float(trie.item_code_lengths.float().mean()), 2),
            "vocab_size": model.config.vocab_size,
            "test_contexts": num_test,
        },
        "model": {**vars(ARCHITECTURES[codec]), "training": training},
        "contexts": {"pruned": contexts, "score_items": scored, "beam": beamed},
        "per_context_ms": {key: round(value, 2) for key, value in per_context.items()},
        "score_items_over_pruned": round(
            per_context["score_items_ms"] / per_context["pruned_on_score_items_contexts_ms"], 2
        ),
        "pruned_over_beam": round(per_context["pruned_ms"] / per_context["beam_ms"], 2),
        "full_test_pass_minutes": round(per_context["pruned_ms"] * num_test / 6e4, 1),
        "counts_equal_score_items": same,
        "positive_rank_ge": quantiles(ge.float()),
        "hr@10": round(float((ge < 10).float().mean()), 4),
        "auc": round(float(1 - (gt + ge).double().mean() / (2 * num_negatives)), 4),
        "prefixes_run_per_context": quantiles(expansions.float()),
        "prefixes_run_by_rank": cost_by_rank(ge, expansions),
        "capped": capped_summary(capped_counts, gt, ge, per_context, args.rank_cap, num_test),
    }


def capped_summary(
    counts: list,
    gt: torch.Tensor,
    ge: torch.Tensor,
    per_context: dict[str, float],
    rank_cap: int,
    num_test: int,
) -> dict:
    """The capped ranking's figures, and its counts checked against the full ones ``gt``,
    ``ge`` on the contexts both ranked: exact below the cap, ``beyond_cap`` exactly where
    ``rank_cap`` items beat the positive (so HR@K and NDCG@K for K <= the cap are equal)."""
    beyond = torch.cat([c.beyond_cap for c in counts]).cpu()
    capped_gt, capped_ge = (torch.cat([getattr(c, f) for c in counts]).cpu() for f in ("gt", "ge"))
    expansions = torch.cat([c.expansions for c in counts]).cpu()
    both = min(len(beyond), len(gt))
    below = ~beyond[:both]
    agrees = (
        torch.equal(beyond[:both], gt[:both] >= rank_cap)
        and torch.equal(capped_gt[:both][below], gt[:both][below])
        and torch.equal(capped_ge[:both][below], ge[:both][below])
    )
    return {
        "rank_cap": rank_cap,
        "contexts": len(beyond),
        "beyond_cap_share": round(float(beyond.float().mean()), 3),
        "counts_agree_with_full_counts": agrees,
        "contexts_checked": both,
        "hr@10": round(float((~beyond & (capped_ge < 10)).float().mean()), 4),
        "score_items_over_capped": round(
            per_context["score_items_ms"] / per_context["capped_on_score_items_contexts_ms"], 2
        ),
        "pruned_over_capped": round(
            per_context["pruned_on_score_items_contexts_ms"]
            / per_context["capped_on_score_items_contexts_ms"],
            2,
        ),
        "capped_over_beam": round(per_context["capped_ms"] / per_context["beam_ms"], 2),
        "full_test_pass_minutes": round(per_context["capped_ms"] * num_test / 6e4, 1),
        "prefixes_run_per_context": quantiles(expansions.float()),
        "prefixes_run_beyond_cap": quantiles(expansions[beyond].float()) if beyond.any() else None,
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    results = {"settings": settings}
    results["environment"] = environment(args)
    with tempfile.TemporaryDirectory() as scratch:
        for codec in args.codecs:
            results[codec] = bench_codec(codec, args, Path(scratch))
            print(f"{codec}:", json.dumps(results[codec], indent=1), flush=True)
    path = write_results(args.name, results)
    print(f"written to {path}")
    for codec in args.codecs:
        figures = results[codec]["per_context_ms"]
        print(
            f"{codec}: pruned {figures['pruned_ms']:.1f} ms/context, score_items "
            f"{figures['score_items_ms']:.1f} ({results[codec]['score_items_over_pruned']}x), "
            f"{args.beams}-beam search {figures['beam_ms']:.1f} "
            f"(pruned / beam {results[codec]['pruned_over_beam']}x); full test pass "
            f"{results[codec]['full_test_pass_minutes']} min; median rank "
            f"{results[codec]['positive_rank_ge']['p50']}"
        )
        capped = results[codec]["capped"]
        print(
            f"{codec}: capped at {capped['rank_cap']}: {figures['capped_ms']:.1f} ms/context "
            f"(score_items / capped {capped['score_items_over_capped']}x, capped / beam "
            f"{capped['capped_over_beam']}x); full test pass {capped['full_test_pass_minutes']} "
            f"min; {capped['beyond_cap_share']:.0%} beyond the cap; counts agree: "
            f"{capped['counts_agree_with_full_counts']}"
        )


if __name__ == "__main__":
    main()
