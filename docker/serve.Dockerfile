# The serving images: SageMaker runs `docker run IMAGE serve` (see serve/server.py).
#   docker/build.sh serve        target cpu: ONNX Runtime, no torch (small; the default)
#   docker/build.sh serve-gpu    target gpu: PyTorch on CUDA, for GPU endpoints
# (BASE_IMAGE, EXTRA_CA_BUNDLE and TORCH_INDEX_URL are honoured, as for the training image.)
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS base
# SageMaker may ask the server to listen on another port (SAGEMAKER_BIND_TO_PORT), and may host
# many models in one container (SAGEMAKER_MULTI_MODEL=true: serve/models.py).
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      com.amazonaws.sagemaker.capabilities.multi-models=true
COPY docker/extra-ca/ /usr/local/share/ca-certificates/extra/
# The container starts as root (SageMaker expects it); the request-handling workers run as
# model-server (BYOC_SERVER_USER).
RUN update-ca-certificates >/dev/null \
 && useradd --system --no-create-home --shell /usr/sbin/nologin model-server
COPY requirements/ /tmp/requirements/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/program \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_NO_CACHE_DIR=1 \
    ORT_DISABLE_TELEMETRY=1
WORKDIR /opt/program
EXPOSE 8080
# ORT_DISABLE_TELEMETRY: ONNX Runtime (>= 1.29) would otherwise upload usage events from every
# endpoint and write a device id. Exec form: gunicorn's master is PID 1 and gets SageMaker's SIGTERM itself.
ENTRYPOINT ["/opt/venv/bin/python", "-m", "serve.server"]
CMD ["serve"]

FROM base AS cpu
LABEL org.opencontainers.image.title="byoc image classifier: serving (CPU, ONNX Runtime)"
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install -r /tmp/requirements/serve.txt \
 && rm -rf /tmp/requirements
COPY artifact /opt/program/artifact
COPY serve /opt/program/serve
RUN python -m compileall -q /opt/program

FROM base AS gpu
ARG TORCH_INDEX_URL=
LABEL org.opencontainers.image.title="byoc image classifier: serving (GPU, PyTorch)"
RUN python3 -m venv /opt/venv \
 && if [ -n "$TORCH_INDEX_URL" ]; then \
      /opt/venv/bin/pip install --index-url "$TORCH_INDEX_URL" \
        $(grep -E '^(torch|torchvision)==' /tmp/requirements/constraints.txt); fi \
 && /opt/venv/bin/pip install -r /tmp/requirements/serve-gpu.txt \
 && rm -rf /tmp/requirements
COPY artifact /opt/program/artifact
COPY serve /opt/program/serve
RUN python -m compileall -q /opt/program
