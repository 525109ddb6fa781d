# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv (Python 3.11) and install the pinned versions of constraints.txt
# (pyspark comes from the `spark` extra: on Databricks the runtime provides it).
# `make test-compat` runs the tests again in .venv-compat, with Spark 3.5 and the
# numpy / pandas / pyarrow it supports (constraints-compat.txt); `make test-py312`
# runs them on Python 3.12 (.venv-py312, the pins of constraints.txt).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: venv venv-compat venv-py312 demo test test-compat test-py312 bench bench-quality bench-modes bench-prep bench-soak bench-optimizer bench-data-parallel bench-peers venv-segmentae venv-horovod test-horovod bench-horovod clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[spark,dev,mlflow]"
	touch $@

venv: $(VENV)/.installed

# tests/test_report.py renders the HTML report in headless Chromium (Debian's
# chromium package). Best effort: without apt-get or root the install is
# skipped and that test skips too (it fails only under CI=true).
.PHONY: browser
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } || \
	  echo "chromium not installed: tests/test_report.py skips its browser check"

demo: venv
	$(VENV)/bin/segae-spark demo $(DEMO_ARGS)

test: venv browser
	$(PY) -m pytest $(PYTEST_ARGS)

COMPAT_VENV := .venv-compat
COMPAT_PY := $(COMPAT_VENV)/bin/python
# The whole suite: every layer (io, features, clustering, models, training,
# scoring, pipeline, CLI) has to work on Spark 3.5 as well.
COMPAT_TESTS ?= tests

$(COMPAT_VENV)/.installed: pyproject.toml constraints-compat.txt
	test -x $(COMPAT_PY) || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install --quiet --disable-pip-version-check -c constraints-compat.txt -e ".[spark,dev]"
	touch $@

venv-compat: $(COMPAT_VENV)/.installed

test-compat: export PYSPARK_PYTHON := $(abspath $(COMPAT_PY))
test-compat: export PYSPARK_DRIVER_PYTHON := $(abspath $(COMPAT_PY))
test-compat: venv-compat
	$(COMPAT_PY) -m pytest $(COMPAT_TESTS) $(PYTEST_ARGS)

# Python 3.12 (Databricks 16.x runtimes) with the main pins; PYTHON312 names the
# interpreter. By default the core tests (models, scoring, pipeline, I/O, local
# scoring: about 15 minutes on 2 cores); PY312_TESTS=tests runs the whole suite.
PYTHON312 ?= python3.12
PY312_VENV := .venv-py312
PY312_PY := $(PY312_VENV)/bin/python
PY312_TESTS ?= tests/test_models.py tests/test_scoring.py tests/test_pipeline.py tests/test_io.py tests/test_local_scoring.py

$(PY312_VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY312_PY) || $(PYTHON312) -m venv $(PY312_VENV)
	$(PY312_PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[spark,dev]"
	touch $@

venv-py312: $(PY312_VENV)/.installed

test-py312: export PYSPARK_PYTHON := $(abspath $(PY312_PY))
test-py312: export PYSPARK_DRIVER_PYTHON := $(abspath $(PY312_PY))
test-py312: venv-py312
	$(PY312_PY) -m pytest $(PY312_TESTS) $(PYTEST_ARGS)

bench: venv
	$(PY) benchmarks/scoring_throughput.py $(BENCH_ARGS)

clean:
	rm -rf demo_output .pytest_cache build *.egg-info

bench-quality: venv
	$(PY) benchmarks/quality_datasets.py $(QUALITY_ARGS)

bench-modes: venv
	$(PY) benchmarks/training_modes.py $(MODES_ARGS)

bench-data-parallel: venv
	$(PY) benchmarks/data_parallel.py $(DP_ARGS)

# Horovod 0.28.1 builds only against TensorFlow 2.15 / Keras 2 / numpy < 2: its own
# environment (.venv-horovod, constraints-horovod.txt), with Spark 3.5 and segae-spark
# installed without its dependency metadata; building Horovod takes about 9 minutes on
# 2 cores, once (docs/horovod.md). test-horovod runs the horovod backend's tests there.
HOROVOD_VENV := .venv-horovod
HOROVOD_PY := $(HOROVOD_VENV)/bin/python

$(HOROVOD_VENV)/.installed: pyproject.toml constraints-horovod.txt scripts/horovod_env.sh
	bash scripts/horovod_env.sh $(HOROVOD_VENV)

venv-horovod: $(HOROVOD_VENV)/.installed

test-horovod: export PYSPARK_PYTHON := $(abspath $(HOROVOD_PY))
test-horovod: export PYSPARK_DRIVER_PYTHON := $(abspath $(HOROVOD_PY))
test-horovod: export PATH := $(abspath $(HOROVOD_VENV))/bin:$(PATH)
test-horovod: export SEGAE_REQUIRE_HOROVOD := 1
test-horovod: venv-horovod
	$(HOROVOD_PY) -m pytest tests/test_data_parallel.py -k horovod $(PYTEST_ARGS)

bench-horovod: export PYSPARK_PYTHON := $(abspath $(HOROVOD_PY))
bench-horovod: export PYSPARK_DRIVER_PYTHON := $(abspath $(HOROVOD_PY))
bench-horovod: export PATH := $(abspath $(HOROVOD_VENV))/bin:$(PATH)
bench-horovod: venv-horovod
	$(HOROVOD_PY) benchmarks/data_parallel.py --backend horovod --out benchmarks/results/data_parallel_horovod $(DP_ARGS)

bench-prep: venv
	$(PY) benchmarks/preprocessing_clustering.py $(PREP_ARGS)

bench-soak: venv
	$(PY) benchmarks/soak.py $(SOAK_ARGS)

bench-optimizer: venv
	$(PY) benchmarks/optimizer.py $(OPTIMIZER_ARGS)

# benchmarks/peers.py: segae-spark next to SegmentAE 1.5.26, PyOD and scikit-learn.
# SegmentAE pins pydantic 2.0, matplotlib 3.9.3 and atlantic, which clash with our
# pins: it gets its own environment (.venv-segmentae, constraints-segmentae.txt,
# 3.6 GB with TensorFlow and H2O); PyOD comes from the `bench` extra in .venv.
SEGMENTAE_VENV := .venv-segmentae
SEGMENTAE_PY := $(SEGMENTAE_VENV)/bin/python

$(SEGMENTAE_VENV)/.installed: constraints-segmentae.txt
	test -x $(SEGMENTAE_PY) || $(PYTHON) -m venv $(SEGMENTAE_VENV)
	$(SEGMENTAE_PY) -m pip install --quiet --disable-pip-version-check -c constraints-segmentae.txt segmentae==1.5.26
	touch $@

venv-segmentae: $(SEGMENTAE_VENV)/.installed

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[spark,dev,mlflow,bench]"
	touch $@

bench-peers: $(VENV)/.bench-installed venv-segmentae
	$(PY) benchmarks/peers.py --segmentae-python $(SEGMENTAE_PY) $(PEERS_ARGS)
