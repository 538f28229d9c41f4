"""MiniOneRec and D3 readers on small files, every bad-input error, and the real data."""

import csv
import json
import re
from pathlib import Path

import pytest

from wpauc.data import D3Source, DataFileError, MiniOneRecSource, SIDCodec, build_tokenizer

MINIONEREC_COLUMNS = [
    "user_id", "history_item_title", "item_title", "history_item_id", "item_id",
    "history_item_sid", "item_sid",
]  # fmt: skip
D3_COLUMNS = [
    "user_id", "item_asins", "item_asin", "history_item_id", "item_id", "history_item_title",
    "item_title", "history_rating", "rating", "history_timestamp", "timestamp",
]  # fmt: skip
CATEGORY = "Toys"
FILE_NAME = f"{CATEGORY}_5_2016-10-2018-11"
TITLES = {0: "Ball", 1: "Kite", 2: "Yo-yo", 3: "Ball, red\nlarge", 4: "Puzzle"}
SIDS = {
    0: ["<a_1>", "<b_2>", "<c_3>"],
    1: ["<a_1>", "<b_2>", "<c_4>"],
    2: ["<a_1>", "<b_2>", "<c_3>"],  # collides with item 0
    3: ["<a_5>", "<b_0>", "<c_0>"],
    4: ["<a_1>", "<b_2>", "<c_3>"],  # collides with items 0 and 2
}
# (user, history ids, target id) per split
ROWS = {
    "train": [("u1", [0], 1), ("u1", [0, 1], 3), ("u2", [4], 2)],
    "valid": [("u1", [0, 1, 3], 2)],
    "test": [("u1", [0, 1, 3, 2], 4), ("u2", [4, 2], 0)],
}


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def minionerec_row(user, history, target) -> list:
    return [
        user, str([TITLES[i] for i in history]), TITLES[target], str(history), target,
        str(["".join(SIDS[i]) for i in history]), "".join(SIDS[target]),
    ]  # fmt: skip


def d3_row(user, history, target) -> list:
    return [
        user, str([f"B0{i}" for i in history]), f"B0{target}", str(history), target,
        str([TITLES[i] for i in history]), TITLES[target], str([5.0] * len(history)), 4.0,
        str([1000 + i for i in history]), 2000,
    ]  # fmt: skip


@pytest.fixture
def minionerec_dir(tmp_path) -> Path:
    root = tmp_path / "minionerec"
    index = root / "index"
    index.mkdir(parents=True)
    (index / f"{CATEGORY}.index.json").write_text(json.dumps({str(k): v for k, v in SIDS.items()}))
    items = {str(k): {"title": t, "description": "", "brand": ""} for k, t in TITLES.items()}
    (index / f"{CATEGORY}.item.json").write_text(json.dumps(items))
    for split, rows in ROWS.items():
        write_csv(root / split / f"{FILE_NAME}.csv", MINIONEREC_COLUMNS,
                  [minionerec_row(*row) for row in rows])  # fmt: skip
    # another category in the same folders must not be picked up
    write_csv(root / "train" / "Other_5.csv", MINIONEREC_COLUMNS, [])
    return root


@pytest.fixture
def d3_dir(tmp_path) -> Path:
    root = tmp_path / "d3"
    info = root / "info" / f"{FILE_NAME}.txt"
    info.parent.mkdir(parents=True)
    # ids deliberately not in file order; a title may hold spaces and commas
    info.write_text("".join(f"{TITLES[i].replace(chr(10), ' ')}\t{i}\n" for i in (3, 0, 4, 1, 2)))
    for split, rows in ROWS.items():
        write_csv(root / split / f"{FILE_NAME}.csv", D3_COLUMNS, [d3_row(*row) for row in rows])
    return root


def expected_samples(split: str) -> list[tuple]:
    return [(user, tuple(history), target) for user, history, target in ROWS[split]]


def as_tuples(samples) -> list[tuple]:
    return [(s.user, s.history, s.target) for s in samples]


def test_minionerec_reader(minionerec_dir):
    data = MiniOneRecSource(str(minionerec_dir), CATEGORY).load()
    assert data.catalog.item_ids == (0, 1, 2, 3, 4)  # catalog index == item id here
    assert data.catalog.titles == tuple(TITLES[i] for i in range(5))
    assert data.catalog.sids == (
        ("<a_1>", "<b_2>", "<c_3>", "<d_0>"),
        ("<a_1>", "<b_2>", "<c_4>"),
        ("<a_1>", "<b_2>", "<c_3>", "<d_1>"),
        ("<a_5>", "<b_0>", "<c_0>"),
        ("<a_1>", "<b_2>", "<c_3>", "<d_2>"),
    )
    for split in ("train", "valid", "test"):
        assert as_tuples(data.split(split)) == expected_samples(split)
    assert data.true_next_item_probs is None


