# Stage image of the PyTorch recipes (YOLOR, SSD): CANN + torch + torch_npu + the Ascend ModelZoo checkout
# (seeds 003/004: gitee.com/ascend/ModelZoo-PyTorch) and npuflow's stage programs (ONNX export, QAT, benchmark).
#   DOCKER_BUILDKIT=0 docker build -f docker/pytorch-npu.Dockerfile -t npuflow/pytorch-npu:cann80RC1 .
# The base must carry CANN (the toolkit and nnae under /usr/local/Ascend); every base, version and ref is a build
# argument, so a test builds it FROM a locally imported base with nothing to fetch.
ARG BASE_IMAGE=ascendhub.huawei.com/public-ascendhub/ascend-pytorch:24.0.RC1-A2-2.1.0-ubuntu20.04
FROM ${BASE_IMAGE}
ARG TORCH_PACKAGES="torch==2.1.0 torch_npu==2.1.0.post3 torchvision==0.16.0"
ARG MODELZOO_REPO=https://gitee.com/ascend/ModelZoo-PyTorch.git
ARG MODELZOO_REF=master
# onnxruntime-cann: the CANN build of onnxruntime (the benchmark asks for CANNExecutionProvider on the NPU; the
# plain onnxruntime wheel has only the CPU provider). tensorboard: the YOLOR port's train.py imports
# torch.utils.tensorboard (its 1.8_requirements.txt lists it).
ARG PIP_PACKAGES="onnx onnxruntime-cann faster-coco-eval==1.8.0 pycocotools PyYAML jsonschema psutil tensorboard"
SHELL ["/bin/sh", "-eu", "-c"]
# hadolint ignore=DL3013
RUN if [ -n "${TORCH_PACKAGES}" ]; then python3 -m pip install --no-cache-dir ${TORCH_PACKAGES}; fi; \
    if [ -n "${MODELZOO_REF}" ]; then \
      git clone --depth 1 --branch "${MODELZOO_REF}" "${MODELZOO_REPO}" /opt/ModelZoo-PyTorch; \
    fi; \
    if [ -n "${PIP_PACKAGES}" ]; then python3 -m pip install --no-cache-dir ${PIP_PACKAGES}; fi
COPY npuflow/ /opt/npuflow/npuflow/
# torch_npu without CANN breaks a plain `import torch` through backend autoload (FACTS); the base has CANN.
ENV PYTHONPATH=/opt/npuflow
LABEL org.opencontainers.image.title="npuflow PyTorch NPU stages" \
      npuflow.toolkits="ModelZoo-PyTorch@${MODELZOO_REF}"
WORKDIR /opt
