"""Raw Amazon 2018 pipeline (``wpauc prepare-amazon``) on small generated raw files with
deliberate bad records, checked against a brute-force oracle written here; and the command
line family: ``wpauc --help``, the subcommands' help, the alias console scripts and the old
option spellings."""

from __future__ import annotations

import ast
import csv
import dataclasses
import gzip
import inspect
import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.helpers.prepare import (
    CATEGORY,
    NO_META_ASIN,
    STEM,
    WINDOW_END,
    WINDOW_START,
    RawFiles,
    _asin,
    raw_file_options,
    read_split,
    write_raw_files,
)
from wpauc.cli import main
from wpauc.prepare import COMMANDS, SIDOptions
from wpauc.prepare.amazon import prepare_amazon
from wpauc.prepare.layout import CSV_COLUMNS
from wpauc.prepare.records import BadRecordLog

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Bad records the generator plants, by the kind the pipeline must report.
EXPECTED_BAD = {
    "malformed_line": 4,
    "review_missing_field": 2,
    "review_bad_field": 1,
    "meta_missing_field": 1,
    "item_without_metadata": 1,
}
UNUSABLE_TITLE_ITEMS = (27, 28, 29)


def oracle_k_core(raw: RawFiles, k: int = 5) -> tuple[list[tuple[str, str, int]], int]:
    """Brute force: the k-core of the usable in-window reviews and the number of passes
    (the last pass removes nothing)."""
    kept = [
        r for r in raw.clean_reviews if WINDOW_START <= r[2] <= WINDOW_END and r[1] in raw.titles
    ]
    passes = 0
    while True:
        passes += 1
        users, items = Counter(r[0] for r in kept), Counter(r[1] for r in kept)
        low_users = {u for u, c in users.items() if c < k}
        low_items = {i for i, c in items.items() if c < k}
        if not low_users and not low_items:
            return kept, passes
        kept = [r for r in kept if r[0] not in low_users and r[1] not in low_items]


def oracle_samples(
    raw: RawFiles, k: int = 5, max_history: int = 10
) -> list[tuple[str, tuple[str, ...], str, int]]:
    """Brute force: (user, history asins, target asin, time) of every sample, by time."""
    kept, _ = oracle_k_core(raw, k)
    sequences = defaultdict(list)
    for user, asin, time in sorted(kept, key=lambda r: r[2]):
        sequences[user].append((asin, time))
    samples = []
    for user, sequence in sequences.items():
        for i in range(1, len(sequence)):
            history = tuple(asin for asin, _ in sequence[max(0, i - max_history) : i])
            samples.append((user, history, sequence[i][0], sequence[i][1]))
    return sorted(samples, key=lambda s: s[3])


def toy_sid_index(num_items: int) -> dict[str, list[str]]:
    """A hand-made SID table (with collisions) for runs that do not build SIDs."""
    return {str(i): [f"<a_{i % 4}>", f"<b_{i % 7}>", f"<c_{i % 5}>"] for i in range(num_items)}


def run_two_stage(raw: RawFiles, output: Path) -> dict:
    """``wpauc prepare-amazon --items_only``, then a hand-made SID index via ``--sid_index``;
    returns the report."""
    base = [*raw_file_options(raw), "--output_dir", str(output)]
    main(["prepare-amazon", *base, "--items_only"])
    items = json.loads((output / "index" / f"{CATEGORY}.item.json").read_text())
    sid_file = output.parent / f"{output.name}_sids.json"
    sid_file.write_text(json.dumps(toy_sid_index(len(items))))
    main(["prepare-amazon", *base, "--sid_index", str(sid_file)])
    return json.loads((output / f"{CATEGORY}.prepare_report.json").read_text())


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[RawFiles, Path, dict]:
    root = tmp_path_factory.mktemp("raw")
    raw = write_raw_files(root / "raw")
    report = run_two_stage(raw, root / "out")
    return raw, root / "out", report