def test_d3_reader(d3_dir):
    for category in (CATEGORY, None):  # None: each folder holds a single file
        data = D3Source(str(d3_dir), category).load()
        assert data.catalog.item_ids == (0, 1, 2, 3, 4)
        assert data.catalog.titles[3] == "Ball, red large"
        assert data.catalog.sids is None
        for split in ("train", "valid", "test"):
            assert as_tuples(data.split(split)) == expected_samples(split)


def test_d3_maps_ids_to_catalog_indices(tmp_path):
    (tmp_path / "info").mkdir()
    (tmp_path / "info" / "C.txt").write_text("Z\t30\nX\t10\nY\t20\n")
    for split in ("train", "valid", "test"):
        write_csv(tmp_path / split / "C.csv", D3_COLUMNS[:5], [[split, "[]", "[]", "[30, 10]", 20]])
    data = D3Source(str(tmp_path), "C").load()
    assert data.catalog.item_ids == (10, 20, 30)
    assert as_tuples(data.test) == [("test", (2, 0), 1)]


def rewrite_cell(path: Path, row: int, column: str, value: str) -> None:
    """Set one cell (row 0 = first data row) of a CSV."""
    with path.open(newline="", encoding="utf-8") as file:
        records = list(csv.reader(file))
    records[row + 1][records[0].index(column)] = value
    write_csv(path, records[0], records[1:])


def layout_source(minionerec_dir: Path, d3_dir: Path, layout: str):
    """The data folder of `layout` and a source reading it."""
    if layout == "minionerec":
        return minionerec_dir, MiniOneRecSource(str(minionerec_dir), CATEGORY)
    return d3_dir, D3Source(str(d3_dir), CATEGORY)


def error_of(source) -> str:
    with pytest.raises(DataFileError) as error:
        source.load()
    return str(error.value)


@pytest.mark.parametrize(
    "column, value, problem",
    [
        ("history_item_id", "[0, 1", "not a Python list literal"),
        ("history_item_id", "__import__('os')", "not a Python list literal"),
        ("history_item_id", "[0, 'a']", "expected a list of integers"),
        ("history_item_id", "(0, 1)", "expected a list of integers"),
        ("history_item_id", "[0, 99]", "item id 99 is not in the catalog"),
        ("item_id", "77", "item id 77 is not in the catalog"),
        ("item_id", "x1", "not an integer"),
    ],
)
@pytest.mark.parametrize("layout", ["minionerec", "d3"])
def test_bad_cells_name_file_line_and_field(minionerec_dir, d3_dir, layout, column, value, problem):
    root, source = layout_source(minionerec_dir, d3_dir, layout)
    path = root / "train" / f"{FILE_NAME}.csv"
    rewrite_cell(path, 2, column, value)
    message = error_of(source)
    # header on line 1, first row on line 2, the second row spans lines 3-4 (its title
    # "Ball, red\nlarge" holds a newline), so the third row starts on line 5
    assert message.startswith(f"{path}, line 5, field {column!r}: {problem}")


def test_missing_column(minionerec_dir):
    path = minionerec_dir / "valid" / f"{FILE_NAME}.csv"
    header = [c for c in MINIONEREC_COLUMNS if c != "history_item_id"]
    write_csv(path, header, [["u1", "[]", "Ball", 0, "[]", "<a_1>"]])
    message = error_of(MiniOneRecSource(str(minionerec_dir), CATEGORY))
    assert f"{path}, line 1, field 'history_item_id': missing column" in message


def test_row_with_wrong_field_count(minionerec_dir):
    path = minionerec_dir / "test" / f"{FILE_NAME}.csv"
    with path.open("a", encoding="utf-8") as file:
        file.write("u9,only-two-fields\n")
    message = error_of(MiniOneRecSource(str(minionerec_dir), CATEGORY))
    assert f"{path}, line 4: 2 fields, header has 7" in message


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_empty_split(minionerec_dir, split):
    path = write_csv(minionerec_dir / split / f"{FILE_NAME}.csv", MINIONEREC_COLUMNS, [])
    assert (
        error_of(MiniOneRecSource(str(minionerec_dir), CATEGORY))
        == f"{path}: the split has no rows"
    )


def test_file_without_header(minionerec_dir):
    path = minionerec_dir / "valid" / f"{FILE_NAME}.csv"
    path.write_text("")
    assert "line 1: the file is empty" in error_of(MiniOneRecSource(str(minionerec_dir), CATEGORY))


