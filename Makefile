# marlmesh developer entry points. Everything runs from the project virtualenv in .venv/.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONFIG ?= configs/default.yaml

.PHONY: install train test lint proto image clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[train,dev,analysis]'
	touch $(STAMP)

## Train the default job (installs first if needed), then evaluate it and print the run directory.
train: install
	$(BIN)/marlmesh train -c $(CONFIG)

## Lint and run the whole test suite (what .ci/run calls).
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -ra --durations=15

## Style and the import layers (pyproject.toml, [tool.importlinter]).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

## Regenerate the protobuf/gRPC code in marlmesh/v1 from proto/marlmesh/v1 (committed; a test checks drift).
proto: install
	$(BIN)/python -m marlmesh.protogen

## Build both images, marlmesh:train and marlmesh:edge (the Dockerfile's build arguments; docs/deployment.md).
## Offline: make image BASE_IMAGE=local/python:bookworm TORCH_INDEX_URL= PIP_NO_INDEX=1 (wheels in docker/wheels).
IMAGE ?= marlmesh
BASE_IMAGE ?= python:3.11-slim
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
WHEELS ?= docker/wheels
PIP_INDEX_URL ?=
PIP_NO_INDEX ?=
DOCKER ?= docker
IMAGE_ARGS = --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg TORCH_INDEX_URL=$(TORCH_INDEX_URL) \
	--build-arg WHEELS=$(WHEELS) $(if $(PIP_INDEX_URL),--build-arg PIP_INDEX_URL=$(PIP_INDEX_URL)) \
	$(if $(PIP_NO_INDEX),--build-arg PIP_NO_INDEX=$(PIP_NO_INDEX))

image:
	$(DOCKER) build --target train -t $(IMAGE):train $(IMAGE_ARGS) .
	$(DOCKER) build --target edge -t $(IMAGE):edge $(IMAGE_ARGS) .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .import_linter_cache