def test_output_matches_brute_force_oracle(prepared):
    raw, output, _ = prepared
    items = json.loads((output / "index" / f"{CATEGORY}.item.json").read_text())
    asin_of_title = {title: asin for asin, title in raw.titles.items()}
    asin_of_id = {int(i): asin_of_title[item["title"]] for i, item in items.items()}
    rows = [
        row
        for split in ("train", "valid", "test")
        for row in read_split(output / split / f"{STEM}.csv")
    ]
    expected = oracle_samples(raw)
    assert len(rows) == len(expected) > 100
    user_map = {}
    for row, (user, history, target, _) in zip(rows, expected, strict=True):
        assert tuple(asin_of_id[i] for i in row["history_item_id"]) == history
        assert asin_of_id[row["item_id"]] == target
        assert row["history_item_title"] == [items[str(i)]["title"] for i in row["history_item_id"]]
        assert row["item_title"] == items[str(row["item_id"])]["title"]
        assert user_map.setdefault(row["user_id"], user) == user
    assert len(set(user_map.values())) == len(user_map)  # one CSV user per raw user
    assert sorted(items) == sorted(str(i) for i in range(len(items)))
    assert set(asin_of_id.values()) == {asin for _, h, t, _ in expected for asin in (*h, t)}


def test_split_is_global_chronological_8_1_1(prepared):
    raw, output, _ = prepared
    total = len(oracle_samples(raw))
    sizes = [
        len(read_split(output / split / f"{STEM}.csv")) for split in ("train", "valid", "test")
    ]
    assert sizes == [
        int(0.8 * total),
        int(0.9 * total) - int(0.8 * total),
        total - int(0.9 * total),
    ]
    data = prepare_amazon(raw.reviews, raw.meta)
    times = {name: [sample.time for sample in rows] for name, rows in data.splits.items()}
    for split_times in times.values():
        assert split_times == sorted(split_times)
    assert max(times["train"]) <= min(times["valid"]) and max(times["valid"]) <= min(times["test"])
    assert WINDOW_START <= min(times["train"]) and max(times["test"]) <= WINDOW_END


def test_five_core_holds_and_histories_are_previous_items(prepared):
    _, output, _ = prepared
    rows = [
        row
        for split in ("train", "valid", "test")
        for row in read_split(output / split / f"{STEM}.csv")
    ]
    by_user = defaultdict(list)
    for row in rows:
        by_user[row["user_id"]].append(row)
    item_counts = Counter()
    for user_rows in by_user.values():
        assert (
            len(user_rows[0]["history_item_id"]) == 1
        )  # the first sample's history is the first item
        sequence = user_rows[0]["history_item_id"] + [row["item_id"] for row in user_rows]
        assert len(sequence) >= 5
        item_counts.update(sequence)
        for position, row in enumerate(user_rows, start=1):
            assert 1 <= len(row["history_item_id"]) <= 10
            assert row["history_item_id"] == sequence[max(0, position - 10) : position]
    assert min(item_counts.values()) >= 5


def test_sid_columns_follow_the_index(prepared):
    _, output, _ = prepared
    index = json.loads((output / "index" / f"{CATEGORY}.index.json").read_text())
    items = json.loads((output / "index" / f"{CATEGORY}.item.json").read_text())
    assert index == toy_sid_index(len(items))
    for split in ("train", "valid", "test"):
        for row in read_split(output / split / f"{STEM}.csv"):
            assert row["item_sid"] == "".join(index[str(row["item_id"])])
            assert row["history_item_sid"] == [
                "".join(index[str(i)]) for i in row["history_item_id"]
            ]


