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
# faster-coco-eval ~=1.7 (no ">" in a word the shell splits): 1.8 needs Python >= 3.10 and the vendor images run
# 3.8/3.9, where 1.7.2 is the newest (the same 12 stats; tests/test_stage_python.py runs the programs with it).
ARG PIP_PACKAGES="onnx onnxruntime-cann faster-coco-eval~=1.7 pycocotools PyYAML jsonschema psutil tensorboard"
# The YOLOR port's own imports (its 1.8_requirements.txt; seed 003's `pip install -r requirements.txt` names a file
# the checkout does not have), without its protobuf==3.19.1 and Pillow==9.1.0 pins, which onnx and tensorboard
# refuse; an OpenCV for numpy 1 (the newest wants numpy 2, which torch 2.1 does not take).
ARG YOLOR_PACKAGES="matplotlib scipy tqdm sympy decorator Cython opencv-python~=4.8.0"
SHELL ["/bin/sh", "-eu", "-c"]
# hadolint ignore=DL3013
RUN if [ -n "${TORCH_PACKAGES}" ]; then python3 -m pip install --no-cache-dir ${TORCH_PACKAGES}; fi; \
    if [ -n "${MODELZOO_REF}" ]; then \
      git clone --depth 1 --branch "${MODELZOO_REF}" "${MODELZOO_REPO}" /opt/ModelZoo-PyTorch; \
    fi; \
    if [ -n "${PIP_PACKAGES}" ]; then python3 -m pip install --no-cache-dir ${PIP_PACKAGES}; fi; \
    if [ -n "${YOLOR_PACKAGES}" ]; then python3 -m pip install --no-cache-dir ${YOLOR_PACKAGES}; fi
# The SSD port (seed 004) trains on mmcv 1.2.7 built with its ops after the port's mmcv_need/ files are copied over
# its source (the port's README), and imports mmpycocotools (its requirements/runtime.txt). mmcv-full's PyPI sdist
# is the v1.2.7 source; it and mmpycocotools build only without build isolation (their setup.py imports
# pkg_resources and numpy/cython), so the build tools are pinned first, with an OpenCV for numpy 1 (mmcv requires
# opencv-python, whose newest release wants numpy 2). This step, run in a torch 2.1.0 venv on 2 CPU cores: 6.5 min;
# tests/engine.py runs it as it stands in the Python 3.9 / torch 2.1 base of the engine tests.
ARG MMCV_VERSION=1.2.7
ARG MMCV_JOBS=8
ARG VGG16_URL=https://download.openmmlab.com/pretrain/third_party/vgg16_caffe-292e1171.pth
# hadolint ignore=DL3003,DL3013
RUN if [ -n "${MODELZOO_REF}" ] && [ -n "${MMCV_VERSION}" ]; then \
      ssd=/opt/ModelZoo-PyTorch/PyTorch/contrib/cv/detection/SSD; \
      src="/tmp/mmcv/mmcv-full-${MMCV_VERSION}"; \
      python3 -m pip install --no-cache-dir "setuptools<70" wheel "cython<3" ninja "numpy<2" "opencv-python<4.9" \
        "yapf==0.30.0"; \
      python3 -m pip download --no-cache-dir --no-deps --no-build-isolation --no-binary :all: \
        "mmcv-full==${MMCV_VERSION}" -d /tmp/mmcv; \
      tar -xzf "/tmp/mmcv/mmcv-full-${MMCV_VERSION}.tar.gz" -C /tmp/mmcv; \
      cp -f "$ssd/mmcv_need/_functions.py" "$ssd/mmcv_need/data_parallel.py" "$ssd/mmcv_need/distributed.py" \
        "$src/mmcv/parallel/"; \
      cp -f "$ssd/mmcv_need/builder.py" "$src/mmcv/runner/optimizer/"; \
      cp -f "$ssd/mmcv_need/dist_utils.py" "$ssd/mmcv_need/epoch_based_runner.py" "$src/mmcv/runner/"; \
      cp -f "$ssd/mmcv_need/optimizer.py" "$src/mmcv/runner/hooks/"; \
      cp -f "$ssd/mmcv_need/symbolic.py" "$src/mmcv/onnx/"; \
      cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS="${MMCV_JOBS}" python3 -m pip install --no-cache-dir --no-build-isolation . && cd /; \
      python3 -m pip install --no-cache-dir --no-build-isolation -r "$ssd/requirements/runtime.txt" "numpy<2"; \
      rm -rf /tmp/mmcv; \
    fi
# The SSD config's backbone starts from open-mmlab://vgg16_caffe, which mmcv fetches from download.openmmlab.com
# into torch's hub cache at the start of every training: fetched here, so a server without internet trains too.
RUN if [ -n "${MODELZOO_REF}" ] && [ -n "${VGG16_URL}" ]; then \
      mkdir -p /opt/torch/hub/checkpoints; \
      python3 -c "import torch.hub as h; h.download_url_to_file('${VGG16_URL}', '/opt/torch/hub/checkpoints/' + '${VGG16_URL}'.rsplit('/', 1)[1])"; \
    fi
ENV TORCH_HOME=/opt/torch
COPY npuflow/ /opt/npuflow/npuflow/
# torch_npu without CANN breaks a plain `import torch` through backend autoload (FACTS); the base has CANN.
ENV PYTHONPATH=/opt/npuflow
LABEL org.opencontainers.image.title="npuflow PyTorch NPU stages" \
      npuflow.toolkits="ModelZoo-PyTorch@${MODELZOO_REF}"
WORKDIR /opt