def test_bad_index_json_entry(minionerec_dir):
    path = minionerec_dir / "index" / f"{CATEGORY}.index.json"
    path.write_text(json.dumps({**{str(k): v for k, v in SIDS.items()}, "3": "<a_5><b_0>"}))
    message = error_of(MiniOneRecSource(str(minionerec_dir), CATEGORY))
    assert f"{path}, key '3': expected a non-empty list of SID tokens" in message


def test_index_and_item_files_must_cover_the_same_items(minionerec_dir):
    index_path = minionerec_dir / "index" / f"{CATEGORY}.index.json"
    index_path.write_text(json.dumps({str(k): v for k, v in SIDS.items() if k != 2}))
    assert error_of(MiniOneRecSource(str(minionerec_dir), CATEGORY)) == (
        f"{index_path}, key '2': no entry for item id 2"
    )


def test_item_json_without_title(minionerec_dir):
    path = minionerec_dir / "index" / f"{CATEGORY}.item.json"
    path.write_text(json.dumps({"0": {"title": "Ball"}, "1": {"name": "Kite"}}))
    message = error_of(MiniOneRecSource(str(minionerec_dir), CATEGORY))
    assert f"{path}, key '1': expected an object with a string 'title'" in message


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("Ball\t0\nKite 1\n", 2, "expected 'title<TAB>item_id'"),
        ("Ball\t0\nKite\tone\n", 2, "field 'item_id': not an integer"),
        ("Ball\t0\n\nKite\t0\n", 3, "field 'item_id': item id 0 repeats"),
        ("Ball\t0\nKi\tte\t1\n", 2, "field 'title': the title 'Ki\\tte' holds a tab"),
        ("<a_1><b_2>\tBall\t0\n", 1, "field 'title'"),  # MiniOneRec's 3-column info file
        ("Ball\t0\n\t1\n", 2, "field 'title': the title is empty"),
        ("Ball\t0\n  \t1\n", 2, "field 'title': the title is empty"),
    ],
)
def test_bad_info_file(d3_dir, text, line, problem):
    path = d3_dir / "info" / f"{FILE_NAME}.txt"
    path.write_text(text)
    message = error_of(D3Source(str(d3_dir), CATEGORY))
    assert message.startswith(f"{path}, line {line}") and problem in message


def test_sid_prefix_of_another_names_the_index_file(minionerec_dir):
    path = minionerec_dir / "index" / f"{CATEGORY}.index.json"
    path.write_text(json.dumps({**{str(k): v for k, v in SIDS.items()}, "3": ["<a_1>", "<b_2>"]}))
    message = error_of(MiniOneRecSource(str(minionerec_dir), CATEGORY))
    assert message.startswith(f"{path}, key '3': SID ['<a_1>', '<b_2>'] has 2 tokens")


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
@pytest.mark.parametrize("layout", ["minionerec", "d3"])
def test_trailing_blank_lines_are_ignored(minionerec_dir, d3_dir, layout, line_end):
    root, source = layout_source(minionerec_dir, d3_dir, layout)
    for split in ("train", "valid", "test"):
        with (root / split / f"{FILE_NAME}.csv").open("a", newline="", encoding="utf-8") as file:
            file.write(line_end * 2)
    data = source.load()
    for split in ("train", "valid", "test"):
        assert as_tuples(data.split(split)) == expected_samples(split)


def prepend_byte_order_mark(path: Path) -> None:
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())


def test_byte_order_marks_are_dropped(minionerec_dir, d3_dir):
    for path in [*minionerec_dir.glob("*/*"), *d3_dir.glob("*/*")]:
        prepend_byte_order_mark(path)
    minionerec = MiniOneRecSource(str(minionerec_dir), CATEGORY).load()
    d3 = D3Source(str(d3_dir), CATEGORY).load()
    assert minionerec.catalog.titles == tuple(TITLES[i] for i in range(5))
    assert d3.catalog.titles[3] == "Ball, red large"  # the first line of the info file
    for data in (minionerec, d3):
        for split in ("train", "valid", "test"):
            assert as_tuples(data.split(split)) == expected_samples(split)


@pytest.mark.parametrize(
    "layout, relative_path, line",
    [
        ("minionerec", f"train/{FILE_NAME}.csv", 3),
        ("minionerec", f"index/{CATEGORY}.item.json", 1),
        ("minionerec", f"index/{CATEGORY}.index.json", 1),
        ("d3", f"info/{FILE_NAME}.txt", 2),
    ],
)
def test_non_utf8_byte_names_file_and_line(minionerec_dir, d3_dir, layout, relative_path, line):
    root, source = layout_source(minionerec_dir, d3_dir, layout)
    path = root / relative_path
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = b"\xe9" + lines[line - 1]  # Latin-1 'é'
    path.write_bytes(b"\n".join(lines))
    assert error_of(source).startswith(f"{path}, line {line}: byte 0xe9 is not UTF-8")


