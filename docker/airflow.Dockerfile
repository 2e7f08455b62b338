# The Airflow side: npuflow + Airflow 3.3.2 (the embedded default, or a scheduler / api-server / Celery worker
# of the scale-out deployment), with the CPU profiles' Paddle and PyTorch stacks from requirements/lock.txt.
#   DOCKER_BUILDKIT=0 docker build -f docker/airflow.Dockerfile -t npuflow/airflow .
#   docker run --rm npuflow/airflow make demo
# Stages of the NPU profiles run in the toolkit images (paddle-npu.Dockerfile, pytorch-npu.Dockerfile).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
# Debian's packages move with the base image's release; the base is what is pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make libgl1 libglib2.0-0 libgomp1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/npuflow
COPY requirements/ requirements/
COPY pyproject.toml Makefile README.md ./
COPY npuflow/ npuflow/
COPY operators/ operators/
RUN make setup PYTHON=python3
COPY . .
ENV AIRFLOW_HOME=/opt/npuflow/var/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/npuflow/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    NPUFLOW_RUNS_DIR=/opt/npuflow/var/runs
CMD ["make", "demo"]
