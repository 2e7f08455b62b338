# Stage image of the Paddle recipes (PP-YOLOE+, PicoDet + ACT, DeepLabv3+): the tutorials' paddle-npu image
# (seeds 000/001) with PaddleDetection and PaddleSeg at the tutorials' refs and npuflow's stage programs.
#   DOCKER_BUILDKIT=0 docker build -f docker/paddle-npu.Dockerfile -t npuflow/paddle-npu:cann80RC1 .
# Every base, source and ref is a build argument: tests build it FROM a locally imported base, with the
# toolkit refs empty (no clone; the checkout is bind-mounted at run time) and no packages to fetch.
ARG BASE_IMAGE=registry.baidubce.com/device/paddle-npu:cann80RC1-ubuntu20-x86_64-gcc84-py39
FROM ${BASE_IMAGE}
ARG PADDLEDETECTION_REPO=https://github.com/PaddlePaddle/PaddleDetection.git
ARG PADDLEDETECTION_REF=release_2_7_npu
ARG PADDLESEG_REPO=https://github.com/PaddlePaddle/PaddleSeg.git
ARG PADDLESEG_REF=npu_cann8.0
# What the stage programs import beyond the base's Paddle (npuflow/programs): COCO eval, configs, the rank watch.
ARG PIP_PACKAGES="faster-coco-eval==1.8.0 pycocotools PyYAML jsonschema psutil paddleslim==2.6.0 paddle2onnx==1.3.1"
SHELL ["/bin/sh", "-eu", "-c"]
RUN if [ -n "${PADDLEDETECTION_REF}" ]; then \
      git clone --depth 1 --branch "${PADDLEDETECTION_REF}" "${PADDLEDETECTION_REPO}" /opt/PaddleDetection; \
      python -m pip install --no-cache-dir -r /opt/PaddleDetection/requirements.txt; \
    fi
RUN if [ -n "${PADDLESEG_REF}" ]; then \
      git clone --depth 1 --branch "${PADDLESEG_REF}" "${PADDLESEG_REPO}" /opt/PaddleSeg; \
      python -m pip install --no-cache-dir -r /opt/PaddleSeg/requirements.txt; \
    fi
# hadolint ignore=DL3013
RUN if [ -n "${PIP_PACKAGES}" ]; then python -m pip install --no-cache-dir ${PIP_PACKAGES}; fi
COPY npuflow/ /opt/npuflow/npuflow/
ENV PYTHONPATH=/opt/npuflow
LABEL org.opencontainers.image.title="npuflow Paddle NPU stages" \
      npuflow.toolkits="PaddleDetection@${PADDLEDETECTION_REF} PaddleSeg@${PADDLESEG_REF}"
WORKDIR /opt
