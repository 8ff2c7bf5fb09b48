# syntax=docker/dockerfile:1
# The doctune image: one image for every doctune container of the Helm chart (charts/doctune) — the
# API and its bootstrap init container, the console, the operator, and the KubeRay head, workers,
# autoscaler and RayJob Pods (they run `ray start`, `python -m ray_jobs.finetune`, Ray Serve replicas).
#
#   docker build -t ghcr.io/doctune/doctune:0.1.0 .        (docs/install.md, "Building the image")
#
# Python 3.11, torch 2.13.0 from PyTorch's CPU index, then the project (`pip install .`: Ray 2.60,
# DeepSpeed, the `doctune` package, `ray_jobs`), kopf and the `operators` package. It runs as the
# non-root user 1000:1000, the chart's podSecurityContext.runAsUser/runAsGroup (tests/unit/test_image.py).

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- build: a virtualenv with everything
FROM ${PYTHON_IMAGE} AS build
# the CPU wheel (torch==2.13.0+cpu); pyproject.toml's torch==2.13.0 accepts it, so `pip install .` keeps it
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG KOPF_VERSION=1.45.2
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --upgrade pip setuptools wheel \
 && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
WORKDIR /src
# what `pip install .` reads (pyproject's readme included); .dockerignore keeps the rest out
COPY pyproject.toml README.md ./
COPY platform/ platform/
COPY ray_jobs/ ray_jobs/
RUN pip install . "kopf==${KOPF_VERSION}" \
 && python -c "import torch, ray, deepspeed, kopf, doctune, ray_jobs; assert torch.__version__.startswith('${TORCH_VERSION}'), torch.__version__"

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
# g++: DeepSpeed builds its CPU ops (DeepSpeedCPUAdam, shared-memory comm) for the worker's own CPU on
#   first use (-march=native: a binary built here could use instructions a node lacks);
# wget: KubeRay's readiness and liveness probes of Ray Pods call it;
# tini: reaps Ray's child processes and forwards signals.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ wget tini \
 && rm -rf /var/lib/apt/lists/*
ARG DOCTUNE_UID=1000
ARG DOCTUNE_GID=1000
# cpu with the CPU wheel; a CUDA torch (--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128) wants cuda
ARG DS_ACCELERATOR=cpu
RUN groupadd --gid ${DOCTUNE_GID} doctune \
 && useradd --uid ${DOCTUNE_UID} --gid ${DOCTUNE_GID} --home-dir /home/doctune --create-home --shell /bin/bash doctune
COPY --from=build /opt/venv /opt/venv
# the operator (kopf run -m operators.doctune_operator.handlers) is imported from here
COPY operators/ /opt/doctune/operators/
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/doctune-entrypoint
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/doctune \
    PYTHONUNBUFFERED=1 \
    DOCTUNE_HOME=/var/run/doctune \
    DS_ACCELERATOR=${DS_ACCELERATOR} \
    TORCH_EXTENSIONS_DIR=/tmp/torch_extensions \
    HF_HUB_OFFLINE=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    GRADIO_ANALYTICS_ENABLED=False \
    TOKENIZERS_PARALLELISM=false
RUN mkdir -p /var/run/doctune && chown ${DOCTUNE_UID}:${DOCTUNE_GID} /var/run/doctune
WORKDIR /home/doctune
USER 1000:1000
EXPOSE 8080 7860
ENTRYPOINT ["tini", "--", "doctune-entrypoint"]
CMD ["api"]
