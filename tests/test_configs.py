"""The shipped configs: every entry point parses and instantiates (trainer, model, data
module), every piece composes with ``configs/base.yaml``, every objective piece (found, not
listed) with every data set's RL entry point and every strategy piece after an entry point,
every ``wpauc ... -c`` command that README.md, configs/README.md and docs/scaling.md show
parses, a config composed from pieces trains, and so does an objective class and piece that
no file names.

Hardware and files a CI machine lacks are swapped for stand-ins: the GPU trainer runs on the
CPU and the pretrained model path points at a tiny random checkpoint written offline.
"""

import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml

import wpauc.cli
from tests.conftest import save_random_checkpoint
from tests.helpers.runs import TINY_WORLD
from wpauc.cli import WpaucCLI, run_cli
from wpauc.data import RecDataModule
from wpauc.models import TinyQwen2Policy
from wpauc.module import RecommenderModule

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
BASE = CONFIGS / "base.yaml"
BASES = {BASE, CONFIGS / "base_rl.yaml"}
#: piece folder -> the option that takes one of its files
PIECES = {"data": "--data", "policy": "--model.policy", "objective": "--model.objective"}
#: one RL entry point per data set; the objective is a piece given after it
RL_ENTRY_POINTS = sorted(CONFIGS.glob("*/rl.yaml"))
#: whole-config overrides added after an entry point: `-c <entry point> -c strategy/<name>`
STRATEGIES = sorted((CONFIGS / "strategy").glob("*.yaml"))
ENTRY_POINTS = sorted(
    path
    for path in CONFIGS.rglob("*.yaml")
    if path not in BASES and path.parent.name not in PIECES and path not in STRATEGIES
)
#: the entry points that scripts, experiments and the docs call by name
NAMED_ENTRY_POINTS = [
    "quickstart.yaml",
    *(
        f"{data}/{stage}.yaml"
        for data in ("synthetic", "office", "industrial")
        for stage in ("sft", "rl")
    ),
    "d3/sft_title.yaml",
    "pretrained/qwen2.5_lora_office.yaml",
]
DOCUMENTS = [REPO / "README.md", CONFIGS / "README.md", REPO / "docs" / "scaling.md"]
SUBCOMMANDS = ("fit", "validate", "test", "predict")


def objective_pieces(configs: Path) -> list[Path]:
    """Every `model.objective` piece under `configs`: the shared ones (`objective/`) and
    those a data set keeps for the settings it chose (`<dataset>/objective/`)."""
    return sorted([*configs.glob("objective/*.yaml"), *configs.glob("*/objective/*.yaml")])


OBJECTIVE_PIECES = objective_pieces(CONFIGS)


