"""Grid searches that outgrow one machine: joblib's Dask backend on a local cluster."""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

from sksam import SAMKernelRegressor

distributed = pytest.importorskip("distributed")
joblib = pytest.importorskip("joblib")


@pytest.fixture(scope="module")
def dask_client():
    # Loopback only, no dashboard port, one thread per worker: a small, quiet cluster.
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_grid_search_over_rho_on_dask_matches_local(dask_client):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = np.sin(X[:, 0]) + 0.3 * rng.normal(size=120)
    grid = {"rho": [0.0, 0.05, 0.2], "solver": ["gd", "sam"]}
    template = SAMKernelRegressor(max_iter=50, sharpness=None)

    with distributed.get_task_stream(dask_client) as tasks:
        with joblib.parallel_config(backend="dask"):
            remote = GridSearchCV(template, grid, cv=3, n_jobs=-1).fit(X, y)
    local = GridSearchCV(template, grid, cv=3, n_jobs=1).fit(X, y)

    np.testing.assert_allclose(
        remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"]
    )
    assert remote.best_params_ == local.best_params_
    # the fits ran on the cluster's workers, not in this process
    assert len({task["worker"] for task in tasks.data}) >= 1
    assert len(tasks.data) >= len(remote.cv_results_["params"])
