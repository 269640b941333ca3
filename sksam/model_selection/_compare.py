"""``compare_solvers``: paired, nested cross-validation of GD against SAM and its variants.

The loop is scikit-learn's ``cross_validate``'s: splits from any
CV splitter (``check_cv``), a scorer from ``check_scoring``, one job per
(outer split, solver) in joblib's ``Parallel``. Inside each outer training
part the solver's own parameters (``rho``, a cheap variant's ``sam_every``)
are chosen by an inner cross-validation, so the outer test scores estimate
what a user would get by tuning each solver, not the best of many tries.
"""

import numbers
import time

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone, is_classifier
from sklearn.metrics import check_scoring, get_scorer_names
from sklearn.model_selection import (
    GridSearchCV,
    ParameterGrid,
    RepeatedKFold,
    RepeatedStratifiedKFold,
    check_cv,
)
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions, validate_params
from sklearn.utils.multiclass import type_of_target

from ..inspection._displays import final_estimator, param_prefix, sharpness_or_nan
from ._result import SolverComparison

#: Radii tried by the inner search when ``param_grid`` is None.
DEFAULT_RHOS = (0.01, 0.05, 0.1, 0.5)

#: The cheap variants (SAM every k steps and the like): their period is searched too.
_SCHEDULED = ("every_k", "looksam", "rst", "aesam")
DEFAULT_SAM_EVERY = (2, 5)


@validate_params(
    {
        "estimator": [HasMethods(["fit", "get_params"])],
        "X": ["array-like", "sparse matrix"],
        "y": ["array-like"],
        "solvers": [list, tuple],
        "param_grid": [dict, None],
        "baseline": [str, None],
        "cv": ["cv_object"],
        "inner_cv": ["cv_object"],
        "scoring": [StrOptions(set(get_scorer_names())), callable, None],
        "rope": [Interval(numbers.Real, 0, None, closed="left")],
        "n_jobs": [numbers.Integral, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    },
    prefer_skip_nested_validation=False,  # the estimators validate their own parameters
)
def compare_solvers(
    estimator,
    X,
    y,
    *,
    solvers=("gd", "sam"),
    param_grid=None,
    baseline=None,
    cv=None,
    inner_cv=3,
    scoring=None,
    rope=0.01,
    n_jobs=None,
    random_state=None,
    verbose=0,
):
    """Compare solvers on the same splits, each tuned by an inner CV.

    For each outer train/test split and each solver, the estimator is
    cloned with that solver, its solver parameters (``param_grid``) are
    chosen by a cross-validation **inside the outer training part**, the
    chosen model is refitted on that part and scored on the outer test part.
    Every solver sees the same splits, the same ``random_state`` (so the
    same initialization and mini-batch order) and the same scorer: the
    score differences are paired. The result holds the per-split scores and
    the corrected paired tests of every solver against ``baseline``.

    Parameters
    ----------
    estimator : estimator
        An unfitted sksam estimator with a ``solver`` parameter, or a
        :class:`~sklearn.pipeline.Pipeline` /
        :class:`~sklearn.compose.TransformedTargetRegressor` ending in one
        (the solver of the final step is set, by its step name).
    X : array-like of shape (n_samples, n_features)
        Data.
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Targets.
    solvers : sequence of str or (label, dict), default=('gd', 'sam')
        The candidates. A string is a value of the final step's
        ``solver``; a ``(label, params)`` pair sets several parameters of
        the final step (e.g. ``('sam-k5', {'solver': 'every_k',
        'sam_every': 5})``). At least two, with distinct labels.
    param_grid : dict, default=None
        The inner search of each solver, over parameters of the final step.
        Either one grid (``{'rho': [...]}``) used for every solver but
        ``'gd'``, or a dict from solver label to its grid (``{}`` or a
        missing label: no search). When None, ``rho`` is searched over
        ``DEFAULT_RHOS`` for every solver but ``'gd'``, and the cheap
        variants' ``sam_every`` over ``DEFAULT_SAM_EVERY`` too. For
        :class:`~sksam.SAMKernelRegressor` and
        :class:`~sksam.SAMKernelClassifier` the inner search is their CV
        twin (:class:`~sksam.SAMKernelRegressorCV`,
        :class:`~sksam.SAMKernelClassifierCV`), which also chooses the
        number of steps (for GD as well) from one path per ``rho`` and
        fold; only ``rho`` can be searched there.
    baseline : str, default=None
        Label of the solver the others are compared with: ``'gd'`` when it
        is among ``solvers``, else the first one.
    cv : int, cross-validation generator or iterable, default=None
        The outer splits. None: 5-fold repeated twice (10 paired
        differences), stratified for classifiers, shuffled with
        ``random_state``. An int or splitter as in
        scikit-learn's ``cross_validate``.
    inner_cv : int, cross-validation generator or iterable, default=3
        The splits of the inner search, inside each outer training part.
    scoring : str or callable, default=None
        Score to compare (greater is better), as in ``cross_validate``;
        the estimator's ``score`` (accuracy, :math:`R^2`) when None.
    rope : float, default=0.01
        Half-width of the region of practical equivalence, in score units:
        two solvers whose mean scores differ by less are practically equal.
    n_jobs : int, default=None
        Jobs of joblib's ``Parallel`` over the (split, solver) fits; under
        ``joblib.parallel_config(backend='dask')`` they run on a Dask
        cluster.
    random_state : int, RandomState instance or None, default=None
        Seeds the default outer splits and draws one seed per split that is
        given to the final step's ``random_state`` (when it has one) for
        every solver.
    verbose : int, default=0
        Progress: a tqdm bar over the fits when tqdm is installed, else
        joblib's messages.

    Returns
    -------
    result : SolverComparison
        Per-split scores, fit times, sharpness and chosen parameters of
        every solver, and the paired tests against ``baseline``.

    See Also
    --------
    corrected_paired_ttest : The statistics, on any table of differences.
    sksam.inspection.ComparisonDisplay : Draws the result.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sksam import SAMKernelRegressor
    >>> from sksam.model_selection import compare_solvers
    >>> X, y = load_diabetes(return_X_y=True)
    >>> result = compare_solvers(SAMKernelRegressor(max_iter=100), X, y / 100,
    ...                          random_state=0)
    >>> result.contrasts
    ['sam']
    """
    candidates = _candidates(solvers)
    labels = [label for label, _ in candidates]
    baseline = _baseline(baseline, labels)
    prefix, final = _final_step(estimator)
    grids = {label: _grid_of(label, params, param_grid, final) for label, params in candidates}
    splits = _outer_splits(cv, estimator, X, y, random_state)
    scorer = check_scoring(estimator, scoring=scoring)
    seeds = check_random_state(random_state).randint(np.iinfo(np.int32).max, size=len(splits))
    seeded = "random_state" in final.get_params(deep=False)
    jobs = [
        (k, label, params, split) for k, split in enumerate(splits) for label, params in candidates
    ]
    outputs = _run(
        (
            delayed(_fit_and_score)(
                estimator,
                X,
                y,
                *split,
                prefix=prefix,
                params=({"random_state": int(seeds[k])} if seeded else {}) | params,
                grid=grids[label],
                inner_cv=inner_cv,
                scorer=scorer,
            )
            for k, label, params, split in jobs
        ),
        len(jobs),
        n_jobs,
        verbose,
    )
    return SolverComparison.from_records(
        [{"split": k, "solver": label, **out} for (k, label, _, _), out in zip(jobs, outputs)],
        labels=labels,
        baseline=baseline,
        scoring=_scoring_name(scoring, estimator),
        rope=rope,
    )


def _candidates(solvers):
    """``[(label, params)]`` from strings and ``(label, params)`` pairs."""
    candidates = []
    for item in solvers:
        if isinstance(item, str):
            candidates.append((item, {"solver": item}))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict):
            candidates.append((str(item[0]), dict(item[1])))
        else:
            raise ValueError(
                f"solvers must hold solver names or (label, params) pairs, got {item!r}."
            )
    labels = [label for label, _ in candidates]
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ValueError(f"solvers must hold at least two distinct labels, got {labels!r}.")
    return candidates


