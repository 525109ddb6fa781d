#!/usr/bin/env bash
# Recreate a Horovod 0.28.1 (TensorFlow/Keras 2 + Gloo + Spark) environment, CPU only.
# Tested on Linux x86_64, Python 3.11.7, gcc/g++ 12.2, cmake 3.25, Java 17 (2026-11-29).
# Usage: bash scripts/horovod_env.sh [VENV_PATH]   (default: .venv-horovod); or make venv-horovod
# Build of horovod takes ~9 min on 2 cores.
set -euo pipefail

VENV="${1:-.venv-horovod}"
PY="${PYTHON:-python3.11}"

"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --upgrade pip setuptools wheel

# 1. TensorFlow first: horovod's setup.py/cmake imports tensorflow at build time.
"$VENV/bin/pip" install "tensorflow-cpu==2.15.1" "numpy==1.26.4"

# 2. Horovod from sdist. --no-build-isolation is REQUIRED: with pip's default
#    isolated build env, cmake fails with "Could NOT find Tensorflow".
export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
       HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 MAKEFLAGS=-j2
"$VENV/bin/pip" install --no-cache-dir --no-build-isolation \
    "horovod[spark]==0.28.1" \
    "tensorflow-cpu==2.15.1" "numpy==1.26.4" \
    "pyspark==3.5.9" "pyarrow==10.0.1" "petastorm==0.13.1" "pandas==3.0.6"

# 3. Smoke checks.
"$VENV/bin/pip" check
"$VENV/bin/horovodrun" --check-build
TF_CPP_MIN_LOG_LEVEL=2 "$VENV/bin/python" -c \
  "import horovod.tensorflow.keras as hvd, pyspark; hvd.init(); print('hvd size', hvd.size(), 'pyspark', pyspark.__version__)"
