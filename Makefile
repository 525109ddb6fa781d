# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv (Python 3.11) and install the pinned versions of constraints.txt.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: venv demo test bench bench-quality bench-modes bench-prep clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/segae-spark demo $(DEMO_ARGS)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv
	$(PY) benchmarks/scoring_throughput.py $(BENCH_ARGS)

clean:
	rm -rf demo_output .pytest_cache build *.egg-info

bench-quality: venv
	$(PY) benchmarks/quality_datasets.py $(QUALITY_ARGS)

bench-modes: venv
	$(PY) benchmarks/training_modes.py $(MODES_ARGS)

bench-prep: venv
	$(PY) benchmarks/preprocessing_clustering.py $(PREP_ARGS)