def _baseline(baseline, labels):
    if baseline is None:
        return "gd" if "gd" in labels else labels[0]
    if baseline not in labels:
        raise ValueError(f"baseline={baseline!r} is not one of the solvers {labels!r}.")
    return baseline


def _final_step(estimator):
    """The ``set_params`` prefix of the final sksam model, and that model."""
    prefix, final = param_prefix(estimator)
    if not {"solver", "rho"} <= set(final.get_params(deep=False)):
        raise ValueError(
            f"estimator must be a sksam estimator (with 'solver' and 'rho') or a "
            f"Pipeline ending in one; its final step is {type(final).__name__}."
        )
    return prefix, final


def _grid_of(label, params, param_grid, final):
    """The inner grid of one solver (``{}``: fit once, no search)."""
    if param_grid is None:
        if params.get("solver") == "gd":
            return {}
        grid = {"rho": list(DEFAULT_RHOS)}
        if params.get("solver") in _SCHEDULED and "sam_every" in final.get_params(deep=False):
            grid["sam_every"] = list(DEFAULT_SAM_EVERY)
        return grid
    if param_grid and all(isinstance(v, dict) for v in param_grid.values()):
        return dict(param_grid.get(label, {}))
    return {} if params.get("solver") == "gd" else dict(param_grid)


def _outer_splits(cv, estimator, X, y, random_state):
    """The outer (train, test) index pairs, listed once for every solver."""
    classifier = is_classifier(estimator)
    if cv is None:
        stratify = classifier and type_of_target(y) in ("binary", "multiclass")
        splitter = RepeatedStratifiedKFold if stratify else RepeatedKFold
        cv = splitter(n_splits=5, n_repeats=2, random_state=_seed(random_state))
    splits = list(check_cv(cv, y, classifier=classifier).split(X, y))
    if len(splits) < 2:
        raise ValueError(f"cv={cv!r} gives {len(splits)} split; a paired test needs at least 2.")
    return splits


