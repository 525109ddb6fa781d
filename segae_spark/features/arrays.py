"""Feature vectors between Arrow and numpy.

Preprocessed rows travel to Python workers as an Arrow ``list<float>``
column (``vector_to_array(features, "float32")``); training and scoring both
need them as one contiguous float32 matrix, without a Python loop per row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def feature_matrix(column: pa.Array | pa.ChunkedArray, rows: int) -> np.ndarray:
    """An Arrow list<float> column as a float32 ``(rows, d)`` matrix."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(rows, -1) if rows else values.reshape(0, 0)
