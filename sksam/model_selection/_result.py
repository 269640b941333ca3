"""The result of :func:`compare_solvers`: a score table and the paired tests read from it."""

import html
from collections import Counter

import numpy as np

from ..inspection._displays import require
from ._stats import corrected_paired_ttest

#: Posterior probability above which a region is declared (Benavoli et al., 2017).
DECISION_PROBABILITY = 0.95


def _per_contrast(name):
    """A read-only property: ``tests[label].<name>`` for each label of ``contrasts``."""
    return property(
        lambda self: np.array([getattr(self.tests[label], name) for label in self.contrasts]),
        doc=f"``{name}`` of each contrast's test, an ndarray of shape (n_contrasts,).",
    )


class SolverComparison:
    """Per-split scores of several solvers and their paired tests against a baseline.

    Built by :func:`compare_solvers` (or :meth:`from_records` from a table
    of records). Shaped like a ``scipy.stats`` result: named fields,
    ``statistic``, ``pvalue``, :meth:`confidence_interval`; the raw table
    through :meth:`to_frame`. Arrays indexed by contrast follow
    ``contrasts`` (every solver but the baseline).

    Parameters
    ----------
    labels : list of str
        The solvers, in the order of the columns of ``scores``.
    baseline : str
        The label the others are compared with.
    scores : ndarray of shape (n_splits, n_solvers)
        Outer test score of each solver on each split (greater is better).
    fit_times, search_times, score_times : ndarray of shape (n_splits, n_solvers)
        Seconds of the final fit, of the whole inner search (final fit
        included) and of scoring.
    sharpness : ndarray of shape (n_splits, n_solvers)
        ``sharpness_`` of each final fit (NaN where not computed).
    params : list of list of dict
        ``params[k][i]``: the solver parameters chosen by the inner search
        of solver ``i`` on split ``k``.
    n_train, n_test : ndarray of shape (n_splits,)
        Sizes of the outer splits.
    scoring : str, default='score'
        Name of the score.
    rope : float, default=0.01
        Half-width of the region of practical equivalence.

    Attributes
    ----------
    contrasts : list of str
        Every solver but ``baseline``.
    tests : dict of str to PairedTestResult
        The corrected paired t-test and Bayesian correlated t-test of each
        contrast (its score minus the baseline's).
    statistic : ndarray of shape (n_contrasts,)
        Mean paired difference of each contrast (positive: it scores higher
        than the baseline).
    pvalue : ndarray of shape (n_contrasts,)
        Two-sided p-values of the Nadeau–Bengio corrected t-test (not
        adjusted for multiple contrasts).
    std_error : ndarray of shape (n_contrasts,)
        Corrected standard errors of ``statistic``.
    p_worse, p_equivalent, p_better : ndarray of shape (n_contrasts,)
        Posterior probabilities that the mean difference is below ``-rope``,
        within ``[-rope, rope]``, above ``rope``.
    fit_time_ratio : ndarray of shape (n_contrasts,)
        Mean final-fit time of each contrast over the baseline's.
    """

    def __init__(
        self,
        *,
        labels,
        baseline,
        scores,
        fit_times,
        search_times,
        score_times,
        sharpness,
        params,
        n_train,
        n_test,
        scoring="score",
        rope=0.01,
    ):
        self.labels = list(labels)
        self.baseline = baseline
        self.scores = np.asarray(scores, dtype=float)
        self.fit_times = np.asarray(fit_times, dtype=float)
        self.search_times = np.asarray(search_times, dtype=float)
        self.score_times = np.asarray(score_times, dtype=float)
        self.sharpness = np.asarray(sharpness, dtype=float)
        self.params = params
        self.n_train = np.asarray(n_train)
        self.n_test = np.asarray(n_test)
        self.scoring = scoring
        self.rope = rope
        self.contrasts = [label for label in self.labels if label != baseline]
        self.tests = {
            label: corrected_paired_ttest(
                self.differences(label), self.n_train, self.n_test, rope=rope
            )
            for label in self.contrasts
        }

    @classmethod
    def from_records(cls, records, *, labels, baseline, scoring="score", rope=0.01):
        """Build the result from one record per (split, solver).

        Parameters
        ----------
        records : list of dict
            Each with ``split``, ``solver``, ``score``, ``fit_time``,
            ``search_time``, ``score_time``, ``sharpness``, ``n_train``,
            ``n_test`` and ``params``.
        labels : list of str
            The solvers, in column order.
        baseline : str
            The label the others are compared with.
        scoring : str, default='score'
            Name of the score.
        rope : float, default=0.01
            Half-width of the region of practical equivalence.

        Returns
        -------
        result : SolverComparison
        """
        n_splits = 1 + max(r["split"] for r in records)
        column = {label: i for i, label in enumerate(labels)}
        table = {
            name: np.full((n_splits, len(labels)), np.nan)
            for name in ("score", "fit_time", "search_time", "score_time", "sharpness")
        }
        params = [[None] * len(labels) for _ in range(n_splits)]
        n_train, n_test = np.zeros(n_splits, int), np.zeros(n_splits, int)
        for r in records:
            k, i = r["split"], column[r["solver"]]
            for name, values in table.items():
                values[k, i] = r[name]
            params[k][i] = r["params"]
            n_train[k], n_test[k] = r["n_train"], r["n_test"]
        return cls(
            labels=labels,
            baseline=baseline,
            scores=table["score"],
            fit_times=table["fit_time"],
            search_times=table["search_time"],
            score_times=table["score_time"],
            sharpness=table["sharpness"],
            params=params,
            n_train=n_train,
            n_test=n_test,
            scoring=scoring,
            rope=rope,
        )

    # ---- numbers -----------------------------------------------------------

    def differences(self, label):
        """Per-split score of ``label`` minus the baseline's.

        Parameters
        ----------
        label : str
            One of ``labels``.

        Returns
        -------
        differences : ndarray of shape (n_splits,)
        """
        return self.scores[:, self._column(label)] - self.scores[:, self._column(self.baseline)]

    def _column(self, label):
        if label not in self.labels:
            raise ValueError(f"{label!r} is not one of the solvers {self.labels!r}.")
        return self.labels.index(label)

    # One array per contrast, read off each contrast's test (documented in the
    # class Attributes); one property built per statistic, not six copies.
    statistic = _per_contrast("statistic")
    pvalue = _per_contrast("pvalue")
    std_error = _per_contrast("std_error")
    p_worse = _per_contrast("p_worse")
    p_equivalent = _per_contrast("p_equivalent")
    p_better = _per_contrast("p_better")

    @property
    def fit_time_ratio(self):  # noqa: D102
        mean = self.fit_times.mean(axis=0)
        base = mean[self._column(self.baseline)]
        return np.array([mean[self._column(label)] / base for label in self.contrasts])

    def confidence_interval(self, confidence_level=0.95):
        """Corrected t intervals of the mean differences, one row per contrast.

        Parameters
        ----------
        confidence_level : float, default=0.95
            Coverage of each interval (not adjusted for multiple contrasts).

        Returns
        -------
        interval : ndarray of shape (n_contrasts, 2)
            Low and high bounds.
        """
        return np.array(
            [self.tests[label].confidence_interval(confidence_level) for label in self.contrasts]
        )

    def verdict(self, label):
        """``'better'``, ``'equivalent'``, ``'worse'`` or ``'undecided'`` against the baseline.

        A region is declared when its posterior probability is at least
        ``DECISION_PROBABILITY`` (0.95), the rule of Benavoli et al. (2017).

        Parameters
        ----------
        label : str
            One of ``contrasts``.

        Returns
        -------
        verdict : str
        """
        test = self.tests[label]
        probabilities = {r: getattr(test, f"p_{r}") for r in ("worse", "equivalent", "better")}
        region = max(probabilities, key=probabilities.get)
        return region if probabilities[region] >= DECISION_PROBABILITY else "undecided"

    def chosen_params(self, label):
        """The parameters chosen by the inner search of ``label``, one dict per split.

        Parameters
        ----------
        label : str
            One of ``labels``.

        Returns
        -------
        params : list of dict
        """
        i = self._column(label)
        return [row[i] for row in self.params]

    # ---- tables --------------------------------------------------------------

    def to_frame(self):
        """One row per (split, solver): scores, times, sharpness, sizes, chosen parameters.

        Returns
        -------
        frame : pandas.DataFrame
            Columns ``split``, ``solver``, ``score``, ``difference`` (to the
            baseline), ``fit_time``, ``search_time``, ``score_time``,
            ``sharpness``, ``n_train``, ``n_test`` and ``param_<name>`` for
            each chosen parameter.
        """
        pd = require("pandas", "SolverComparison.to_frame")
        rows = []
        for k in range(len(self.n_train)):
            for i, label in enumerate(self.labels):
                rows.append(
                    {
                        "split": k,
                        "solver": label,
                        "score": self.scores[k, i],
                        "difference": self.differences(label)[k],
                        "fit_time": self.fit_times[k, i],
                        "search_time": self.search_times[k, i],
                        "score_time": self.score_times[k, i],
                        "sharpness": self.sharpness[k, i],
                        "n_train": int(self.n_train[k]),
                        "n_test": int(self.n_test[k]),
                        **{f"param_{n}": v for n, v in (self.params[k][i] or {}).items()},
                    }
                )
        return pd.DataFrame(rows)

    def _rows(self):
        """The summary as rows of strings (header first): shared by text and HTML."""
        header = [
            "solver",
            f"{self.scoring} (mean)",
            f"gain vs {self.baseline} [95% CI]",
            "p-value",
            "P(worse)",
            "P(equiv.)",
            "P(better)",
            "verdict",
            "fit time",
            "sharpness",
            "chosen",
        ]
        rows = [header]
        ratios = dict(zip(self.contrasts, self.fit_time_ratio))
        for i, label in enumerate(self.labels):
            row = [label, f"{self.scores[:, i].mean():.4f}"]
            if label == self.baseline:
                row += ["(baseline)", "", "", "", "", "", "1.00x"]
            else:
                test = self.tests[label]
                low, high = test.confidence_interval()
                row += [
                    f"{test.statistic:+.4f} [{low:+.4f}, {high:+.4f}]",
                    f"{test.pvalue:.3f}",
                    f"{test.p_worse:.3f}",
                    f"{test.p_equivalent:.3f}",
                    f"{test.p_better:.3f}",
                    self.verdict(label),
                    f"{ratios[label]:.2f}x",
                ]
            row += [
                _format_sharpness(self.sharpness[:, i]),
                _format_chosen(self.chosen_params(label)),
            ]
            rows.append(row)
        return rows

    def _title(self):
        n_train, n_test = self.n_train.mean(), self.n_test.mean()
        return (
            f"Paired comparison of {len(self.labels)} solvers on {len(self.n_train)} splits "
            f"(n_train ~ {n_train:.0f}, n_test ~ {n_test:.0f}); score: {self.scoring}; "
            f"rope: +/-{self.rope:g}; Nadeau-Bengio corrected t-test and Bayesian "
            "correlated t-test (Benavoli et al. 2017)"
        )

    def summary(self):
        """The comparison as plain text, one line per solver.

        Returns
        -------
        text : str
            A title line, then per solver: mean score, gain over the baseline
            with its corrected 95% interval, p-value, posterior probabilities
            of worse / equivalent / better (the verdict is declared at 0.95),
            fit-time ratio, median sharpness and the chosen parameters.
        """
        rows = self._rows()
        widths = [max(len(row[j]) for row in rows) for j in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        return "\n".join([self._title(), *lines])

    def _repr_html_(self):
        rows = self._rows()
        head = "".join(f"<th>{html.escape(cell)}</th>" for cell in rows[0])
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
            for row in rows[1:]
        )
        return (
            f"<div><p>{html.escape(self._title())}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
        )

    def __repr__(self):
        gains = ", ".join(
            f"{label}: {self.tests[label].statistic:+.4g} (p={self.tests[label].pvalue:.3g})"
            for label in self.contrasts
        )
        return f"SolverComparison(baseline={self.baseline!r}, {gains})"


def _format_sharpness(values):
    values = values[np.isfinite(values)]
    return f"{np.median(values):.3g}" if values.size else "-"


def _format_chosen(params):
    """``'rho=0.05 (7/10), 0.1 (3/10); max_iter 84..300'``: the choices over splits.

    A parameter with up to three distinct values lists how often each was
    chosen; one with more (the kernel's number of steps) gives its range.
    """
    names = sorted({name for p in params if p for name in p})
    parts = []
    for name in names:
        values = [p[name] for p in params if p and name in p]
        counts = Counter(values)
        if len(counts) > 3 and all(isinstance(v, (int, float)) for v in values):
            parts.append(f"{name} {min(values):g}..{max(values):g}")
        else:
            choices = ", ".join(
                f"{_format_value(v)} ({n}/{len(params)})" for v, n in counts.most_common()
            )
            parts.append(f"{name}={choices}")
    return "; ".join(parts) if parts else "-"


def _format_value(value):
    return f"{value:g}" if isinstance(value, float) else str(value)
