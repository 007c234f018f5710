"""No tracked text file holds git conflict markers (a merge once committed some into README.md unnoticed)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Built from parts so that this file does not contain the markers it looks for.
OURS, THEIRS, MIDDLE = "<" * 7 + " ", ">" * 7 + " ", "=" * 7
"""A conflict's start (``<<<<<<< ours``), end (``>>>>>>> theirs``) and divider (exactly seven ``=``)."""


def conflict_marker_lines(path: str, text: str) -> list[int]:
    """1-based numbers of the lines of ``text`` that are conflict markers.

    A line of exactly seven ``=`` is a valid reStructuredText heading underline, so it counts only outside
    ``.rst`` files.
    """
    check_middle = not path.endswith(".rst")
    return [
        n
        for n, line in enumerate(text.splitlines(), 1)
        if line.startswith((OURS, THEIRS)) or (check_middle and line == MIDDLE)
    ]


def tracked_text_files() -> dict[str, str]:
    """Path -> content of every file git tracks that decodes as text (binary files are skipped)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no tracked files to check")
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
    ).stdout.split(b"\0")
    files = {}
    for name in filter(None, names):
        path = ROOT / name.decode()
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):  # deleted in the work tree but not yet in the index
            continue
        if b"\0" in data:
            continue
        files[name.decode()] = data.decode("utf-8", errors="replace")
    return files


def test_the_detector_finds_every_kind_of_marker():
    text = "\n".join(["a", OURS + "HEAD", "b", MIDDLE, "c", THEIRS + "main", MIDDLE + "=", " " + MIDDLE])
    assert conflict_marker_lines("README.md", text) == [2, 4, 6]
    assert conflict_marker_lines("docs/index.rst", text) == [2, 6]  # rst heading underlines are fine


def test_no_tracked_text_file_contains_conflict_markers():
    files = tracked_text_files()
    assert "README.md" in files and len(files) > 50, "git ls-files listed too little: the check would prove nothing"
    found = {path: lines for path, text in files.items() if (lines := conflict_marker_lines(path, text))}
    assert not found, f"git conflict markers (file: line numbers): {found}"