def test_bad_records_and_filters_are_reported(prepared):
    raw, _, report = prepared
    assert report["bad_records"]["counts"] == EXPECTED_BAD
    assert report["bad_records"]["total"] == sum(EXPECTED_BAD.values())
    examples = " ".join(report["bad_records"]["examples"]["review_missing_field"])
    assert f"{raw.reviews}:{raw.bad_review_lines[3]}: missing field(s) unixReviewTime" in examples
    assert f"{raw.reviews}:{raw.bad_review_lines[4]}: missing field(s) asin" in examples
    stats = report["stats"]
    in_window = [r for r in raw.clean_reviews if WINDOW_START <= r[2] <= WINDOW_END]
    assert stats["reviews_read"] == len(raw.clean_reviews)
    assert stats["reviews_in_window"] == len(in_window)
    assert stats["reviews_with_usable_item"] == sum(r[1] in raw.titles for r in in_window)
    reviewed = {r[1] for r in in_window}
    assert stats["items_without_metadata"] == int(NO_META_ASIN in reviewed) == 1
    assert (
        stats["items_unusable_title"]
        == sum(_asin(i) in reviewed for i in UNUSABLE_TITLE_ITEMS)
        == 3
    )
    assert stats["duplicate_metadata_records"] == 1
    usable = [r for r in in_window if r[1] in raw.titles]
    assert stats["users_before_k_core"] == len({r[0] for r in usable})
    assert stats["items_before_k_core"] == len({r[1] for r in usable})
    expected = oracle_samples(raw)
    assert stats["samples"] == len(expected)
    assert stats["users"] == len({s[0] for s in expected})
    assert stats["items"] == len({asin for s in expected for asin in (*s[1], s[2])})
    assert stats["reviews_after_k_core"] == len(expected) + stats["users"]
    assert stats["k_core_rounds"] == oracle_k_core(raw)[1]
    total = len(expected)
    assert [stats[f"{split}_samples"] for split in ("train", "valid", "test")] == [
        int(0.8 * total),
        int(0.9 * total) - int(0.8 * total),
        total - int(0.9 * total),
    ]


def test_item_json_fields(prepared):
    raw, output, _ = prepared
    items = json.loads((output / "index" / f"{CATEGORY}.item.json").read_text())
    by_title = {item["title"]: item for item in items.values()}
    first = by_title[raw.titles[_asin(0)]]
    assert first["brand"] == "Acme"
    assert first["description"] == "['Great pen & paper 0', 'second line']"
    assert first["categories"] == "Toy Products,Pens 0"
    assert set(first) == {"title", "description", "brand", "categories"}


def test_header_and_quoting_match_the_real_layout(prepared, amazon18_dir):
    _, output, _ = prepared
    real = (amazon18_dir / "test" / "Office_Products_5_2016-10-2018-11.csv").read_text(
        encoding="utf-8"
    )
    ours = (output / "test" / f"{STEM}.csv").read_text(encoding="utf-8")
    assert ours.splitlines()[0] == real.splitlines()[0] == ",".join(CSV_COLUMNS)
    assert "\r" not in ours and ours.endswith("\n")
    real_row = next(csv.reader(real.splitlines()[1:2]))
    our_row = next(csv.reader(ours.splitlines()[1:2]))
    for real_value, our_value in zip(real_row, our_row, strict=True):
        assert type(
            ast.literal_eval(real_value) if real_value.startswith("[") else real_value
        ) is type(ast.literal_eval(our_value) if our_value.startswith("[") else our_value)


def test_gzipped_inputs_give_identical_output(prepared, tmp_path):
    raw, output, _ = prepared
    gz = RawFiles(
        tmp_path / "reviews.json.gz", tmp_path / "meta.json.gz", raw.clean_reviews, raw.titles, []
    )
    for plain, packed in ((raw.reviews, gz.reviews), (raw.meta, gz.meta)):
        with plain.open("rb") as source, gzip.open(packed, "wb") as target:
            shutil.copyfileobj(source, target)
    report = run_two_stage(gz, tmp_path / "out")
    assert report["bad_records"]["counts"] == EXPECTED_BAD
    for relative in (
        f"train/{STEM}.csv",
        f"valid/{STEM}.csv",
        f"test/{STEM}.csv",
        f"index/{CATEGORY}.item.json",
    ):
        assert (tmp_path / "out" / relative).read_bytes() == (output / relative).read_bytes()


def test_truncated_gzip_and_undecodable_lines_are_reported(prepared, tmp_path):
    raw, _, _ = prepared
    packed = gzip.compress(raw.reviews.read_bytes())
    truncated = tmp_path / "reviews.json.gz"
    truncated.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ValueError, match=r"reviews.json.gz: unreadable after line \d+"):
        prepare_amazon(truncated, raw.meta)
    latin = tmp_path / "reviews.json"
    latin.write_bytes(raw.reviews.read_bytes() + b'{"reviewerID": "caf\xe9"}\n')
    log = BadRecordLog()
    prepare_amazon(latin, raw.meta, log=log)
    assert log.counts["malformed_line"] == EXPECTED_BAD["malformed_line"] + 1
    assert any("not UTF-8" in example for example in log.examples["malformed_line"])


