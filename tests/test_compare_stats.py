"""The paired statistics on score tables: closed forms, references, calibration.

Nothing here fits a sksam model: the tests feed constructed or simulated
tables of differences to ``corrected_paired_ttest`` (the function
``compare_solvers`` and the kernel CV estimators call).
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats
from sklearn.datasets import make_moons
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold, ShuffleSplit
from sklearn.svm import SVC

from sksam.model_selection import (
    SolverComparison,
    corrected_paired_ttest,
    corrected_variance_factor,
)

# --------------------------------------------------------------------------
# closed forms
# --------------------------------------------------------------------------


def test_closed_form_on_a_constructed_table():
    # d = 1..5: mean 3, sample variance 2.5; J = 5, n_test/n_train = 2/8
    # var(mean) = (1/5 + 1/4) * 2.5 = 1.125
    result = corrected_paired_ttest([1, 2, 3, 4, 5], n_train=8, n_test=2, rope=0.5)
    se = np.sqrt(1.125)
    assert result.statistic == 3.0
    assert result.std_error == pytest.approx(se, rel=1e-14)
    assert result.tstatistic == pytest.approx(3 / se, rel=1e-14)
    assert result.df == 4
    assert result.pvalue == pytest.approx(2 * stats.t.sf(3 / se, 4), rel=1e-12)
    half = stats.t.ppf(0.975, 4) * se
    assert_allclose(result.confidence_interval(), (3 - half, 3 + half), rtol=1e-12)
    assert result.p_worse == pytest.approx(stats.t.cdf((-0.5 - 3) / se, 4), rel=1e-12)
    assert result.p_better == pytest.approx(stats.t.sf((0.5 - 3) / se, 4), rel=1e-12)
    assert result.p_worse + result.p_equivalent + result.p_better == pytest.approx(1)


def test_the_factor_uses_the_actual_split_sizes_for_any_ratio():
    # 20 shuffle splits of 100 rows with half held out: 1/20 + 50/50, not the
    # k-fold 1/J + 1/(J - 1) that baycomp hard-codes
    splits = list(ShuffleSplit(20, test_size=0.5, random_state=0).split(np.zeros(100)))
    n_train = [len(tr) for tr, _ in splits]
    n_test = [len(te) for _, te in splits]
    assert corrected_variance_factor(n_train, n_test) == pytest.approx(1 / 20 + 1.0)
    # uneven folds: the ratio of the summed sizes
    assert corrected_variance_factor([7, 8], [3, 2]) == pytest.approx(1 / 2 + 5 / 15)


def test_one_sided_alternatives_and_the_sign():
    d = np.array([0.02, 0.01, 0.03, 0.00, 0.02])
    two = corrected_paired_ttest(d, 80, 20)
    greater = corrected_paired_ttest(d, 80, 20, alternative="greater")
    less = corrected_paired_ttest(-d, 80, 20, alternative="less")
    assert greater.pvalue == pytest.approx(two.pvalue / 2)
    assert less.pvalue == pytest.approx(greater.pvalue)
    assert greater.p_better > greater.p_worse


def test_differences_that_do_not_vary():
    zero = corrected_paired_ttest(np.zeros(5), 80, 20, rope=0.01)
    assert (zero.pvalue, zero.tstatistic, zero.p_equivalent) == (1.0, 0.0, 1.0)
    assert zero.confidence_interval() == (0.0, 0.0)
    shift = corrected_paired_ttest(np.full(5, 0.1), 80, 20, rope=0.01)
    assert (shift.pvalue, shift.p_better) == (0.0, 1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(differences=[1.0]), "at least 2 finite"),
        (dict(differences=[1.0, np.nan]), "1 not finite"),
        (dict(differences=[1.0, 2.0], rope=-1), "rope must be"),
        (dict(differences=[1.0, 2.0], alternative="bigger"), "alternative must be"),
        (dict(differences=[1.0, 2.0], n_train=0), "positive split sizes"),
    ],
)
def test_errors_name_the_parameter(kwargs, match):
    args = dict(n_train=8, n_test=2) | kwargs
    with pytest.raises(ValueError, match=match):
        corrected_paired_ttest(**args)


# --------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------


def _svc_auc_table():
    """scikit-learn's ``plot_grid_search_stats`` data and splits, rebuilt.

    The AUC of SVC (linear, poly 2, poly 3, rbf kernels) on 10 x 10-fold
    stratified splits of its 100 noisy moons (fitted directly rather than
    through GridSearchCV, which gives the same scores more slowly).
    """
    X, y = make_moons(noise=0.352, random_state=1, n_samples=100)
    cv = RepeatedStratifiedKFold(n_splits=10, n_repeats=10, random_state=0)
    models = [
        SVC(kernel="linear", random_state=0),
        SVC(kernel="poly", degree=2, random_state=0),
        SVC(kernel="poly", degree=3, random_state=0),
        SVC(kernel="rbf", random_state=0),
    ]
    splits = list(cv.split(X, y))
    table = np.array(
        [
            [_auc(y[te], m.fit(X[tr], y[tr]).decision_function(X[te])) for m in models]
            for tr, te in splits
        ]
    )
    return table, [len(tr) for tr, _ in splits], [len(te) for _, te in splits]


def _auc(y_true, decision):
    """ROC AUC by the rank-sum (Mann-Whitney) identity: ``roc_auc_score``, cheaper."""
    ranks = stats.rankdata(decision)
    positive = y_true == 1
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def test_rank_auc_is_roc_auc_score():
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 30), np.round(rng.standard_normal(30), 1)  # with ties
    assert _auc(y, s) == pytest.approx(roc_auc_score(y, s), rel=1e-12)


def test_reproduces_scikit_learns_grid_search_stats_example():
    table, n_train, n_test = _svc_auc_table()
    assert_allclose(table.mean(axis=0), [0.93, 0.6852, 0.9044, 0.94], atol=5e-5)
    rbf_vs_linear = table[:, 3] - table[:, 0]
    result = corrected_paired_ttest(
        rbf_vs_linear, n_train, n_test, rope=0.01, alternative="greater"
    )
    # the example's printed corrected t-test (right-tailed)
    assert round(result.tstatistic, 3) == 0.750
    assert round(result.pvalue, 3) == 0.227
    # and the credible intervals and probabilities its text quotes
    assert_allclose(result.confidence_interval(0.5), (0.000977, 0.019023), atol=1e-6)
    assert_allclose(result.confidence_interval(0.75), (-0.005422, 0.025422), atol=1e-6)
    assert_allclose(result.confidence_interval(0.95), (-0.016445, 0.036445), atol=1e-6)
    assert round(result.p_worse, 3) == 0.068  # "a 6.8% chance of being worse"
    assert round(result.p_equivalent, 2) == 0.43  # "a 43% probability of being ... equivalent"
    rbf_vs_poly3 = corrected_paired_ttest(table[:, 3] - table[:, 2], n_train, n_test, rope=0.01)
    assert round(rbf_vs_poly3.p_worse, 3) == 0.018  # "1.8% chance of being worse"
    assert round(rbf_vs_poly3.p_equivalent, 2) == 0.10  # "a 10% chance"


def test_agrees_with_baycomp_where_its_k_fold_assumption_holds():
    baycomp = pytest.importorskip("baycomp")
    rng = np.random.default_rng(0)
    # 10-fold CV repeated 3 times on 200 rows: n_test/n_train = 20/180 = 1/(10-1)
    x = 0.8 + 0.05 * rng.standard_normal(30)
    y = x - 0.01 + 0.02 * rng.standard_normal(30)
    ours = corrected_paired_ttest(x - y, n_train=180, n_test=20, rope=0.01)
    # baycomp's difference is y - x: its left region is "x better"
    p_left, p_rope, p_right = baycomp.two_on_single(x, y, rope=0.01, runs=3)
    assert_allclose((ours.p_better, ours.p_equivalent, ours.p_worse), (p_left, p_rope, p_right))
    # with shuffle splits of half the data, baycomp's hard-coded 1/(folds-1)
    # would shrink the variance about 10-fold: ours uses the sizes
    halves = corrected_paired_ttest(x - y, n_train=100, n_test=100, rope=0.01)
    assert halves.std_error**2 == pytest.approx((1 / 30 + 1) * np.var(x - y, ddof=1))


# --------------------------------------------------------------------------
# calibration on simulated tables with Nadeau and Bengio's correlation
# --------------------------------------------------------------------------


def _correlated_tables(n_tables, n_splits, ratio, mean, seed):
    """Differences with the correlation ``n_test/n`` between splits.

    ``d_j = mean + sqrt(r) z_0 + sqrt(1 - r) z_j``, ``r = n_test / n``:
    the corrected statistic is then exactly Student t, so a test that
    over-rejects or an interval that under-covers is the code's fault.
    """
    rng = np.random.default_rng(seed)
    r = ratio / (1 + ratio)  # n_test / (n_train + n_test)
    shared = rng.standard_normal((n_tables, 1))
    own = rng.standard_normal((n_tables, n_splits))
    return mean + 0.02 * (np.sqrt(r) * shared + np.sqrt(1 - r) * own)


@pytest.mark.parametrize("n_splits, n_train, n_test", [(10, 80, 20), (20, 50, 50)])
def test_type_one_error_and_coverage_at_their_nominal_rates(n_splits, n_train, n_test):
    n_tables = 2000  # Monte Carlo standard error of a 5% rate: 0.5%
    null = _correlated_tables(n_tables, n_splits, n_test / n_train, 0.0, seed=1)
    rejected = [corrected_paired_ttest(d, n_train, n_test).pvalue < 0.05 for d in null]
    assert abs(np.mean(rejected) - 0.05) < 0.02
    # the uncorrected s^2/J test on the same tables rejects far too often
    naive_t = null.mean(axis=1) / np.sqrt(null.var(axis=1, ddof=1) / n_splits)
    assert np.mean(2 * stats.t.sf(np.abs(naive_t), n_splits - 1) < 0.05) > 0.2
    gain = 0.015
    known = _correlated_tables(n_tables, n_splits, n_test / n_train, gain, seed=2)
    intervals = [corrected_paired_ttest(d, n_train, n_test).confidence_interval() for d in known]
    covered = [low <= gain <= high for low, high in intervals]
    assert abs(np.mean(covered) - 0.95) < 0.02


# --------------------------------------------------------------------------
# the result object on a constructed table
# --------------------------------------------------------------------------


def _result(gain=0.02, n_splits=6):
    rng = np.random.default_rng(0)
    base = 0.8 + 0.02 * rng.standard_normal(n_splits)
    scores = np.column_stack([base, base + gain + 0.005 * rng.standard_normal(n_splits)])
    return SolverComparison(
        labels=["gd", "sam"],
        baseline="gd",
        scores=scores,
        fit_times=np.column_stack([np.ones(n_splits), 2 * np.ones(n_splits)]),
        search_times=np.ones((n_splits, 2)),
        score_times=np.zeros((n_splits, 2)),
        sharpness=np.column_stack([np.full(n_splits, 3.0), np.full(n_splits, 1.0)]),
        params=[[{}, {"rho": 0.05}] for _ in range(n_splits)],
        n_train=np.full(n_splits, 80),
        n_test=np.full(n_splits, 20),
        scoring="accuracy",
        rope=0.01,
    )


def test_result_fields_are_the_tests_of_its_table():
    result = _result()
    d = result.scores[:, 1] - result.scores[:, 0]
    test = corrected_paired_ttest(d, 80, 20, rope=0.01)
    assert result.contrasts == ["sam"]
    assert_allclose(result.statistic, [test.statistic])
    assert_allclose(result.pvalue, [test.pvalue])
    assert_allclose(result.p_better, [test.p_better])
    assert_allclose(result.confidence_interval(), [test.confidence_interval()])
    assert_allclose(result.fit_time_ratio, [2.0])
    assert result.verdict("sam") == ("better" if test.p_better >= 0.95 else "undecided")


def test_summary_html_and_frame():
    pytest.importorskip("pandas")
    result = _result()
    text = result.summary()
    assert "gain vs gd" in text and "P(better)" in text and "2.00x" in text
    assert "rho=0.05 (6/6)" in text
    assert "<table>" in result._repr_html_() and "sam" in result._repr_html_()
    frame = result.to_frame()
    assert len(frame) == 12
    assert set(frame.columns) >= {"split", "solver", "score", "difference", "param_rho"}
    assert_allclose(frame.query("solver == 'gd'")["difference"], 0.0)


# --------------------------------------------------------------------------
# the display: a thin view of the result
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n_solvers", [2, 6])
def test_display_draws_one_row_per_contrast_without_overlapping_labels(n_solvers):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sksam.inspection import ComparisonDisplay

    rng = np.random.default_rng(0)
    labels = ["gd", "sam", "usam", "asam", "every_k", "looksam"][:n_solvers]
    scores = 0.8 + 0.02 * rng.standard_normal((10, n_solvers))
    result = SolverComparison(
        labels=labels,
        baseline="gd",
        scores=scores,
        fit_times=np.tile(np.arange(1.0, n_solvers + 1), (10, 1)),
        search_times=np.ones((10, n_solvers)),
        score_times=np.zeros((10, n_solvers)),
        sharpness=np.ones((10, n_solvers)),
        params=[[{}] * n_solvers] * 10,
        n_train=np.full(10, 80),
        n_test=np.full(10, 20),
        scoring="accuracy",
    )
    display = ComparisonDisplay.from_result(result)
    assert len(display.axes_) == 3
    ticks = [t.get_text() for t in display.axes_[0].get_yticklabels()]
    assert ticks == [f"{label} - gd" for label in labels[1:]]
    assert_allclose(display.statistic, result.statistic)
    assert_allclose([b.get_width() for b in display.axes_[2].patches], result.fit_time_ratio)
    display.figure_.canvas.draw()
    renderer = display.figure_.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in display.axes_[0].get_yticklabels()]
    for upper, lower in zip(boxes, boxes[1:]):
        assert not upper.overlaps(lower)
    texts = [t.get_window_extent(renderer) for t in display.axes_[1].texts]
    for upper, lower in zip(texts, texts[1:]):
        assert not upper.overlaps(lower)
    plt.close(display.figure_)
