"""The documentation's relative links resolve: every markdown link or image of README.md,
docs/*.md, configs/README.md, benchmarks/README.md and experiments/README.md that is not a
URL names a file or folder of the repository and, after a `#`, a heading of that file
(GitHub's anchor slugs) or an explicit `<a id=...>` / `<a name=...>` anchor."""

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted(
    path
    for path in [
        REPO / "README.md",
        *(REPO / "docs").glob("*.md"),
        REPO / "configs" / "README.md",
        REPO / "benchmarks" / "README.md",
        REPO / "experiments" / "README.md",
    ]
    if path.is_file()
)
#: the README's size limit (issue 22: a front page, not a lab notebook)
README_LIMIT = 12_000

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", flags=re.S | re.M)
INLINE_CODE = re.compile(r"(`+).+?\1", flags=re.S)
#: [text](target) and ![alt](target), the target up to whitespace or ")"; an optional title
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'][^)]*)?\)")
#: [label]: target
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", flags=re.M)
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)[ \t]*#*[ \t]*$", flags=re.M)
HTML_ANCHOR = re.compile(r"<a\s[^>]*?(?:id|name)=[\"']([^\"']+)[\"']", flags=re.I)
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", flags=re.I)


def strip_code(text: str) -> str:
    """The text without fenced code blocks and inline code spans (links there are code)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text lower-cased, every character other
    than a letter, digit, `_`, `-` or space dropped, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")
    text = unicodedata.normalize("NFC", text).strip().lower()
    text = "".join(
        char for char in text if char in "-_ " or unicodedata.category(char)[0] in ("L", "M", "N")
    )
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a markdown file: one per heading (repeats get -1, -2, ...),
    plus explicit HTML anchors."""
    text = path.read_text()
    found: set[str] = set(HTML_ANCHOR.findall(text))
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    text = strip_code(path.read_text())
    return [*LINK.findall(text), *REFERENCE.findall(text)]


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in links(path):
        if not target or EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and unquote(anchor) not in anchors(linked):
            broken.append(f"{target}: no heading with the anchor #{anchor}")
    return broken


def test_documents_found():
    assert REPO / "README.md" in DOCUMENTS and len(DOCUMENTS) >= 4


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(REPO)))
def test_relative_links_resolve(document: Path):
    assert broken_links(document) == []


def test_readme_is_a_front_page():
    assert len((REPO / "README.md").read_bytes()) <= README_LIMIT


def test_readme_results_table_is_the_study_reports():
    """Every row of the README's Results table is a row of the generated summary in
    experiments/README.md (`python -m experiments.study --report`), so the front page's
    numbers cannot drift from the result files."""
    readme = (REPO / "README.md").read_text()
    results = readme.split("\n## Results\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in results.splitlines() if line.startswith("| ")]
    summary = (REPO / "experiments" / "README.md").read_text()
    summary = summary.split("### Summary: the headline rows", 1)[1].split("\n### ", 1)[0]
    assert rows and all(row in summary.splitlines() for row in rows)


def test_slugs_follow_github():
    assert slug("11. Consistency: which objectives keep the true order, and the variants") == (
        "11-consistency-which-objectives-keep-the-true-order-and-the-variants"
    )
    assert slug("(b) The D3 / BIGRec / ReRe layout") == "b-the-d3--bigrec--rere-layout"
    assert slug("GPU, LoRA, 4-bit, many GPUs") == "gpu-lora-4-bit-many-gpus"
    assert slug("`wpauc fit` and *its* [flags](x.md)") == "wpauc-fit-and-its-flags"


def test_broken_links_are_found(tmp_path):
    (tmp_path / "other.md").write_text("# A heading\n\n## Same\n\n## Same\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-heading) [ok](other.md#same-1) [ok](#local) [web](https://x.org/y)\n"
        "# Local\n\n`[code](missing.md)`\n\n```\n[code](missing.md)\n```\n"
        "[bad](missing.md) ![bad](img.png) [bad](other.md#nowhere) [bad](#nowhere)\n"
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "img.png: no such file",
        "other.md#nowhere: no heading with the anchor #nowhere",
        "#nowhere: no heading with the anchor #nowhere",
    ]
