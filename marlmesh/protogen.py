"""Generate the protobuf/gRPC Python code in ``marlmesh/v1`` from ``proto/marlmesh/v1``.

Run as ``python -m marlmesh.protogen`` (or ``make proto``). Needs the ``dev`` extra (pinned grpcio-tools).
The output is committed; ``tests/unit/test_proto_drift.py`` regenerates into a temporary folder and fails
if anything differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = PROJECT_ROOT / "proto"
PROTO_PACKAGE = Path("marlmesh") / "v1"


def proto_files() -> list[Path]:
    """Return the .proto files of the wire contract, relative to ``proto/``, sorted."""
    return sorted(p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / PROTO_PACKAGE).glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Generate ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` under ``out_root/marlmesh/v1``.

    Args:
        out_root: Folder that plays the role of the project root for the generated package path.

    Returns:
        The generated files.

    Raises:
        RuntimeError: If protoc reports an error.
    """
    from grpc_tools import protoc  # dev extra only

    out_dir = out_root / PROTO_PACKAGE
    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    files = [str(p) for p in proto_files()]
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *files,
    ]
    # protoc resolves the -I paths itself; run with the proto root as working directory for stable names.
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code} for {files}")
    init = out_dir / "__init__.py"
    init.write_text('"""Generated wire code (make proto). Never edit by hand."""\n')
    return sorted(out_dir.iterdir())


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT, help="output root (default: project root)")
    ns = parser.parse_args(argv)
    files = generate(ns.out)
    print(f"generated {len(files)} files in {ns.out / PROTO_PACKAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