def write_split(root: Path, layout: str, split: str, rows: list[tuple]) -> Path:
    path = root / split / f"{FILE_NAME}.csv"
    if layout == "minionerec":
        return write_csv(path, MINIONEREC_COLUMNS, [minionerec_row(*row) for row in rows])
    return write_csv(path, D3_COLUMNS, [d3_row(*row) for row in rows])


@pytest.mark.parametrize("layout", ["minionerec", "d3"])
def test_repeated_rows_warn_with_counts_or_fail_when_strict(minionerec_dir, d3_dir, layout):
    root, source = layout_source(minionerec_dir, d3_dir, layout)
    train = write_split(root, layout, "train", [*ROWS["train"], ROWS["train"][0], ROWS["train"][0]])
    test = write_split(root, layout, "test", [ROWS["test"][0], ROWS["train"][2], ROWS["train"][0]])
    with pytest.warns(UserWarning, match="repeated rows") as caught:
        data = source.load()
    assert len(caught) == 1
    # the second train row spans lines 3-4 (its target's title holds a newline)
    assert str(caught[0].message).splitlines()[1:] == [
        f"{train}, line 6: 2 row(s) repeat an earlier row of the file (the first repeats line 2)",
        f"{test}, line 3: 2 test row(s) are also train rows of {train} (the first is its line 5)",
    ]
    assert len(data.train) == 5 and len(data.test) == 3  # warned, not dropped
    source.strict = True
    assert error_of(source) == (
        f"{train}, line 6: 2 row(s) repeat an earlier row of the file (the first repeats line 2)"
    )


@pytest.mark.parametrize("source_class", [MiniOneRecSource, D3Source])
def test_missing_data_folder_names_the_setting(tmp_path, source_class):
    with pytest.raises(FileNotFoundError, match="data.source.init_args.data_dir") as error:
        source_class(str(tmp_path / "absent"), CATEGORY).load()
    assert f"{source_class.__name__}: data folder '{tmp_path / 'absent'}' does not exist" in str(
        error.value
    )


def test_split_file_must_match_exactly_once(minionerec_dir):
    (minionerec_dir / "valid" / f"{FILE_NAME}.csv").rename(minionerec_dir / "valid" / "x.csv")
    with pytest.raises(FileNotFoundError, match=re.escape(f"'{CATEGORY}*.csv'") + ".*found: none"):
        MiniOneRecSource(str(minionerec_dir), CATEGORY).load()
    write_csv(minionerec_dir / "train" / f"{CATEGORY}_copy.csv", MINIONEREC_COLUMNS, [])
    with pytest.raises(FileNotFoundError, match="found: Toys_5_2016-10-2018-11.csv, Toys_copy.csv"):
        MiniOneRecSource(str(minionerec_dir), CATEGORY).load()


@pytest.mark.real_data
@pytest.mark.parametrize(
    "category, items, distinct_sids, rows",
    [
        ("Office_Products", 3459, 3444, {"train": 9484, "valid": 4866, "test": 4866}),
        ("Industrial_and_Scientific", 3686, 3670, {"train": 10393, "valid": 4532, "test": 4533}),
    ],
)
def test_real_minionerec_data(amazon18_dir, category, items, distinct_sids, rows):
    data = MiniOneRecSource(str(amazon18_dir), category).load()
    assert len(data.catalog) == items
    for split, count in rows.items():
        assert len(data.split(split)) == count
    raw_sids = {tuple(sid[:3]) for sid in data.catalog.sids}
    assert len(raw_sids) == distinct_sids
    colliding = [sid for sid in data.catalog.sids if len(sid) == 4]
    # every member of a colliding group got a <d_k>; the groups are exactly the lost SIDs
    assert len(colliding) - len({sid[:3] for sid in colliding}) == items - distinct_sids
    assert len(set(data.catalog.sids)) == items
    codes = SIDCodec().encode(data.catalog, build_tokenizer(data.catalog, SIDCodec()))
    assert len({tuple(code) for code in codes}) == items
    # the CSV target columns agree with the catalog built from index/*.json
    with (amazon18_dir / "test" / f"{category}_5_2016-10-2018-11.csv").open(newline="") as file:
        first = next(csv.DictReader(file))
    sample = data.test[0]
    assert data.catalog.titles[sample.target] == first["item_title"]
    assert "".join(data.catalog.sids[sample.target][:3]) == first["item_sid"]