def _seed(random_state):
    """An int for the splitter, so that the splits do not consume the seed stream."""
    if random_state is None or isinstance(random_state, numbers.Integral):
        return random_state
    return check_random_state(random_state).randint(np.iinfo(np.int32).max)


def _fit_and_score(estimator, X, y, train, test, *, prefix, params, grid, inner_cv, scorer):
    """One (split, solver): inner search on ``train``, refit, score on ``test``."""
    model = clone(estimator).set_params(**{prefix + k: v for k, v in params.items()})
    X_train, y_train = _safe_indexing(X, train), _safe_indexing(y, train)
    start = time.perf_counter()
    fitted, chosen, refit_time = _search(model, prefix, grid, inner_cv, scorer, X_train, y_train)
    search_time = time.perf_counter() - start
    start = time.perf_counter()
    score = scorer(fitted, _safe_indexing(X, test), _safe_indexing(y, test))
    return {
        "score": float(score),
        "fit_time": refit_time,
        "search_time": search_time,
        "score_time": time.perf_counter() - start,
        "sharpness": float(sharpness_or_nan(fitted)),
        "n_train": len(train),
        "n_test": len(test),
        "params": chosen,
    }


def _search(model, prefix, grid, inner_cv, scorer, X, y):
    """Fit ``model`` with its grid chosen by ``inner_cv``: (fitted, chosen params, refit time)."""
    # imported here: the kernel CV estimators import this package's statistics
    from .._kernel_classifier import SAMKernelClassifier  # noqa: PLC0415
    from .._kernel_cv import SAMKernelClassifierCV, SAMKernelRegressorCV  # noqa: PLC0415
    from ..kernel import SAMKernelRegressor  # noqa: PLC0415

    _, final = param_prefix(model)
    twins = {SAMKernelRegressor: SAMKernelRegressorCV, SAMKernelClassifier: SAMKernelClassifierCV}
    if type(final) in twins:
        return _kernel_path_search(model, prefix, final, twins[type(final)], grid, inner_cv, X, y)
    if len(ParameterGrid(grid)) > 1:
        search = GridSearchCV(
            model,
            {prefix + k: list(v) for k, v in grid.items()},
            scoring=scorer,
            cv=inner_cv,
            error_score="raise",
        ).fit(X, y)
        chosen = {k[len(prefix) :]: v for k, v in search.best_params_.items()}
        return search.best_estimator_, chosen, search.refit_time_
    model.set_params(**{prefix + k: v[0] for k, v in grid.items()})
    start = time.perf_counter()
    model.fit(X, y)
    return model, {k: v[0] for k, v in grid.items()}, time.perf_counter() - start


def _kernel_path_search(model, prefix, final, twin, grid, inner_cv, X, y):
    """The kernel estimators' search: their CV twin, one path per ``rho`` and fold.

    Every ``rho`` and number of steps is scored from the one path of each
    inner fold (nothing is refitted per ``rho`` or per step); the twin
    refits the chosen candidate on the outer training part.
    """
    extra = sorted(set(grid) - {"rho"})
    if extra:
        raise ValueError(
            f"param_grid for {type(final).__name__} can search only 'rho' (its CV twin "
            f"chooses the number of steps along the path), got {extra}."
        )
    params = final.get_params(deep=False)
    cv_params = {name: params[name] for name in twin._passed_params}
    cv_estimator = twin(
        solvers=[final.solver],
        rhos=list(grid.get("rho", [final.rho])),
        max_iter=final.max_iter,
        cv=inner_cv,
        sharpness=final.sharpness,
        selection="best",
        **cv_params,
    )
    if prefix:
        model.set_params(**{prefix[:-2]: cv_estimator})
    else:
        model = cv_estimator
    model.fit(X, y)
    fitted_cv = final_estimator(model)
    chosen = {"max_iter": fitted_cv.n_iter_}
    if fitted_cv.solver_ != "gd":  # GD's path ignores rho
        chosen["rho"] = fitted_cv.rho_
    return model, chosen, fitted_cv.refit_time_


def _run(tasks, n_tasks, n_jobs, verbose):
    """``Parallel`` over the tasks, with a tqdm bar when ``verbose`` and tqdm allow."""
    if verbose:
        try:
            from tqdm.auto import tqdm  # noqa: PLC0415
        except ImportError:
            pass
        else:
            results = Parallel(n_jobs=n_jobs, return_as="generator")(tasks)
            return list(tqdm(results, total=n_tasks, desc="compare_solvers", unit="fit"))
    return Parallel(n_jobs=n_jobs, verbose=verbose)(tasks)


def _scoring_name(scoring, estimator):
    if isinstance(scoring, str):
        return scoring
    if scoring is None:
        return "accuracy" if is_classifier(estimator) else "r2"
    return getattr(scoring, "__name__", "score")
