#!/usr/bin/env bash
# Build the Horovod environment (`make venv-horovod`, used by `make test-horovod`):
# Horovod 0.28.1 (TensorFlow + Gloo, CPU), TensorFlow 2.15.1 / Keras 2.15, Spark 3.5,
# and segae-spark itself, so that trainingBackend="horovod" runs end to end.
# Tested on Linux x86_64, Python 3.11, gcc/g++ 12.2, cmake 3.25, Java 17.
# Usage: bash scripts/horovod_env.sh [VENV_PATH]   (default: .venv-horovod)
# Horovod compiles from its sdist: about 9 minutes on 2 cores, once (pip caches the wheel).
set -euo pipefail

VENV="${1:-.venv-horovod}"
PY="${PYTHON:-python3.11}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"

test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip "setuptools<70" wheel

# 1. TensorFlow first: horovod's cmake imports tensorflow at build time, so the
#    build cannot be isolated (with isolation cmake says "Could NOT find Tensorflow").
"$VENV/bin/pip" install --quiet --disable-pip-version-check -c "$HERE/constraints-horovod.txt" tensorflow-cpu numpy
export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
       HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 MAKEFLAGS="-j$(nproc)"
# 2. Horovod without its [spark] extra: that extra pins pyarrow < 11 for petastorm
#    (Horovod's estimators), which horovod.spark.run does not use; deltalake needs a newer pyarrow.
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-build-isolation -c "$HERE/constraints-horovod.txt" \
    horovod pyspark pyarrow pandas scikit-learn deltalake pyyaml matplotlib pytest
# 3. segae-spark without its dependency metadata: it declares TensorFlow >= 2.16 / Keras 3 for
#    the main environment; here the built-in dense and batch-norm models run on Keras 2.15.
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$HERE"

"$VENV/bin/horovodrun" --check-build
TF_CPP_MIN_LOG_LEVEL=2 "$VENV/bin/python" -c \
  "import horovod.tensorflow.keras as hvd, horovod.spark, pyspark, keras; hvd.init(); print('horovod ok: size', hvd.size(), 'pyspark', pyspark.__version__, 'keras', keras.__version__)"
touch "$VENV/.installed"
