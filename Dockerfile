# syntax=docker/dockerfile:1.7
# marlmesh container images (multi-stage).
#
#   docker build --target train -t marlmesh:train .   # env_service, agent_service, learner_service (torch CPU)
#   docker build --target edge  -t marlmesh:edge  .   # torch-free agent: numpy + onnxruntime + pyzmq + grpcio
#
# Both run as the unprivileged user 10001 and write nothing outside mounted volumes (the manifests set
# readOnlyRootFilesystem), so bytecode caching is off.

ARG PYTHON_VERSION=3.11

# ---- common base: slim Python, non-root user --------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 marlmesh \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent marlmesh
WORKDIR /app

# ---- sources shared by both builders ------------------------------------------------------------------
FROM base AS source
COPY pyproject.toml README.md ./
COPY marlmesh ./marlmesh
COPY env_service ./env_service
COPY agent_service ./agent_service
COPY learner_service ./learner_service
COPY comm_bus ./comm_bus

# ---- train builder: pinned CPU torch first, so '.[train]' finds torch==2.13.0 already satisfied -------
FROM source AS build-train
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install '.[train]' \
 && python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"

# ---- edge builder: no torch, ever -----------------------------------------------------------------------
FROM source AS build-edge
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