def relative(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


def command_id(value) -> str:
    return value if isinstance(value, str) else " ".join(value)


class _Parsed(Exception):
    """Raised by `ParseOnlyCLI` with the parsed config, before any class is instantiated."""


class ParseOnlyCLI(WpaucCLI):
    """The wpauc CLI stopped after parsing and validating the arguments (and its own
    pre-instantiation hook): nothing is built, loaded or run."""

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        raise _Parsed(self.config)


def parse(args: list[str], monkeypatch) -> object:
    """The config that ``wpauc <args>`` would run with, parsed as the real command does."""
    monkeypatch.setattr(wpauc.cli, "WpaucCLI", ParseOnlyCLI)
    with pytest.raises(_Parsed) as parsed:
        run_cli(args)
    return parsed.value.args[0]


def wpauc_commands(line: str) -> list[list[str]]:
    """The args after `wpauc` of each `wpauc <subcommand> ...` in one shell line that gives a
    config file (`-c` / `--config`)."""
    tokens = shlex.split(line, comments=True)
    commands = []
    for start, token in enumerate(tokens[:-1]):
        if Path(token).name == "wpauc" and tokens[start + 1] in SUBCOMMANDS:
            args = []
            for arg in tokens[start + 1 :]:
                if arg in ("&&", "||", ";", "|"):
                    break
                args.append(arg)
            if any(arg in ("-c", "--config") or arg.startswith("--config=") for arg in args):
                commands.append(args)
    return commands


def documented_commands() -> list[tuple[str, list[str]]]:
    """(document, args) of every `wpauc ... -c ...` command in the documents' code blocks
    and inline code, except commands with a `<placeholder>`."""
    commands = []
    for document in DOCUMENTS:
        text = document.read_text()
        block = re.compile(r"^```[^\n]*\n(.*?)^```", flags=re.S | re.M)
        # inline code may wrap onto the next line of the paragraph
        inline = [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", block.sub("", text))]
        for snippet in [*block.findall(text), *inline]:
            for line in snippet.replace("\\\n", " ").splitlines():
                if "wpauc" in line and "<" not in line:
                    name = str(document.relative_to(REPO))
                    commands += [(name, tuple(args)) for args in wpauc_commands(line)]
    return [(name, list(args)) for name, args in dict.fromkeys(commands)]


COMMANDS = documented_commands()


def test_configs_are_shipped():
    assert sorted(relative(path) for path in ENTRY_POINTS) == sorted(NAMED_ENTRY_POINTS)


def test_documents_show_commands():
    assert {document for document, _ in COMMANDS} == {
        "README.md",
        "configs/README.md",
        "docs/scaling.md",
    }


@pytest.mark.parametrize("config", ENTRY_POINTS, ids=relative)
def test_config_instantiates(config: Path, tmp_path):
    overrides = []
    if "pretrained" in config.parts:
        architecture = TinyQwen2Policy(hidden_size=32)
        checkpoint = save_random_checkpoint(tmp_path / "model", 50, architecture)
        # data.tokenizer_path follows: it is ${model.policy.init_args.path} in the config
        overrides += [f"--model.policy.init_args.path={checkpoint}"]
    if not torch.cuda.is_available():
        overrides += ["--trainer.accelerator=cpu", "--trainer.precision=32-true"]
    args = [f"--config={config}", f"--trainer.default_root_dir={tmp_path}", *overrides]
    cli = run_cli(args, run=False)
    assert isinstance(cli.model, RecommenderModule)
    assert isinstance(cli.datamodule, RecDataModule)
    assert cli.trainer.max_epochs >= 1 or cli.trainer.max_steps >= 1  # a run that ends


@pytest.mark.parametrize(
    "piece",
    [
        *sorted(CONFIGS.glob("data/*.yaml")),
        *sorted(CONFIGS.glob("policy/*.yaml")),
        *OBJECTIVE_PIECES,
    ],
    ids=relative,
)
def test_piece_composes_with_base(piece: Path, monkeypatch):
    folder = piece.parent.name
    pieces = {"--data": CONFIGS / "data" / "synthetic.yaml", PIECES[folder]: piece}
    args = ["fit", f"--config={BASE}", *(f"{option}={path}" for option, path in pieces.items())]
    config = parse(args, monkeypatch).fit
    written = yaml.safe_load(piece.read_text())
    parsed = config.data if folder == "data" else config.model[folder]
    if folder == "data":
        written, parsed = written["source"], parsed.source
    assert parsed.class_path == written["class_path"]


@pytest.mark.parametrize("piece", OBJECTIVE_PIECES, ids=relative)
@pytest.mark.parametrize("entry_point", RL_ENTRY_POINTS, ids=relative)
def test_objective_piece_composes_with_every_rl_entry_point(entry_point, piece, monkeypatch):
    args = ["fit", "-c", str(entry_point), f"--model.objective={piece}"]
    objective = parse(args, monkeypatch).fit.model.objective
    written = yaml.safe_load(piece.read_text())
    assert objective.class_path == written["class_path"]
    # jsonargparse merges the init_args of the same class: the piece's own ones must win
    for key, value in written.get("init_args", {}).items():
        assert objective.init_args[key] == value, key


@pytest.mark.parametrize("strategy", STRATEGIES, ids=relative)
def test_strategy_composes_after_an_entry_point(strategy: Path, monkeypatch):
    entry_point = CONFIGS / "pretrained" / "qwen2.5_lora_office.yaml"
    config = parse(["fit", "-c", str(entry_point), "-c", str(strategy)], monkeypatch).fit
    written = yaml.safe_load(strategy.read_text())["trainer.strategy"]
    parsed = config.trainer.strategy
    name = written if isinstance(written, str) else written["class_path"]
    assert (parsed if isinstance(parsed, str) else parsed.class_path) == name
    assert config.trainer.accelerator == "gpu" and config.trainer.devices == -1
    assert config.model.policy.class_path == "wpauc.models.PretrainedPolicy"  # the rest is kept


@pytest.mark.parametrize("document, args", COMMANDS, ids=command_id)
def test_documented_command_parses(document: str, args: list[str], monkeypatch):
    monkeypatch.chdir(REPO)  # the documents give paths from the repository root
    config = parse(args, monkeypatch)
    assert config.subcommand == args[0]


def test_interpolated_run_folders_follow_a_command_line_override(monkeypatch):
    office_rl = str(CONFIGS / "office" / "rl.yaml")
    args = ["fit", "-c", office_rl, "--trainer.default_root_dir=elsewhere"]
    config = parse(args, monkeypatch).fit
    assert config.trainer.logger.init_args.save_dir == "elsewhere"
    checkpoints = [c for c in config.trainer.callbacks if c.class_path.endswith("ModelCheckpoint")]
    assert [c.init_args.dirpath for c in checkpoints] == ["elsewhere/checkpoints"] * 2
    assert config.data.source.init_args.data_dir.endswith("/amazon18-minionerec")


def test_data_folder_is_one_environment_variable(monkeypatch):
    monkeypatch.setenv("WPAUC_DATA", "/my/data")
    for name in ("office/sft.yaml", "industrial/rl.yaml", "pretrained/qwen2.5_lora_office.yaml"):
        config = parse(["fit", "-c", str(CONFIGS / name)], monkeypatch).fit
        assert config.data.source.init_args.data_dir == "/my/data/amazon18-minionerec", name
    config = parse(["fit", "-c", str(CONFIGS / "d3" / "sft_title.yaml")], monkeypatch).fit
    assert config.data.source.init_args.data_dir == "/my/data/d3"


def test_a_config_composed_from_pieces_trains(tmp_path):
    run_cli(
        [
            "fit",
            f"--config={BASE}",
            f"--data={CONFIGS / 'data' / 'synthetic.yaml'}",
            f"--model.policy={CONFIGS / 'policy' / 'tiny_qwen2.yaml'}",
            f"--model.objective={CONFIGS / 'objective' / 'tawin.yaml'}",
            *TINY_WORLD,
            "--model.sft_epochs=1",
            "--trainer.max_epochs=2",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            "--data.max_eval_samples=16",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))


NEW_OBJECTIVE = '''
"""An objective the repository does not ship: the items the policy ranks highest."""

from wpauc.objectives import Objective, RolloutContext
from wpauc.objectives.base import Group, positive_first_group


class TopNegatives(Objective):
    """The positive against the `num_negatives` other items the policy ranks highest."""

    def __init__(self, num_negatives: int = 2) -> None:
        self.num_negatives = num_negatives

    def _build_group(self, context: RolloutContext) -> Group:
        ranked = self._ranked_negatives(context, self.num_negatives + 1)
        return positive_first_group(context.target, ranked.items, ranked.stats)
'''


def test_a_new_objective_is_its_class_and_its_piece(tmp_path, monkeypatch):
    """A class and its config piece in folders that no file names: the discovery finds the
    piece, which composes with an RL entry point and trains a step."""
    (tmp_path / "my_objectives.py").write_text(NEW_OBJECTIVE)
    monkeypatch.syspath_prepend(str(tmp_path))
    configs = tmp_path / "configs"
    (configs / "objective").mkdir(parents=True)
    piece = configs / "objective" / "top_negatives.yaml"
    piece.write_text("class_path: my_objectives.TopNegatives\ninit_args: {num_negatives: 3}\n")
    assert objective_pieces(configs) == [piece]
    cli = run_cli(
        [
            "fit",
            f"--config={CONFIGS / 'synthetic' / 'rl.yaml'}",
            f"--model.objective={piece}",
            *TINY_WORLD,
            "--model.init_from=null",
            "--trainer.max_steps=1",
            "--trainer.val_check_interval=1",
            "--trainer.limit_val_batches=1",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path / 'run'}",
            "--test_after_fit=false",
        ]
    )
    assert type(cli.model.objective).__name__ == "TopNegatives"
    assert cli.trainer.global_step == 1
    assert cli.model.last_rollout.group.items.shape[-1] == 1 + 3
