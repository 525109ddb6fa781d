"""spark-submit entry point for batch scoring.

    spark-submit jobs/score_job.py --model-dir /models/segae --input /data/transactions \
        --output /data/scored --mode append

Takes the same options as ``segae-spark score``; the Spark settings come from
spark-submit, which this job never overrides.
"""

import sys

from segae_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
