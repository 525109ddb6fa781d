"""spark-submit entry point for training.

    spark-submit jobs/train_job.py --input /data/transactions --model-dir /models/segae \
        --label-col is_fraud --config conf/train.yaml

Takes the same options as ``segae-spark train`` (the paths may instead come
from the ``train:`` section of the config); the Spark settings come from
spark-submit, which this job never overrides.
"""

import sys

from segae_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
