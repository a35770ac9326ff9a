# kerasops itself: the Prefect worker that trains, evaluates and exports. Built from the
# repository root: docker build -f serving/deploy/kerasops.Dockerfile .
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY kerasops kerasops
COPY pipelines pipelines
COPY models models
COPY data/*.py data/
COPY serving serving
RUN pip install --no-cache-dir . psycopg2-binary==2.9.13 boto3==1.44.5
ENTRYPOINT ["kerasops"]
