# The training image: SageMaker runs `docker run IMAGE train` (see train/launcher.py).
#   docker/build.sh train        (BASE_IMAGE, EXTRA_CA_BUNDLE and TORCH_INDEX_URL are honoured)
ARG BASE_IMAGE=python:3.11-slim

# Stage 1: build the wheels that need a compiler (sagemaker-training has a C extension), so the
# final image carries no compiler.
FROM ${BASE_IMAGE} AS wheels
COPY docker/extra-ca/ /usr/local/share/ca-certificates/extra/
RUN update-ca-certificates >/dev/null \
 && apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY requirements/constraints.txt /tmp/constraints.txt
RUN python3 -m venv /opt/venv \
 && export PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_NO_CACHE_DIR=1 \
 && /opt/venv/bin/pip install --upgrade pip setuptools wheel \
 && /opt/venv/bin/pip wheel --no-deps -w /wheels -c /tmp/constraints.txt sagemaker-training

# Stage 2: the image.
FROM ${BASE_IMAGE}
ARG TORCH_INDEX_URL=
LABEL org.opencontainers.image.title="byoc image classifier: training"
# An extra CA (corporate proxy) stays trusted at run time too, e.g. for downloading weights.
COPY docker/extra-ca/ /usr/local/share/ca-certificates/extra/
RUN update-ca-certificates >/dev/null
COPY requirements/ /tmp/requirements/
COPY --from=wheels /wheels /tmp/wheels
RUN python3 -m venv /opt/venv \
 && export PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_NO_CACHE_DIR=1 \
 && /opt/venv/bin/pip install --upgrade pip \
 && if [ -n "$TORCH_INDEX_URL" ]; then \
      /opt/venv/bin/pip install --index-url "$TORCH_INDEX_URL" \
        $(grep -E '^(torch|torchvision)==' /tmp/requirements/constraints.txt); fi \
 && /opt/venv/bin/pip install /tmp/wheels/*.whl -r /tmp/requirements/train.txt \
 && /opt/venv/bin/pip install --no-deps -c /tmp/requirements/constraints.txt \
      -r /tmp/requirements/smdebug.txt \
 && rm -rf /tmp/wheels /tmp/requirements

# /opt/ml is SageMaker's during training: the code lives elsewhere. ORT_DISABLE_TELEMETRY:
# ONNX Runtime (checking the ONNX export) would otherwise upload usage events.
COPY artifact /opt/program/artifact
COPY train /opt/program/train
COPY debugger /opt/program/debugger
COPY monitor /opt/program/monitor
COPY util /opt/program/util
# serve/'s predictor goes with the model logged to MLflow (train/mlflow_model.py)
COPY serve /opt/program/serve
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/program \
    PYTHONUNBUFFERED=1 \
    SAGEMAKER_TRAINING_MODULE=train.launcher:main \
    ORT_DISABLE_TELEMETRY=1
WORKDIR /opt/program
# No ENTRYPOINT: SageMaker passes `train` as the command (SDK v2); SDK v3 passes none.
CMD ["train"]
# Last, so that a new revision rebuilds one layer: the commit the image was built from, a tag of
# each job's MLflow run (docker/build.sh passes it).
ARG GIT_REVISION=
LABEL org.opencontainers.image.revision="${GIT_REVISION}"
ENV BYOC_GIT_REVISION="${GIT_REVISION}"

