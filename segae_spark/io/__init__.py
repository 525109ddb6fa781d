"""Table I/O: read and write Delta, Parquet and CSV tables.

Delta goes through delta-spark when the session has it and through delta-rs
otherwise (executors write the Parquet files, the driver commits once), so a
write is all-or-nothing and, with ``txn=``, safe to retry.
"""

from segae_spark.io.delta_rs import DateRange
from segae_spark.io.tables import WriteResult, read_table, table_row_count, table_version, write_table

__all__ = ["DateRange", "WriteResult", "read_table", "table_row_count", "table_version", "write_table"]
