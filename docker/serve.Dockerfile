# The kerasops serving image: the embedded server (TF Serving's v1 REST/gRPC API and the Open
# Inference Protocol v2) over a model repository, on CPU. KServe runs it as a custom predictor
# (`kerasops deploy kserve NAME` writes the InferenceService): its storage initializer copies
# the repository to /mnt/models, Knative routes port 8080.
#   docker build -f docker/serve.Dockerfile -t kerasops-serve .
#   docker run -p 8501:8501 -p 8500:8500 -v $PWD/artifacts/serving/models:/mnt/models:ro \
#       kerasops-serve kerasops serve --model-repository /mnt/models --host 0.0.0.0
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/kerasops
COPY pyproject.toml README.md LICENSE ./
COPY kerasops/ kerasops/
COPY models/ models/
COPY data/ data/
COPY pipelines/ pipelines/
COPY serving/ serving/
RUN pip install . && python -c "import kerasops.serving.server"

RUN useradd --create-home --uid 1000 kerasops
USER kerasops
WORKDIR /home/kerasops
EXPOSE 8080 8081 8500 8501
# readiness: GET /v2/health/ready (or /readyz); liveness: GET /v2/health/live (or /healthz)
ENTRYPOINT []
CMD ["kerasops", "serve", "--model-repository", "/mnt/models", "--host", "0.0.0.0"]
