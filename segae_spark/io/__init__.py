"""Table I/O: read and write Delta, Parquet and CSV tables.

Delta goes through delta-spark when the session has it and through delta-rs
otherwise (executors write the Parquet files, the driver commits once), so a
write is all-or-nothing and, with ``txn=``, safe to retry. ``write_table``
also takes an :class:`ArrowMap` (``SegmentAEModel.arrow_transform``), whose
per-batch function the delta-rs writer runs in its own Python pass.
"""

from segae_spark.io.arrow_map import ArrowMap
from segae_spark.io.delta_rs import DateRange
from segae_spark.io.tables import WriteResult, read_table, table_row_count, table_version, vacuum_table, write_table

__all__ = ["ArrowMap", "DateRange", "WriteResult", "read_table", "table_row_count", "table_version", "vacuum_table", "write_table"]
