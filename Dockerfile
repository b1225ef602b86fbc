# syntax=docker/dockerfile:1
# The MAL image for the Prefect GPU work pool (prefect.yaml: MAL_IMAGE). Build, push and cluster set-up:
# docs/cluster.md. It holds the environment, not the workspace: each flow run clones the repo (prefect.yaml).
#
#   docker build -t registry.example.org/mal:gpu .                                # CUDA ops built from source
#   docker build --build-arg DETECTRON2_BUILD=pure -t registry.example.org/mal:cpu-d2 .   # pure-Python route
#
# torch==2.14.1 in requirements.txt is the CUDA 13.0 build (torch.version.cuda == "13.0"), so the toolkit that
# compiles detectron2's ops is CUDA 13.0 too (nvcc must match torch's CUDA major). Nodes need a driver >= 580.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-devel-ubuntu22.04
FROM ${CUDA_IMAGE}

# auto: build detectron2 from source with its CUDA ops when nvcc is present (a -devel base), else the pure route
ARG DETECTRON2_BUILD=auto
ARG DETECTRON2_REPO=https://github.com/facebookresearch/detectron2.git
ARG DETECTRON2_REF=a1ce2f9
# no GPU at build time: name the architectures to compile for (CUDA 13 supports sm_75 and newer)
ARG TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX"
ARG MAX_JOBS=8
# where pip finds torch==2.14.1+cu130 (PyPI has no +cuXXX builds)
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# python3.11 (the version the project is tested with) from Ubuntu 22.04; git for Prefect's clone step and DVC.
# The base image fixes the Ubuntu snapshot; exact apt versions would break with every security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       python3.11 python3.11-venv python3.11-dev git ca-certificates g++ \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 --shell /bin/bash mal \
    && install -d -o mal -g mal /opt/mal /home/mal/runs

# The same environment `make` sets; the MAL_*_DIR mounts are linked into each clone by the flow (pipeline/mounts.py).
ENV DVC_NO_ANALYTICS=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    MPLBACKEND=Agg \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/mal/.venv/bin:$PATH \
    PREFECT_HOME=/home/mal/.prefect \
    MAL_DATASETS_DIR=/mnt/mal/datasets \
    MAL_WEIGHTS_DIR=/mnt/mal/weights \
    MAL_WORK_DIR=/mnt/mal/work

# numeric, so Kubernetes' runAsNonRoot can verify it (the pool template's fsGroup 1000 makes volumes writable)
USER 1000:1000
WORKDIR /opt/mal

# Dependencies first (cached while only code changes): the same pinned install as `make install`.
COPY --chown=mal:mal requirements.txt requirements-nodeps.txt pyproject.toml ./
COPY --chown=mal:mal scripts/install.sh scripts/install_detectron2.sh scripts/
COPY --chown=mal:mal mal/__init__.py mal/
RUN PYTHON=python3.11 PIP_EXTRA_INDEX_URL="$TORCH_INDEX_URL" bash scripts/install.sh

# detectron2 with its compiled ops (deformable conv, rotated boxes, fast COCO eval). install_detectron2.sh then
# sees the compiled build and drops the pure copy's .pth, so the compiled one is what `import detectron2` finds.
RUN if [ "$DETECTRON2_BUILD" = source ] || { [ "$DETECTRON2_BUILD" = auto ] && command -v nvcc; }; then \
      git clone --filter=blob:none "$DETECTRON2_REPO" /tmp/detectron2 \
      && git -C /tmp/detectron2 checkout --quiet "$DETECTRON2_REF" \
      && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$TORCH_CUDA_ARCH_LIST" MAX_JOBS="$MAX_JOBS" \
         .venv/bin/python -m pip install --no-cache-dir --no-build-isolation --no-deps /tmp/detectron2 \
      && rm -rf /tmp/detectron2 \
      && bash scripts/install_detectron2.sh .venv/bin/python \
      && .venv/bin/python -c "from detectron2 import _C; print('detectron2 CUDA ops:', _C.__file__)"; \
    else \
      echo "detectron2: pure-Python route (DETECTRON2_BUILD=$DETECTRON2_BUILD, nvcc: $(command -v nvcc || echo none))"; \
    fi

# The rest of the repo (mal/ is installed editable by install.sh above, so the code lands in place).
COPY --chown=mal:mal . /opt/mal

# Prefect's git_clone pull step clones into the working directory. No ENTRYPOINT: the worker's command
# (`prefect flow-run execute`, the Kubernetes job's args) must run as given; bare `docker run` prints the doctor.
WORKDIR /home/mal/runs
CMD ["python", "-m", "mal", "doctor"]
