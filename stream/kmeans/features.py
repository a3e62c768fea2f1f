"""Inputs as float32 rows: dicts matched by feature name, DataFrames by column, arrays by position.

The model fixes its feature order on its first named input: a DataFrame's columns as
they are, a dict's names sorted (a dict's key order carries no meaning in river, so two
models fed the same dicts in another key order must learn the same). Numpy rows are
positional, in that order.

Example:

>>> row, names = dict_row({"b": 2.0, "a": 1.0}, None, None)
>>> row.tolist(), names
([1.0, 2.0], ['a', 'b'])
>>> dict_row({"a": 5.0, "c": 9.0}, names, 2)[0].tolist()  # unknown names ignored, missing ones 0
[5.0, 0.0]
>>> X, names, dim = as_matrix([[1, 2], [3, 4]], names, 2)
>>> X.dtype, X.shape, dim
(dtype('float32'), (2, 2), 2)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["as_matrix", "dict_order", "dict_row"]


def dict_order(names: Iterable[Any]) -> list[Any]:
    """Feature names in a canonical order (sorted; by type, then repr, for names of several types)."""
    try:
        return sorted(names)
    except TypeError:
        return sorted(names, key=lambda name: (type(name).__qualname__, repr(name)))


def dict_row(x: dict, features: list[Any] | None, dim: int | None) -> tuple[np.ndarray, list[Any]]:
    """``x`` as a float32 row in ``features`` order (fixed from ``x`` when ``None``), and the features."""
    if features is None:
        if dim is not None and len(x) != dim:
            raise ValueError(f"first dict has {len(x)} features, the model has dim {dim}")
        features = dict_order(x)
    get = x.get
    return np.fromiter((get(f, 0.0) for f in features), dtype=np.float32, count=len(features)), features


def as_matrix(X: Any, features: list[Any] | None, dim: int | None) -> tuple[np.ndarray, list[Any] | None, int]:
    """``X`` (array-like or DataFrame) as float32 rows; returns them, the features and the dimension.

    A DataFrame fixes the features when there are none yet, and is read in their order;
    a 1-d input is one row. Raises ``ValueError`` for another dimension than ``dim``.
    """
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):  # a pandas DataFrame
        if features is None:
            features = list(X.columns)
        else:
            X = X[features]
        X = X.to_numpy()
    arr = np.asarray(X, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-d array, got shape {arr.shape}")
    if dim is None:
        dim = int(arr.shape[1])
    elif arr.shape[1] != dim:
        raise ValueError(f"expected {dim} features, got {arr.shape[1]}")
    return arr, features, dim
