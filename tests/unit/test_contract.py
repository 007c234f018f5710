"""The process contract: declared once, read with clear errors, used everywhere, documented from itself."""

from __future__ import annotations

import argparse
import ast
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_service import __main__ as agent_main
from env_service import __main__ as env_main
from learner_service import __main__ as learner_main
from marlmesh import contract, process
from marlmesh.bench import edge

ROOT = Path(__file__).resolve().parents[2]
SERVICES_PAGE = ROOT / "docs" / "services.md"
SKIP_DIRS = {".git", ".venv", "__pycache__", "runs", "build", "dist", "sweeps", ".pytest_cache", ".ruff_cache"}
GENERATED = ROOT / "marlmesh" / "v1"
"""Generated wire code (a protobuf field-number constant there shares the prefix; it is no variable)."""
NAME = re.compile(rf"\b{contract.PREFIX}[A-Z0-9_]*[A-Z0-9]")


def repo_files(*patterns: str) -> Iterator[Path]:
    """The repository's own files matching any glob pattern (no venvs, caches, run output or generated code)."""
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        if Path(folder) == GENERATED or GENERATED in Path(folder).parents:
            continue
        for name in files:
            if any(Path(name).match(p) for p in patterns):
                yield Path(folder) / name


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No contract variable set (the parsers read the real environment)."""
    for var in contract.VARIABLES:
        monkeypatch.delenv(var.name, raising=False)
    return monkeypatch


# -- the declarations -------------------------------------------------------------------------------------
def test_every_variable_is_declared_once_with_a_meaning_readers_and_a_valid_default() -> None:
    names = [v.name for v in contract.VARIABLES]
    assert len(names) == len(set(names)), "a variable is declared twice"
    assert len(names) >= 28
    services = {contract.Role.ENV, contract.Role.AGENT, contract.Role.LEARNER}
    for var in contract.VARIABLES:
        assert var.name.startswith(contract.PREFIX) and var.name.isupper(), var.name
        assert var.meaning.endswith(".") and "|" not in var.meaning, f"{var.name}: meaning must be one table cell"
        assert var.read_by and var.read_by <= services, f"{var.name}: only service processes read variables"
        assert var.kind is not contract.Kind.CHOICE or var.choices, var.name
        assert not var.choices or var.kind in (contract.Kind.CHOICE, contract.Kind.PORT), var.name  # port: `auto`
        if var.default is not None:
            var.check(var.default)
        assert contract.by_name(var.name) is var
    for role in services:  # one process never has two variables behind one flag
        flags = [v.flag for v in contract.VARIABLES if v.flag and role in v.read_by]
        assert len(flags) == len(set(flags)), role
    with pytest.raises(KeyError, match="not a variable of the process contract"):
        contract.by_name(contract.PREFIX + "NOPE")


def test_default_ports_are_the_defaults_of_their_variables() -> None:
    assert contract.ENV_PORT.integer({}) == contract.DEFAULT_ENV_PORT == 50051
    assert contract.LEARNER_PORT.integer({}) == contract.DEFAULT_LEARNER_PORT == 50061
    assert contract.AGENT_PORT.integer({}) == contract.DEFAULT_AGENT_PORT == 50071
    assert contract.BUS_BASE_PORT.integer({}) == contract.DEFAULT_BUS_BASE_PORT == 47000
    assert contract.GOSSIP_BASE_PORT.integer({}) == contract.DEFAULT_GOSSIP_BASE_PORT == 48000
    assert contract.ENV_ADDR.value({}) == f"127.0.0.1:{contract.DEFAULT_ENV_PORT}"
    assert contract.LEARNER_ADDR.value({}) == f"127.0.0.1:{contract.DEFAULT_LEARNER_PORT}"
    assert {name for name, _, _ in contract.PORTS} == {
        n for n in vars(contract) if n.startswith("DEFAULT_") and n.endswith("_PORT")
    }


# -- reading values ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("var", "raw", "problem"),
    [
        (contract.AGENT_PORT, "x", "not an integer"),
        (contract.ENV_PORT, "5005l", "not an integer"),
        (contract.BUS_BASE_PORT, "70000", r"not a port number \(0-65535\)"),
        (contract.METRICS_PORT, "-1", r"not a port number \(0-65535\)"),
        (contract.NUM_AGENTS, "three", "not an integer"),
        (contract.MODE, "evaluate", "expected one of train, eval"),
        (contract.RUNTIME, "TORCH", "expected one of torch, onnx"),
    ],
)
def test_a_bad_value_fails_naming_the_variable_and_the_value(var: contract.Variable, raw: str, problem: str) -> None:
    with pytest.raises(contract.ContractError, match=rf"^{var.name}='{raw}': {problem}"):
        var.value({var.name: raw})
    assert isinstance(contract.ContractError("x"), ValueError), "callers that catch ValueError keep working"


def test_values_defaults_and_empty_variables() -> None:
    assert contract.AGENT_PORT.integer({contract.AGENT_PORT.name: "0"}) == 0
    assert contract.BUS_BASE_PORT.integer({contract.BUS_BASE_PORT.name: "6000"}) == 6000
    assert contract.MODE.value({contract.MODE.name: "eval"}) == "eval"
    assert contract.MODE.value({contract.MODE.name: ""}) == "train", "empty counts as unset"
    assert contract.HOST.value({contract.HOST.name: ""}) is None
    assert contract.NUM_AGENTS.integer({}) is None
    with pytest.raises(TypeError, match=f"{contract.ENV_ADDR.name} holds a host:port, not a number"):
        contract.ENV_ADDR.integer({})
    assert contract.CONFIG.value({contract.CONFIG.name: "/etc/marlmesh/config.yaml"}) == "/etc/marlmesh/config.yaml"
    assert [contract.agent_index(raw) for raw in ("2", "agents-12", "my-agents-0", "agents", "2-x", "")] == [
        2, 12, 0, None, None, None,
    ]  # fmt: skip


def test_the_service_parsers_take_defaults_from_the_variables_and_flags_beat_them(
    clean_env: pytest.MonkeyPatch,
) -> None:
    ns = agent_main.parser().parse_args([])
    assert (ns.port, ns.mode, ns.runtime, ns.env_addr) == (50071, "train", "torch", "127.0.0.1:50051")
    assert (ns.metrics_port, ns.config, ns.agent_id, ns.policy_dir) == (0, None, None, None)
    assert env_main.parser().parse_args([]).port == 50051
    assert learner_main.parser().parse_args([]).port == 50061
    clean_env.setenv(contract.MODE.name, "eval")
    clean_env.setenv(contract.AGENT_PORT.name, "6001")
    clean_env.setenv(contract.POLICY_DIR.name, "/policy")
    ns = agent_main.parser().parse_args([])
    assert (ns.mode, ns.port, ns.policy_dir) == ("eval", 6001, Path("/policy"))
    ns = agent_main.parser().parse_args(["--mode", "train", "--port", "7"])
    assert (ns.mode, ns.port) == ("train", 7)


@pytest.mark.parametrize(
    ("main", "var", "raw", "problem"),
    [
        (env_main, contract.ENV_PORT, "port", "not an integer"),
        (agent_main, contract.MODE, "evl", "expected one of train, eval"),
        (learner_main, contract.METRICS_PORT, "99999", r"not a port number \(0-65535\)"),
    ],
)
def test_a_bad_variable_stops_a_service_with_one_line_naming_it(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], main, var, raw: str, problem: str
) -> None:  # noqa: ANN001
    clean_env.setenv(var.name, raw)
    with pytest.raises(SystemExit) as exit_info:
        main.parser()
    assert exit_info.value.code == 2
    assert re.fullmatch(rf"{main.ROLE}: error: {var.name}='{raw}': {problem}\n", capsys.readouterr().err)


# -- no second copy of a name -----------------------------------------------------------------------------
def _strings_outside_docs(tree: ast.AST) -> Iterator[ast.Constant]:
    """String constants of a module that are not documentation (a bare string statement is documentation)."""
    docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node


def test_no_marlmesh_variable_name_is_spelled_outside_the_contract() -> None:
    offenders = []
    for path in repo_files("*.py"):
        if path == ROOT / "marlmesh" / "contract.py":
            continue
        for node in _strings_outside_docs(ast.parse(path.read_text(), str(path))):
            if contract.PREFIX in node.value:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not offenders, "use the entries of marlmesh/contract.py (e.g. contract.ENV_ADDR.name):\n" + "\n".join(
        offenders
    )


def test_every_marlmesh_name_in_code_docs_and_manifests_is_declared() -> None:
    declared = {v.name for v in contract.VARIABLES}
    undeclared = []
    for path in repo_files("*.py", "*.md", "*.yaml", "*.yml", "*.toml", "*.sh", "Dockerfile", "Makefile"):
        for name in set(NAME.findall(path.read_text(errors="replace"))):
            # a prefix such as MARLMESH_TLS_* or MARLMESH_GOSSIP_* names a family of declared variables
            if name not in declared and not any(d.startswith(name + "_") for d in declared):
                undeclared.append(f"{path.relative_to(ROOT)}: {name}")
    assert not undeclared, "not declared in marlmesh/contract.py:\n" + "\n".join(sorted(undeclared))


# -- the reference page -----------------------------------------------------------------------------------
def test_the_services_page_holds_the_table_generated_from_the_contract() -> None:
    committed = contract.committed_block(SERVICES_PAGE)
    assert committed == contract.markdown(), (
        f"docs/services.md is out of date with marlmesh/contract.py; regenerate it: {contract.REGENERATE}"
    )
    for var in contract.VARIABLES:
        assert f"| `{var.name}` |" in committed


def test_the_ports_the_services_page_names_by_hand_are_the_contracts() -> None:
    text = SERVICES_PAGE.read_text().replace(contract.committed_block(SERVICES_PAGE), "")
    named = {int(n) for n in re.findall(r"\b(\d{5})\b", text)}
    assert named and named <= {port for _, port, _ in contract.PORTS}, named


def test_update_rewrites_only_the_generated_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"# Title\n\nintro\n\n{contract.BEGIN_MARKER}\n| stale |\n{contract.END_MARKER}\n\nafter\n")
    assert contract.main(["--update", str(page)]) == 0
    assert page.read_text() == f"# Title\n\nintro\n\n{contract.markdown()}\nafter\n"
    assert "updated" in capsys.readouterr().out
    assert contract.update_page(page) is False, "a second run changes nothing"
    assert contract.main(["--markdown"]) == 0
    assert capsys.readouterr().out == contract.markdown()
    page.write_text("# no markers\n")
    assert contract.main(["--update", str(page)]) == 2
    assert "no <!-- contract:begin --> ... <!-- contract:end --> block" in capsys.readouterr().err
    assert page.read_text() == "# no markers\n"


def _documented_flags(section: str) -> set[str]:
    """The flags in the first column of the section's tables."""
    return set(re.findall(r"^\| `(--[a-z0-9-]+)", section, re.MULTILINE))


def _sections() -> dict[str, str]:
    parts = re.split(r"^## (.+)$", SERVICES_PAGE.read_text(), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings if s.startswith("--")} - {"--help"}


def test_the_services_page_documents_exactly_the_flags_of_each_process(clean_env: pytest.MonkeyPatch) -> None:
    sections = _sections()
    shared = _flags(process.base_parser("env_service", "", contract.ENV_PORT))
    assert _documented_flags(sections["Flags every service shares"]) == shared
    for title, main in (("env_service", env_main), ("agent_service", agent_main), ("learner_service", learner_main)):
        assert _documented_flags(sections[title]) == _flags(main.parser()) - shared, title
    bench = argparse.ArgumentParser()
    edge.add_arguments(bench)
    assert _documented_flags(sections["The edge runner"]) == _flags(bench)
