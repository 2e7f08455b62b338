# Stage image of the Paddle recipes (PP-YOLOE+, PicoDet + ACT, DeepLabv3+): the tutorials' paddle-npu image
# (seeds 000/001) with PaddleDetection and PaddleSeg at the tutorials' refs and npuflow's stage programs.
#   DOCKER_BUILDKIT=0 docker build -f docker/paddle-npu.Dockerfile -t npuflow/paddle-npu:cann80RC1 .
# Every base, source, ref and package is a build argument: tests build it FROM a locally imported base, with the
# toolkit refs and package lists empty (no clone; the checkout is bind-mounted at run time) and nothing to fetch.
# The tutorials' base is a development image with CANN but without Paddle: PADDLE_PACKAGES installs the pair
# for the 910B (paddle-custom-npu needs the Paddle 3.x build it was made with; PaddleSlim 2.6.0's QAT uses the
# old-IR passes, so the Paddle stages set FLAGS_enable_pir_api=0 there). Match them to the base's CANN.
ARG BASE_IMAGE=registry.baidubce.com/device/paddle-npu:cann80RC1-ubuntu20-x86_64-gcc84-py39
FROM ${BASE_IMAGE}
ARG PADDLE_INDEX=https://www.paddlepaddle.org.cn/packages/nightly
ARG PADDLE_PACKAGES="paddlepaddle==3.0.0.dev20250527 paddle-custom-npu==3.0.0.dev20250527"
ARG PADDLEDETECTION_REPO=https://github.com/PaddlePaddle/PaddleDetection.git
ARG PADDLEDETECTION_REF=release_2_7_npu
ARG PADDLEDETECTION_COMMIT=f88cf9e1ad205c3f8ca1e99bdd3233144a429c96
ARG PADDLESEG_REPO=https://github.com/PaddlePaddle/PaddleSeg.git
ARG PADDLESEG_REF=npu_cann8.0
ARG PADDLESEG_COMMIT=ccc3d42da49fe63b88c1698ea28aedafcb87cab9
# What the stage programs import beyond the base's Paddle (npuflow/programs): COCO eval, configs, the rank watch.
# faster-coco-eval ~=1.7 (no ">" in a word the shell splits): 1.8 needs Python >= 3.10 and the vendor images run
# 3.8/3.9, where 1.7.2 is the newest (the same 12 stats; tests/test_stage_python.py runs the programs with it).
ARG PIP_PACKAGES="faster-coco-eval~=1.7 pycocotools PyYAML jsonschema psutil paddleslim==2.6.0 paddle2onnx==1.3.1"
SHELL ["/bin/sh", "-eu", "-c"]
# hadolint ignore=DL3013
RUN if [ -n "${PADDLE_PACKAGES}" ]; then \
      python -m pip install --no-cache-dir --extra-index-url "${PADDLE_INDEX}/cpu" \
        --extra-index-url "${PADDLE_INDEX}/npu" ${PADDLE_PACKAGES}; \
    fi
# The checkouts at the commits npuflow/toolkits/ pins, importable (ACT's scripts and PaddleSeg's tools import
# the package with no sys.path insert of their own): on PYTHONPATH below.
RUN if [ -n "${PADDLEDETECTION_REF}" ]; then \
      git clone --branch "${PADDLEDETECTION_REF}" --single-branch "${PADDLEDETECTION_REPO}" /opt/PaddleDetection; \
      git -C /opt/PaddleDetection checkout --detach "${PADDLEDETECTION_COMMIT}"; \
      python -m pip install --no-cache-dir -r /opt/PaddleDetection/requirements.txt; \
    fi
RUN if [ -n "${PADDLESEG_REF}" ]; then \
      git clone --branch "${PADDLESEG_REF}" --single-branch "${PADDLESEG_REPO}" /opt/PaddleSeg; \
      git -C /opt/PaddleSeg checkout --detach "${PADDLESEG_COMMIT}"; \
      python -m pip install --no-cache-dir -r /opt/PaddleSeg/requirements.txt; \
    fi
# hadolint ignore=DL3013
RUN if [ -n "${PIP_PACKAGES}" ]; then python -m pip install --no-cache-dir ${PIP_PACKAGES}; fi
COPY npuflow/ /opt/npuflow/npuflow/
COPY docker/stage-entrypoint.sh /usr/local/bin/npuflow-stage-entrypoint
ENV PYTHONPATH=/opt/npuflow:/opt/PaddleDetection:/opt/PaddleSeg \
    FLAGS_enable_pir_api=0
ENTRYPOINT ["/usr/local/bin/npuflow-stage-entrypoint"]
LABEL org.opencontainers.image.title="npuflow Paddle NPU stages" \
      npuflow.toolkits="PaddleDetection@${PADDLEDETECTION_REF}:${PADDLEDETECTION_COMMIT} PaddleSeg@${PADDLESEG_REF}:${PADDLESEG_COMMIT}"
WORKDIR /opt
