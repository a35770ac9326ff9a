# The kerasops training image: the CLI, Prefect worker and MLflow client with TensorFlow for GPUs.
# TF_VERSION is the one pinned TensorFlow version of the project: pyproject.toml pins the same
# `tensorflow==`, and docker-compose.yml runs `tensorflow/serving:${TF_VERSION}-gpu` beside it.
# tensorflow[and-cuda] brings CUDA 12.5 and cuDNN 9 as wheels; the host needs only the NVIDIA
# driver (>= 525.60.13) and the NVIDIA Container Toolkit. On a machine without a GPU the same
# image trains on CPU.
#   docker build -f docker/train.Dockerfile -t kerasops-train .
#   docker run --gpus all -v $PWD:/work -w /work kerasops-train kerasops train cnn --dataset digits
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

ARG TF_VERSION=2.21.0
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

RUN apt-get update \
    && apt-get install -y --no-install-recommends git espeak-ng \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/kerasops
COPY pyproject.toml README.md LICENSE ./
COPY kerasops/ kerasops/
COPY models/ models/
COPY data/ data/
COPY pipelines/ pipelines/
COPY serving/ serving/
# One resolve: a TF_VERSION that differs from pyproject's pin fails the build here.
RUN pip install "tensorflow[and-cuda]==${TF_VERSION}" . \
    && python -c "import tensorflow as tf, sys; sys.exit(tf.__version__ != '${TF_VERSION}')"

RUN useradd --create-home --uid 1000 kerasops
USER kerasops
WORKDIR /work
ENTRYPOINT []
CMD ["kerasops", "--help"]
