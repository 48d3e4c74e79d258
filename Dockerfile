# syntax=docker/dockerfile:1
#
# Satchel image. Build from the repository root:
#   docker build -t satchel:0.1.0 .
# Run (the pod file is mounted; listen addresses come from the SATCHEL_* env below):
#   docker run --rm -p 8090:8090 -p 50051:50051 -p 9090:9090 \
#     -v "$PWD/spicepod.yaml:/etc/satchel/pod/spicepod.yaml:ro" satchel:0.1.0
#
# Stage 1 compiles llama.cpp (through llama-cpp-python) and installs Satchel into a
# virtualenv; stage 2 copies only that virtualenv onto a slim runtime with no compilers.

ARG PYTHON_VERSION=3.11
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------- build
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS build

# llama-cpp-python's version (keep it equal to the pin of the `llm` extra).
ARG LLAMA_CPP_PYTHON_VERSION=0.3.36
# Portable CPU build: no -march=native, so the image runs on any x86-64/arm64 node, not
# only on CPUs like the build machine's. Override for a tuned or GPU build.
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF"

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake git pkg-config \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/satchel \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv "$VIRTUAL_ENV"
ENV PATH="$VIRTUAL_ENV/bin:$PATH"

# Compile llama.cpp first, in its own layer: source changes to Satchel do not rebuild it.
RUN CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    pip install "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}"

# Satchel itself (.dockerignore lets in only what the package build needs).
WORKDIR /src
COPY . .
RUN pip install . \
    && python -c "import llama_cpp, serving.cli" \
    && satchel run --help > /dev/null

# ---------------------------------------------------------------------------- runtime
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS runtime

# libgomp1: llama.cpp's OpenMP threads. No compilers, no package caches.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric user, so Kubernetes' runAsNonRoot can verify it (the chart uses the
# same 10001:10001). /var/lib/satchel is the data dir of file-mode accelerators.
RUN groupadd --system --gid 10001 satchel \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/satchel \
       --no-create-home --shell /usr/sbin/nologin satchel \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/satchel \
    && install -d -o 0 -g 0 -m 0755 /etc/satchel /etc/satchel/pod

COPY --from=build /opt/satchel /opt/satchel

ENV PATH="/opt/satchel/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SATCHEL_POD=/etc/satchel/pod/spicepod.yaml \
    SATCHEL_HTTP=0.0.0.0:8090 \
    SATCHEL_FLIGHT=0.0.0.0:50051 \
    SATCHEL_METRICS=0.0.0.0:9090 \
    SATCHEL_DATA_DIR=/var/lib/satchel

# HTTP (/health, /v1/ready, /v1/sql), Arrow Flight SQL, Prometheus metrics.
EXPOSE 8090 50051 9090

WORKDIR /var/lib/satchel
USER 10001:10001

ENTRYPOINT ["satchel", "run"]
