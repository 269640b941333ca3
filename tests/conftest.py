"""Shared test settings."""

import os
import warnings

import pytest

# One BLAS/torch thread: the tests run on small problems where threads only add
# noise, and parallel tests (n_jobs=2) must not oversubscribe a small machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    import torch
except ImportError:  # the kernel tests need no torch
    torch = None
else:
    torch.set_num_threads(1)


# --------------------------------------------------------------------------
# the slow marker (registered in pyproject.toml)
# --------------------------------------------------------------------------

#: Tests that took over ~5 s (``pytest --durations``, 2-core CPU, one thread),
#: marked slow so that ``python -m pytest -m "not slow"`` runs the rest in
#: about a minute; CI runs all. An entry is a test (all its parameters) or one
#: parametrized case. The docs and gallery tests carry ``@pytest.mark.slow``
#: themselves, and so does every test on the multi-process ``ranks`` fixture.
SLOW_TESTS = {
    "tests/test_distributed.py::test_grid_search_over_rho_on_dask_matches_local",
    "tests/test_docstrings.py::test_docstring_examples_run[sksam.net.SAMNetClassifier]",
    "tests/test_import_cost.py::test_kernel_side_never_imports_torch",
    "tests/test_import_cost.py::test_nets_pay_for_torch_at_import_and_their_first_fit_imports_nothing",
    "tests/test_import_cost.py::test_two_layer_pays_for_torch_at_import_and_its_first_fit_imports_nothing",
    "tests/test_net.py::test_grid_search_over_rho_and_solver_in_parallel",
    "tests/test_net_trust.py::test_sam_and_gd_differ_where_sam_can_act",
    "tests/test_sharpness_measures.py::test_adaptive_rho_agrees_with_brute_force_on_a_small_network",
    "tests/test_sharpness_measures.py::test_average_agrees_with_plain_monte_carlo_on_a_small_network",
    "tests/test_transactional.py::test_a_fit_succeeds_or_changes_nothing[kernel_cv]",
    "tests/test_transactional.py::test_a_fit_succeeds_or_changes_nothing[net_classifier]",
    "tests/test_transactional.py::test_a_fit_succeeds_or_changes_nothing[net_regressor]",
    "tests/test_transactional.py::test_a_fit_succeeds_or_changes_nothing[two_layer_regressor]",
    "tests/test_two_layer.py::test_grid_search_n_jobs_2_fits_with_one_thread_each",
    "tests/test_two_layer_defaults.py::test_classifier_defaults_learn_clean_data_silently",
    "tests/test_two_layer_defaults.py::test_single_class_without_the_stopping_rule_warns",
    "tests/test_two_layer_robustness.py::test_a_failed_fit_leaves_the_estimator_as_before",
    "tests/test_two_layer_robustness.py::test_grid_search_threading_backend_matches_sequential",
}


def pytest_collection_modifyitems(config, items):
    """Mark :data:`SLOW_TESTS` and the multi-process tests slow; name stale entries."""
    matched = set()
    for item in items:
        for entry in (item.nodeid, item.nodeid.split("[")[0]):
            if entry in SLOW_TESTS:
                matched.add(entry)
                item.add_marker(pytest.mark.slow)
        if "ranks" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    collected_files = {item.nodeid.split("::")[0] for item in items}
    stale = [e for e in SLOW_TESTS - matched if e.split("::")[0] in collected_files]
    whole_files = not any("::" in arg for arg in config.args)
    filtered = config.getoption("keyword") or config.getoption("markexpr")
    if stale and whole_files and not filtered:
        warnings.warn(
            f"tests/conftest.py SLOW_TESTS names tests that no longer exist: {sorted(stale)}",
            pytest.PytestConfigWarning,
            stacklevel=1,
        )
