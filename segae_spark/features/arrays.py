"""Feature vectors between Arrow and numpy.

Preprocessed rows travel to Python workers as an Arrow ``list<float>``
column (``vector_to_array(features, "float32")``), or as the assembler's
plain input columns (:class:`ArrayAssembly`); training and scoring both
need them as one contiguous matrix, without a Python loop per row. Nothing
here imports Spark: local scoring (:mod:`segae_spark.local_scoring`) builds
the same matrix from a pandas frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segae_spark.errors import SchemaError


def feature_matrix(column: pa.Array | pa.ChunkedArray, rows: int) -> np.ndarray:
    """An Arrow list<float> column as a float32 ``(rows, d)`` matrix."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(rows, -1) if rows else values.reshape(0, 0)


@dataclass(frozen=True)
class ArrayAssembly:
    """How the columns before the ``VectorAssembler`` become the feature matrix, in numpy.

    Scoring needs the features as a numpy matrix in the Python worker. Built
    in the JVM, each row's vector costs a ``VectorAssembler`` object, a
    vector-to-array copy and a nested Arrow list (measured: half the JVM time
    of a 2M-row scoring job); sent as the assembler's plain input columns
    (``columns``: numbers, and one slot number per one-hot column) it is
    assembled per Arrow batch with a few numpy writes. ``widths[i]`` is 0 for
    a column holding one feature value, and ``n`` for a column holding a
    one-hot slot number that expands to ``n`` positions, as the one-hot
    vectors would.
    """

    columns: tuple[str, ...]
    widths: tuple[int, ...]

    def matrix(self, batch: pa.RecordBatch) -> np.ndarray:
        """The batch's float64 ``(rows, features)`` matrix: VectorAssembler's vectors, position for position."""
        rows = batch.num_rows
        x = np.zeros((rows, sum(max(w, 1) for w in self.widths)), dtype=np.float64)
        position = 0
        for name, width in zip(self.columns, self.widths):
            values = batch.column(name).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            if np.isnan(values).any():
                # VectorAssembler(handleInvalid="error") refuses these too; imputation leaves none
                raise SchemaError(f"preprocessed column {name} holds null or NaN values; the features cannot be assembled")
            if width:
                x[np.arange(rows), position + values.astype(np.int64)] = 1.0
            else:
                x[:, position] = values
            position += max(width, 1)
        return x
