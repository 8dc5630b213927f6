# syntax=docker/dockerfile:1
# QuantiVista: one image for every service (`qv serve|stream|integrate|worker|scheduler`).
# Stage 1 builds the wheel and its dependencies' wheels; stage 2 installs them into a slim,
# non-root runtime with no compiler and no build cache.
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --wheel-dir /wheels '.[postgres,redis]'

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    QV_DATA_DIR=/data QV_API__HOST=0.0.0.0 QV_PROBES__HOST=0.0.0.0
RUN groupadd --system --gid 10001 qv \
    && useradd --system --uid 10001 --gid qv --home-dir /data --shell /usr/sbin/nologin qv \
    && mkdir -p /data && chown qv:qv /data
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels quantivista[postgres,redis] && rm -rf /wheels
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# 8000: the API; 9101-9104: probes and metrics of stream, integrate, worker, scheduler
EXPOSE 8000 9101 9102 9103 9104
# the API's liveness; the other services override the port with QV_HEALTH_PORT
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('QV_HEALTH_PORT', '8000')}/healthz\", timeout=4)"]
ENTRYPOINT ["qv"]
CMD ["serve"]
