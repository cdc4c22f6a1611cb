# syntax=docker/dockerfile:1
# Two stages: the wheel is built (and its hot path compiled) in the first; the runtime image gets the wheel and its
# locked dependencies only (no editable install, no compiler, no development broker), and
# runs as a non-root user on a read-only root filesystem.
FROM python:3.11.10-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline pipeline
COPY processors processors
COPY schemas schemas
# The hot path compiled with mypyc, as `make setup` does on a development machine: the
# pure charging core (processors/, processors/native.py) and, in the same group, the
# generated Avro module (pipeline/adapters/avro/fast.py). The compiler stays in this stage; the extensions
# ship in the wheel in their packages' _build/DIGEST directories (package data), and the runtime stage is the same
# Python, so it loads them. The build fails here rather than ship an image that runs slow.
COPY deploy/requirements.lock /tmp/requirements.lock
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/* \
 && pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock \
 && pip install --no-cache-dir "mypy==2.4.1" setuptools \
 && python -m pipeline.dev.build \
 && python -c "import sys, processors.native as n; sys.exit(n.mode() != 'compiled with mypyc')" \
 && rm -rf build
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:3.11.10-slim-bookworm
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="callcharge" org.opencontainers.image.version="${VERSION}"
COPY deploy/requirements.lock /tmp/requirements.lock
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock \
 && pip install --no-cache-dir --no-deps /wheels/callcharge-*.whl \
 && rm -rf /wheels /tmp/requirements.lock \
 && useradd --system --uid 10001 --no-create-home callcharge
USER 10001:10001
# Scrapeable and reachable from outside the container; writes nothing to the image.
ENV CALLCHARGE_METRICS_HOST=0.0.0.0 \
    CALLCHARGE_HTTP_HOST=0.0.0.0 \
    CALLCHARGE_STATE_DIR=/tmp/callcharge \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
EXPOSE 9400 8480
ENTRYPOINT ["callcharge"]
CMD ["--help"]
