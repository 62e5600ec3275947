# The hirag-oz service: CPU torch, Tesseract, the model exported at build time, a non-root user.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# CPU torch first and pinned, so nothing pulls a CUDA build.
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY src ./src
COPY client ./client
RUN pip install ./client ".[otel]"

RUN useradd --system --uid 10001 --create-home --home-dir /home/hirag hirag \
    && mkdir -p /data \
    && chown hirag:hirag /data
USER hirag

# The ONNX export of the bundled MiniLM is made once here, not at every container start.
RUN python -c "from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder, default_cache_dir; \
OnnxMiniLMEmbedder(default_cache_dir(), 64, None).embed(['ready'])"

ENV HIRAG_SERVER__HOST=0.0.0.0 \
    HIRAG_SERVER__PORT=8081 \
    HIRAG_SERVER__DATA_DIR=/data
EXPOSE 8081
VOLUME ["/data"]

# Liveness over HTTP with the Python already in the image (slim images have no curl).
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('HIRAG_SERVER__PORT', '8081'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/health/live', timeout=4).status == 200 else 1)"]

# On 0.0.0.0 the service refuses to start without API keys: pass HIRAG_API_KEYS.
CMD ["hirag-oz", "serve"]
