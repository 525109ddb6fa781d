"""spark-submit entry point for batch scoring.

    spark-submit jobs/score_job.py --config conf/score.yaml
    spark-submit jobs/score_job.py --config conf/score.yaml --from 2024-04-01 --to 2024-04-30
    spark-submit jobs/score_job.py --model-dir /models/segae --input /data/transactions \
        --output /data/scored --since-last

Takes the same options and config as ``segae-spark score`` (a command-line
option overrides the config's key); the Spark settings come from
spark-submit, which this job never overrides.
"""

import sys

from segae_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