def test_strict_mode_stops_at_the_first_bad_record_with_its_location(prepared, tmp_path):
    raw, _, _ = prepared
    argv = ["prepare-amazon", *raw_file_options(raw), "--output_dir", str(tmp_path)]
    with pytest.raises(
        SystemExit, match=rf"{raw.reviews}:{raw.bad_review_lines[0]}: .*malformed_line"
    ):
        main([*argv, "--items_only", "--strict"])
    log = BadRecordLog(strict=True)
    with pytest.raises(ValueError, match=rf"{raw.reviews}:{raw.bad_review_lines[0]}"):
        prepare_amazon(raw.reviews, raw.meta, log=log)


def test_argument_errors_name_the_argument(prepared, tmp_path, capsys):
    raw, _, _ = prepared
    argv = ["prepare-amazon", *raw_file_options(raw), "--output_dir", str(tmp_path)]
    with pytest.raises(SystemExit, match="wpauc prepare-amazon: error: no SID source"):
        main(argv)  # no SID source and no index in the output folder
    with pytest.raises(SystemExit, match="--sid_index and --items_only exclude each other"):
        main([*argv, "--sid_index", str(tmp_path / "sids.json"), "--items_only"])
    with pytest.raises(SystemExit, match="start must look like YYYY-MM"):
        main([*argv, "--items_only", "--start", "2016-13"])
    with pytest.raises(SystemExit, match="input file not found"):
        main([*argv[:2], str(tmp_path / "missing.json"), *argv[3:], "--items_only"])
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"0": ["<a_1>"]}))
    with pytest.raises(SystemExit, match=r"wrong.json: SID index must cover item ids"):
        main([*argv, "--sid_index", str(wrong)])
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--k_core", "five"])
    assert exit_info.value.code == 2 and "k_core" in capsys.readouterr().err


def test_round_trip_through_the_data_layer_reader(prepared):
    readers = pytest.importorskip("wpauc.data.readers")
    if not hasattr(readers, "MiniOneRecSource"):
        pytest.skip("wpauc.data.readers.MiniOneRecSource is not there yet")
    _, output, _ = prepared
    data = readers.MiniOneRecSource(str(output), CATEGORY).load()
    items = json.loads((output / "index" / f"{CATEGORY}.item.json").read_text())
    index = json.loads((output / "index" / f"{CATEGORY}.index.json").read_text())
    assert data.catalog.item_ids == tuple(range(len(items)))
    assert data.catalog.titles == tuple(items[str(i)]["title"] for i in range(len(items)))
    for item_id, sid in enumerate(data.catalog.sids):
        assert list(sid[:3]) == index[str(item_id)]  # a 4th token only disambiguates collisions
    for split in ("train", "valid", "test"):
        rows = read_split(output / split / f"{STEM}.csv")
        samples = data.split(split)
        assert [(s.user, list(s.history), s.target) for s in samples] == [
            (row["user_id"], row["history_item_id"], row["item_id"]) for row in rows
        ]


@pytest.mark.parametrize("argv", [["--help"], []], ids=["help", "no-arguments"])
def test_wpauc_help_names_the_data_preparation_commands(argv, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no line wrapping inside the names checked
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert "{fit,validate,test,predict}" in shown
    assert "'wpauc prepare-amazon' (Raw Amazon Reviews 2018" in shown
    assert "'wpauc build-sids' (SIDs for" in shown


@pytest.mark.parametrize(
    ("command", "documentation"),
    [
        ("prepare-amazon", "--start START         first month kept, YYYY-MM."),
        ("build-sids", "--data_dir DATA_DIR   MiniOneRec-layout folder (holds index/)."),
    ],
)
def test_subcommand_help_lists_every_option(command, documentation, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"usage: wpauc {command} ")
    options = [name for name in inspect.signature(COMMANDS[command]).parameters if name != "sid"]
    options += [f"sid.{option.name}" for option in dataclasses.fields(SIDOptions)]
    for option in options:
        assert f"  --{option} " in shown
    assert documentation in shown
    assert "k-means centroids per level." in shown
