"""river's own estimator checks on MiniBatchKMeans, as river's test suite runs them on its estimators.

river's ``yield_checks`` has no dataset for a clusterer (its ``_yield_datasets`` yields none), so
only the dataset-free checks would run. Here it is given a stream river's checks can feed to a
clusterer (dicts of blob points, no target), so the dataset checks run as well: learning does
not mutate its input, feature order and emerging or missing features, clone independence,
bounded memory, ...
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from river import checks
from river.checks.common import check_shuffle_features_no_impact

from stream.kmeans import MiniBatchKMeans


def _blob_stream(scale: int = 1) -> list[tuple[dict[str, float], None]]:
    rng = np.random.default_rng(0)
    n, dim = 200 * scale, 6
    X = np.eye(dim)[rng.integers(0, 3, n)] + rng.normal(0.0, 0.1, (n, dim))
    return [({f"x{i}": float(v) for i, v in enumerate(row)}, None) for row in X]


def _datasets(model, scale: int = 1):
    yield _blob_stream(scale)


def _cases():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checks, "_yield_datasets", _datasets)
        for params in MiniBatchKMeans._unit_test_params():
            model = MiniBatchKMeans(**params)
            for check in checks.yield_checks(model):
                yield pytest.param(model, check, id=f"{params}:{check.__name__}")


CASES = list(_cases())


def test_the_dataset_checks_run():
    names = {case.values[1].__name__ for case in CASES}
    assert {"check_learn_one", "check_shuffle_features_no_impact", "check_emerging_features",
            "check_clone_is_independent", "check_bounded_memory_growth"} <= names


@pytest.mark.parametrize(("model", "check"), CASES)
def test_river_estimator_check(model, check):
    if check.__name__ in model._unit_test_skips():
        pytest.skip(f"{check.__name__} is listed in MiniBatchKMeans._unit_test_skips")
    random.seed(0)  # river's checks shuffle and drop features with the global generator
    check(model.clone())


@pytest.mark.parametrize("seed", range(5))
def test_feature_order_of_dicts_never_matters(seed):
    """river's shuffle check under several shuffles: the first dict's key order must not fix the
    column order (its rows would then sort, sum and tie-break differently)."""
    random.seed(seed)
    check_shuffle_features_no_impact(MiniBatchKMeans(n_clusters=3), dataset=_blob_stream())
