# marlmesh container images (multi-stage). `make image` builds both targets with the arguments below.
#
#   docker build --target train -t marlmesh:train .   # env_service, agent_service, learner_service (torch CPU)
#   docker build --target edge  -t marlmesh:edge  .   # torch-free agent: numpy + onnxruntime + pyzmq + grpcio
#
# Build arguments (docs/deployment.md, "Building offline"):
#   BASE_IMAGE       the image both targets start from: Python 3.10+ as `python` (with venv and pip), groupadd and
#                    useradd. Default python:3.11-slim; any local image works, e.g. one made by debootstrap.
#   TORCH_INDEX_URL  the package index torch==2.13.0 comes from (default: the CPU wheels of pytorch.org);
#                    empty: pip's own sources (PyPI or PIP_INDEX_URL, and WHEELS).
#   WHEELS           a folder in the build context whose wheels pip may install for every package (default
#                    docker/wheels, which holds none); put the torch wheel there, or every wheel for a build
#                    without any index (with PIP_NO_INDEX=1).
#   PIP_INDEX_URL, PIP_NO_INDEX   passed to pip as they are when given (a mirror; no index at all).
#
# Both run as the unprivileged user 10001 and write nothing outside mounted volumes (the manifests set
# readOnlyRootFilesystem), so bytecode caching is off.

ARG BASE_IMAGE=python:3.11-slim

# ---- common base: Python, non-root user ------------------------------------------------------------
FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 marlmesh \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent marlmesh
WORKDIR /app

# ---- sources shared by both builders, and the local wheels pip may use -------------------------------
FROM base AS source
ARG WHEELS=docker/wheels
COPY ${WHEELS} /wheels
ENV PIP_FIND_LINKS=/wheels
COPY pyproject.toml README.md ./
COPY marlmesh ./marlmesh
COPY env_service ./env_service
COPY agent_service ./agent_service
COPY learner_service ./learner_service
COPY comm_bus ./comm_bus

# ---- train builder: pinned CPU torch first, so '.[train]' finds torch==2.13.0 already satisfied -------
FROM source AS build-train
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_INDEX_URL
ARG PIP_NO_INDEX
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
 && pip install '.[train]' \
 && python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"

# ---- edge builder: no torch, ever -----------------------------------------------------------------------
FROM source AS build-edge
ARG PIP_INDEX_URL
ARG PIP_NO_INDEX
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install '.[edge]' \
 && if pip show torch >/dev/null 2>&1; then echo "torch leaked into the edge image" >&2; exit 1; fi

# ---- edge image: the exported policy is mounted at /policy (see k8s/overlays/edge) -------------------
FROM base AS edge
COPY --from=build-edge /opt/venv /opt/venv
COPY configs ./configs
ENV PATH=/opt/venv/bin:$PATH \
    MARLMESH_HOST=0.0.0.0
USER 10001:10001
EXPOSE 50071 9100
ENTRYPOINT ["python", "-m", "agent_service", "--runtime", "onnx", "--mode", "eval"]

# ---- train image (default target): every service and the marlmesh CLI ---------------------------------
FROM base AS train
COPY --from=build-train /opt/venv /opt/venv
COPY configs ./configs
ENV PATH=/opt/venv/bin:$PATH \
    MARLMESH_HOST=0.0.0.0
USER 10001:10001
EXPOSE 50051 50061 50071 9100 9101
CMD ["marlmesh", "--help"]
