"""The numpydoc entries the kernel estimators share, each written once.

The class docstrings are assembled from them, as the two-layer ones are.
"""

from ._base import HISTORY_ATTRIBUTES_DOC

#: The first lines of every kernel estimator's ``sharpness`` entry.
SHARPNESS_MEASURES_DOC = """\
    sharpness : str or None, default='rho'
        One of ``'rho'``, ``'top_eigenvalue'``, ``'trace'``, ``'average'``,
        ``'adaptive_rho'`` or ``'adaptive_average'`` (the measures of
        :data:`sksam.sharpness.MEASURES` but the logit-normalized one)."""

#: The history attributes and those after them, the same for regressor and classifier.
FIT_ATTRIBUTES_DOC = (
    HISTORY_ATTRIBUTES_DOC
    + """
    do_early_stopping_ : bool
        Whether the fit held out a validation part (``early_stopping``
        resolved: ``'auto'`` is True from 200 samples).
    learning_rate_ : float
        The step size used (resolved from ``'auto'``).
    sharpness_ : float or None
        The ``sharpness`` measure of the fitted model.
    krylov_size_ : int
        Number of columns of the Krylov basis the path was computed in.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of the features, when ``X`` has string column names."""
)


def kernel_doc(estimator, precomputed):
    """The entries ``kernel`` to ``learning_rate``, as in the ``estimator`` named."""
    return f"""\
    kernel : str or callable, default='rbf'
        As in :class:`{estimator}` ({precomputed}).
    gamma : float, default=None
        As in :class:`{estimator}`.
    degree : float, default=3
        As in :class:`{estimator}`.
    coef0 : float, default=1
        As in :class:`{estimator}`.
    kernel_params : dict, default=None
        As in :class:`{estimator}`.
    learning_rate : float or 'auto', default='auto'
        As in :class:`{estimator}`."""


def features_doc(estimator):
    """The entries ``n_components`` to ``dtype``, as in the ``estimator`` named."""
    return f"""\
    n_components : int, default=None
        Number of Nystroem centres, as in :class:`{estimator}`.
    centers : array-like of shape (M, n_features), default=None
        The Nystroem centres themselves, as in :class:`{estimator}`.
    device : str or torch.device, default=None
        Torch device of the Nystroem or primal path, as in
        :class:`{estimator}`.
    dtype : {{'float64', 'float32'}}, default=None
        Precision of the torch blocks, as in :class:`{estimator}`."""


def cv_sections_doc(estimator, score, max_iter, cv_split, class_weight="", classes=""):
    """The Parameters and Attributes sections of a CV search of ``estimator``.

    ``score`` names the fold score and ``cv_split`` the splitter of an int
    ``cv``; ``max_iter`` ends that entry, and a classifier adds its
    ``class_weight`` and ``classes_`` entries (whole lines, each).
    """
    return (
        f"""
    Parameters
    ----------
    solvers : list of {{'gd', 'sam', 'usam'}}, default=('gd', 'sam')
        Update rules to compare (``'gd'`` ignores ``rho``: it is fitted once
        per fold and scored for every ``rho``).
    rhos : list of float, default=(0.01, 0.05, 0.1, 0.5)
        SAM radii to compare.
    max_iter : int, default=10000
        Longest path; every number of steps up to it is a candidate.
{max_iter}    cv : int, cross-validation generator or iterable, default=5
        As in :class:`~sklearn.model_selection.GridSearchCV`
        (``{cv_split}`` for an int).
"""
        + kernel_doc(estimator, "not ``'precomputed'``")
        + "\n"
        + class_weight
        + features_doc(estimator)
        + "\n"
        + SHARPNESS_MEASURES_DOC
        + f"""
        The measure stored in ``sharpness_`` by the refitted model, as in
        :class:`{estimator}` (``'rho'`` with the chosen ``rho_``).
    selection : {{'rope', 'one_se', 'best'}}, default='rope'
        How the solver is chosen when ``solvers`` holds ``'gd'`` and another
        solver. ``'rope'``: the best non-GD candidate is kept only when the
        posterior probability that its gain over GD's best exceeds ``rope``
        is at least 0.95 (``gain_test_.p_better``, the decision rule of
        Benavoli et al., 2017); otherwise GD's best candidate is chosen: a
        gain that is within noise, or real but smaller than ``rope``, keeps
        the cheaper solver. ``'one_se'``: it is kept when its gain
        (``gain_``) exceeds one corrected standard error
        (``gain_std_error_``). ``'best'``: the candidate of highest mean
        score, however small its lead. The number of steps and ``rho`` are
        those of the chosen solver's best candidate.
    rope : float, default=0.01
        Half-width of the region of practical equivalence of the gain, in
        score units ({score}); used by ``selection='rope'`` and reported in
        ``gain_test_``.
    n_jobs : int, default=None
        Folds run in parallel through joblib (so ``joblib.parallel_config(
        backend='dask')`` spreads them over a Dask cluster). Each fold builds
        its kernel matrix (or Nystroem moments) and Krylov basis once, for
        all its ``(solver, rho)`` paths: the memory of ``n_jobs`` folds.
    random_state : int, RandomState instance or None, default=None
        Seeds the Nystroem centres (the same in every fold and in the refit).
    verbose : int, default=0
        Verbosity of joblib.

    Attributes
    ----------
{classes}\
    cv_results_ : dict of ndarray
        scikit-learn's layout: ``params``, ``param_solver``, ``param_rho``,
        ``param_max_iter``, ``split{{k}}_test_score`` ({score}),
        ``mean_test_score``, ``std_test_score``, ``rank_test_score``;
        candidates in the order of ``ParameterGrid({{'max_iter': ..., 'rho':
        ..., 'solver': ...}})``.
    best_index_ : int
        Index of the chosen candidate in ``cv_results_`` (by ``selection``:
        not the first in ``rank_test_score`` when GD is kept within noise).
    best_params_ : dict
        Its ``solver``, ``rho`` and ``max_iter``.
    best_score_ : float
        Its mean cross-validated {score}.
    solver_, rho_ : str, float
        The chosen solver and radius.
    n_iter_ : int
        The chosen number of steps.
    estimator_ : {estimator}
        The best candidate refitted on all the data.
    sharpness_ : float or None
        ``estimator_.sharpness_``.
    gain_ : float or None
        Mean over folds of the paired difference between the fold scores of
        the best non-GD candidate and of the best GD candidate (``None``
        without both). Positive: SAM scored higher. Optimistic for SAM,
        which picks its best among several radii.
    gain_std_error_ : float or None
        Standard error of ``gain_``, corrected for the overlap of the
        training folds (Nadeau and Bengio: ``(1/k + n_test/n_train) s^2``
        from the fold sizes).
    gain_test_ : PairedTestResult or None
        The corrected paired t-test and Bayesian correlated t-test of the
        gain (p-value, ``confidence_interval()``, ``p_worse``,
        ``p_equivalent``, ``p_better`` with ``rope``), see
        :func:`sksam.model_selection.corrected_paired_ttest`.
    refit_time_ : float
        Seconds spent refitting ``estimator_`` on all the data.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of the features, when ``X`` has string column names.
"""
    )
