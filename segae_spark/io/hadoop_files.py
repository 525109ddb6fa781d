"""Small file operations through Hadoop's FileSystem, from the driver, without a Spark job.

Spark ML keeps a stage's params as one JSON line in ``<stage>/metadata/``,
written as a text "table" (a part file and ``_SUCCESS``) by a Spark job and
read back by another. One line needs no job: a model save wrote four such
lines at about 0.75 s each. These helpers write and read the same layout
through the JVM's Hadoop ``FileSystem`` (so every Hadoop path works: local,
HDFS, S3A, ABFS, DBFS), and Spark's own readers read what they write.
"""

from __future__ import annotations

from pyspark.sql import SparkSession

PART_FILE = "part-00000.txt"  # the suffix Spark's text writer gives its part files


def _filesystem(spark: SparkSession, directory: str):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(directory)
    return jvm, path, path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def delete_path(spark: SparkSession, path: str) -> None:
    """Delete ``path`` and everything under it (nothing happens if it does not exist)."""
    _, hadoop_path, fs = _filesystem(spark, path)
    fs.delete(hadoop_path, True)


def write_text_part(spark: SparkSession, directory: str, line: str) -> None:
    """Write ``line`` as ``directory/part-00000.txt`` plus ``_SUCCESS``; the directory must not exist yet."""
    jvm, path, fs = _filesystem(spark, directory)
    if fs.exists(path):
        raise FileExistsError(f"{directory} already exists")
    out = fs.create(jvm.org.apache.hadoop.fs.Path(path, PART_FILE), False)
    try:
        out.write(bytearray((line + "\n").encode("utf-8")))
    finally:
        out.close()
    fs.create(jvm.org.apache.hadoop.fs.Path(path, "_SUCCESS"), False).close()


def read_first_line(spark: SparkSession, directory: str) -> str:
    """The first line of the first part file of ``directory`` (``spark.read.text(directory).first()``)."""
    jvm, path, fs = _filesystem(spark, directory)
    parts = sorted(
        (status.getPath() for status in fs.listStatus(path) if status.isFile()),
        key=lambda p: p.getName(),
    )
    for part in parts:
        if part.getName().startswith(("_", ".")):
            continue
        stream = fs.open(part)
        try:
            reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8"))
            line = reader.readLine()
        finally:
            stream.close()
        if line:
            return line
    raise FileNotFoundError(f"no text line in {directory}")
