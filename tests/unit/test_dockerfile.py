"""The Dockerfile and ``make image``: a train and an edge target, non-root, the torch pin of pyproject, no torch on
the edge, the base image and the torch source as build arguments (no image is built here)."""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def extra(name: str) -> list[str]:
    """An optional-dependency list of pyproject.toml (one line each there; tomllib is not in Python 3.10)."""
    m = re.search(rf"^{name} = (\[.*\])$", (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert m, f"no '{name} = [...]' line in pyproject.toml"
    return ast.literal_eval(m.group(1))


def stages() -> dict[str, list[str]]:
    """Instructions (continuation lines joined) of every named stage."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.IGNORECASE)
        if m:
            current = m.group(2)
            out[current] = [f"FROM {m.group(1)}"]
        elif current is not None:
            out[current].append(line)
    return out


def parents(name: str, all_stages: dict[str, list[str]]) -> list[str]:
    chain = [name]
    while (base := all_stages[chain[-1]][0].split()[1]) in all_stages:
        chain.append(base)
    return chain


def test_train_and_edge_targets_run_as_non_root() -> None:
    all_stages = stages()
    assert {"train", "edge"} <= set(all_stages)
    for target in ("train", "edge"):
        users = [i for i in all_stages[target] if i.startswith("USER ")]
        assert users and users[-1].split()[1].split(":")[0] not in ("root", "0")


def copied_from(target: str, all_stages: dict[str, list[str]]) -> str:
    """The stage whose /opt/venv the target copies."""
    src = next(line for line in all_stages[target] if line.startswith("COPY --from="))
    return re.search(r"--from=(\S+)", src).group(1)


def test_train_image_pins_the_cpu_torch_of_pyproject() -> None:
    pin = next(d for d in extra("train") if d.startswith("torch"))
    all_stages = stages()
    build = " ".join(all_stages[copied_from("train", all_stages)])
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in build, "the CPU index is the default"
    torch_first = build.index(f'pip install {pin} ${{TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}}')
    assert torch_first < build.index("pip install '.[train]'"), "torch must come from its source first"


def test_the_base_image_and_the_wheel_folder_are_build_arguments() -> None:
    text = (ROOT / "Dockerfile").read_text()
    before_first_stage = text[: text.index("\nFROM ")]
    assert "\nARG BASE_IMAGE=python:3.11-slim\n" in before_first_stage
    assert "# syntax=" not in text, "a syntax line makes BuildKit pull a frontend image (no offline build)"
    all_stages = stages()
    assert all_stages["base"][0] == "FROM ${BASE_IMAGE}"
    for target in ("train", "edge"):
        assert parents(target, all_stages)[-1] == "base", target
    source = all_stages["source"]
    assert {"ARG WHEELS=docker/wheels", "COPY ${WHEELS} /wheels", "ENV PIP_FIND_LINKS=/wheels"} <= set(source)
    assert (ROOT / "docker" / "wheels").is_dir()
    for builder in ("build-train", "build-edge"):
        assert {"ARG PIP_INDEX_URL", "ARG PIP_NO_INDEX"} <= set(all_stages[builder]), builder
        assert "source" in parents(builder, all_stages), builder


def make_image(*overrides: str) -> list[str]:
    """The commands ``make -n image`` would run (also when the suite itself runs under ``make test``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    res = subprocess.run(
        ["make", "--no-print-directory", "-n", "image", *overrides],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=30,
        env=env,
    )
    return res.stdout.splitlines()


def test_make_image_builds_both_targets_with_the_build_arguments() -> None:
    default = make_image()
    assert [shlex.split(c)[:5] for c in default] == [
        ["docker", "build", "--target", "train", "-t"],
        ["docker", "build", "--target", "edge", "-t"],
    ]
    for command in default:
        args = shlex.split(command)
        assert "BASE_IMAGE=python:3.11-slim" in args and "WHEELS=docker/wheels" in args
        assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in args
        assert not any(a.startswith("PIP_") for a in args)
    offline = make_image("BASE_IMAGE=local/python:bookworm", "TORCH_INDEX_URL=", "PIP_NO_INDEX=1", "IMAGE=m")
    assert [shlex.split(c)[5] for c in offline] == ["m:train", "m:edge"]
    for command in offline:
        args = shlex.split(command)
        assert {"BASE_IMAGE=local/python:bookworm", "TORCH_INDEX_URL=", "PIP_NO_INDEX=1"} <= set(args)


def test_edge_image_never_installs_torch() -> None:
    all_stages = stages()
    builder = copied_from("edge", all_stages)
    for stage in parents(builder, all_stages) + parents("edge", all_stages):
        text = " ".join(all_stages[stage])
        assert "torch==" not in text and "[train]" not in text, stage
    assert "[edge]" in " ".join(all_stages[builder])
    edge_extra = extra("edge")
    assert not any(d.startswith("torch") for d in edge_extra) and any(d.startswith("onnxruntime") for d in edge_extra)


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "runs"} <= set(ignored)
