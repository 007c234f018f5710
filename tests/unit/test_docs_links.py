"""Every relative link in README.md and docs/**/*.md points at an existing file, folder or heading anchor."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Pages another tool writes into docs/ (the process contract's variable table); a link to one of them is
#: accepted while the page is absent from this checkout, and checked like any other once it is there.
GENERATED_PAGES = {ROOT / "docs" / "services.md"}

_FENCE = re.compile(r"^(```|~~~)")
_INLINE_CODE = re.compile(r"`[^`]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md and every markdown file under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in _prose_lines(path.read_text()):
        match = _HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def broken_links(path: Path) -> list[str]:
    """Relative links of ``path`` whose file, folder or anchor does not exist, as ``file:line: target (why)``."""
    problems = []
    text = path.read_text()
    for number, line in _prose_lines(text):
        for target in _LINK.findall(_INLINE_CODE.sub("", line)):
            if _EXTERNAL.match(target):
                continue
            where, _, anchor = target.partition("#")
            dest = (path.parent / where).resolve() if where else path
            if not dest.exists():
                if dest not in GENERATED_PAGES:
                    problems.append(f"{path.name}:{number}: {target} (no such file)")
                continue
            if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{path.name}:{number}: {target} (no heading #{anchor} in {dest.name})")
    return problems


def test_every_relative_link_in_the_docs_resolves() -> None:
    files = doc_files()
    assert len(files) > 10, f"found only {[str(f) for f in files]}: the check would prove little"
    problems = [p for f in files for p in broken_links(f)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_check_finds_a_missing_file_a_missing_anchor_and_ignores_code(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## The `bus`: rounds\n\n## Twice\n\n## Twice\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](docs/page.md#the-bus-rounds) [ok](docs/page.md#twice-1) [ok](docs/) [ok](#top) [ok](https://x.y/z)\n"
        "# Top\n"
        "[gone](docs/missing.md) [bad anchor](docs/page.md#nowhere) ![img](docs/fig.png)\n"
        "`[in code](docs/nothing.md)`\n"
        "```\n[in a block](docs/nothing.md)\n```\n"
    )
    assert broken_links(readme) == [
        "README.md:3: docs/missing.md (no such file)",
        "README.md:3: docs/page.md#nowhere (no heading #nowhere in page.md)",
        "README.md:3: docs/fig.png (no such file)",
    ]
    assert doc_files(tmp_path) == [readme, tmp_path / "docs" / "page.md"]
