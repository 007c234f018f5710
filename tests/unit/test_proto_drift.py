"""Generated wire code must match what `make proto` produces from proto/ right now."""

from pathlib import Path

from marlmesh import protogen

GENERATED = Path(protogen.__file__).parent / "v1"


def test_generated_code_has_not_drifted(tmp_path):
    protogen.generate(tmp_path)
    fresh = tmp_path / "marlmesh" / "v1"
    fresh_names = sorted(p.name for p in fresh.iterdir() if p.is_file())
    committed = sorted(p.name for p in GENERATED.iterdir() if p.is_file())
    assert fresh_names == committed, "run `make proto` and commit marlmesh/v1"
    for name in fresh_names:
        assert (fresh / name).read_bytes() == (GENERATED / name).read_bytes(), f"{name} drifted: run `make proto`"


def test_every_proto_is_generated():
    stems = {p.stem for p in protogen.proto_files()}
    assert stems == {"bus", "control", "env", "learner", "tensor"}
    for stem in stems:
        assert (GENERATED / f"{stem}_pb2.py").is_file()
