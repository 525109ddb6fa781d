# Databricks notebook source
# MAGIC %md
# MAGIC # segae-spark quickstart
# MAGIC Segment-wise autoencoder anomaly detection on a Delta table of transactions.
# MAGIC Install the library on the cluster (`%pip install segae-spark`), then run the cells.
# MAGIC On Databricks the active session (with native Delta) is reused as it is.

# COMMAND ----------

from pyspark.sql import functions as F

from segae_spark import SegmentAE, SegmentAEModel, evaluate, generate_transactions, get_or_create_session, read_table, write_table

spark = get_or_create_session()
base = "/tmp/segae_quickstart"  # a DBFS / volume path on Databricks

# COMMAND ----------

# MAGIC %md Generate 200,000 synthetic card transactions (or point `read_table` at your own Delta table).

# COMMAND ----------

write_table(generate_transactions(spark, 200_000, seed=42), f"{base}/transactions", mode="overwrite", partition_by=["event_date"])
transactions = read_table(spark, f"{base}/transactions")
train = transactions.filter(F.col("event_date") < "2024-03-01")

# COMMAND ----------

# MAGIC %md Fit: preprocessing, 4 KMeans segments, one Dense autoencoder per segment trained on that segment's normal rows.

# COMMAND ----------

model = SegmentAE(
    labelCol="is_fraud",
    nClusters=4,
    autoencoder={"hidden_layers": [32, 16, 8], "epochs": 30},
    thresholdRatio=2.5,
    seed=42,
).fit(train)
model.write().overwrite().save(f"{base}/model")
display(spark.createDataFrame(model.segment_summary()).drop("train_errors"))  # noqa: F821 (Databricks builtin)

# COMMAND ----------

# MAGIC %md Score every transaction (one pass, no shuffle) and write a Delta table; evaluate the held-out period.

# COMMAND ----------

scored = SegmentAEModel.load(f"{base}/model").transform(transactions)
write_table(scored, f"{base}/scored", mode="overwrite", partition_by=["event_date"])
metrics = evaluate(read_table(spark, f"{base}/scored").filter(F.col("event_date") >= "2024-03-01"), "is_fraud")
metrics["global"]
