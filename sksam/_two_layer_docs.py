"""The numpydoc sections the two-layer regressor and classifier share.

Both estimators take the same parameters and set the same attributes, but a
few entries (the step size and the initial scale, whose defaults differ, and
the target's attributes) are their own: each class docstring is assembled
from these pieces around its own text, as the net estimators assemble theirs.
"""

from ._base import HISTORY_ATTRIBUTES_DOC


def parameters_doc(init_scale, learning_rate):
    """The Parameters section of both estimators, with their own step and scale entries."""
    return (
        "\n    Parameters\n    ----------\n"
        "    solver : {'gd', 'sam', 'usam', 'asam', 'every_k', 'looksam', 'rst', 'aesam', "
        "'gsam', 'wsam', 'fsam'}, default='sam'\n"
        r"""        The update rule, with :math:`g = \nabla L(w)`: gradient descent
        (``e = 0``), SAM (``e = rho g/||g||``), unnormalized SAM
        (``e = rho g``) or adaptive SAM (``e = rho T^2 g/||T g||``,
        ``T = |w| + 0.01`` on the weight matrices ``W`` and ``a``, ``T = 1``
        on the intercepts). The cheap variants take SAM's step on some
        steps only and a gradient step on the others: ``'every_k'`` every
        ``sam_every`` steps, ``'looksam'`` the same with LookSAM's reused
        direction in between, ``'rst'`` with probability ``rst_p``,
        ``'aesam'`` when the squared gradient norm is ``aesam_c`` standard
        deviations above its moving mean (see ``sksam.optim`` and the "SAM
        on a budget" guide). The rest of the SAM family, at SAM's cost,
        with the same rules as :class:`sksam.optim.SAM` (see
        :doc:`/which_sam`): ``'gsam'`` (:class:`sksam.optim.GSAM`, weight
        ``gsam_alpha``), ``'wsam'`` (:class:`sksam.optim.WSAM`, weight
        ``wsam_gamma``) and ``'fsam'`` Friendly-SAM
        (:class:`sksam.optim.FriendlySAM`, ``fsam_sigma`` and
        ``fsam_lmbda``). ``'sam_on'`` (SAM-ON) perturbs normalization layers
        only and this network has none: it is refused with a ``ValueError``
        (use the net estimators with ``module__batch_norm=True``). bSAM is
        a solver of the net estimators only.
    rho : float, default=0.05
        Radius of the perturbation. ``rho=0`` gives gradient descent exactly.
        Larger radii act more, but a network started near zero
        (``init_scale``) with few hidden units can stay at the zero function
        when ``rho`` is large against its weights (see the user guide).
    n_hidden : int, default=100
        Number of hidden units ``h``.
    activation : {'relu', 'tanh', 'logistic', 'quadratic', 'identity'}, default='relu'
        The activation :math:`\sigma`, named as in scikit-learn's MLPs;
        ``'quadratic'`` is :math:`z^2`.
    train_output_layer : bool, default=True
        If False, only the hidden layer (``W``, ``b``) is trained; the output
        weights keep their initial values (see Notes).
"""
        + init_scale
        + learning_rate
        + r"""    batch_size : int or None, default=None
        ``None`` uses the full batch at each step (the paper's setting);
        otherwise mini-batches of this size, reshuffled at each epoch.
    max_iter : int, default=1000
        Maximum number of iterations (epochs; one step each at full batch).
    tol : float or None, default=1e-4
        Tolerance of the stopping rule, as in scikit-learn's MLPs: training
        stops when the training loss (or, with ``early_stopping``, the
        validation score) has not improved by at least ``tol`` for more than
        ``n_iter_no_change`` consecutive iterations. ``None`` disables the
        rule: exactly ``max_iter`` iterations, no ``ConvergenceWarning`` for
        reaching it; with ``early_stopping`` the weights with the best
        validation score are still the ones kept. The default stops early,
        before the network fits much label noise; SAM's larger gains over
        gradient descent live in long schedules (``tol=None``).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified by
        class for a classifier), stop when its score (:math:`R^2`, or the
        accuracy) stops improving, and keep the weights with the best
        validation score. Both parts must have at least 2 samples. From a
        start near the zero function the score can sit still for tens of
        iterations: a fit that early stopping ends while the training loss
        is above 90 % of a constant predictor's warns (raise
        ``n_iter_no_change``, or set ``tol=None`` to run ``max_iter``
        iterations and keep the best weights).
    validation_fraction : float, default=0.1
        Fraction of the data held out when ``early_stopping`` is True.
    n_iter_no_change : int, default=10
        Iterations without improvement before stopping.
    sharpness : {'top_eigenvalue', 'trace', 'rho'} or None, default='top_eigenvalue'
        The measure stored in ``sharpness_``, computed once at the end of
        ``fit`` by :func:`sksam.sharpness.measure_sharpness`; None skips it.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialization, the mini-batches, the validation split,
        ``'rst'``'s draws and the sharpness computation, as scikit-learn reads
        it (a numpy integer is an integer).
    device : str, default='cpu'
        Torch device to train on, e.g. ``'cuda'``; an unavailable device is a
        ``ValueError``.
    n_threads : int or None, default=None
        Torch threads during ``fit``, restored afterwards. None: one thread
        for small problems and inside joblib workers (e.g.
        ``GridSearchCV(n_jobs=2)``), torch's setting otherwise; -1: one per
        core. See the user guide, "Threads".
    warm_start : bool, default=False
        Start from the weights of the previous fit (and append to its
        ``loss_curve_``), carrying on its mini-batch order and its
        cheap-variant schedule: two warm fits of 5 iterations give the
        weights of one fit of 10. Changing ``n_hidden`` or ``activation``
        between warm fits is a ``ValueError``; a classifier's classes must be
        among ``classes_``.
    verbose : bool or int, default=False
        Print the loss at each iteration, and at the end why training
        stopped and how much of the weights' movement SAM's perturbation
        caused (saying so when the fit stopped where SAM and gradient descent
        coincide).
    sam_every : int, default=5
        Steps per SAM step of the cheap variants: the period of
        ``'every_k'`` and ``'looksam'``, and ``1 / rst_p`` of ``'rst'`` when
        ``rst_p`` is None; ignored by the other solvers.
    rst_p : float in [0, 1] or None, default=None
        ``'rst'``'s probability of a SAM step (None: ``1 / sam_every``).
    aesam_c : float or tuple of two floats, default=0.0
        ``'aesam'``'s threshold ``c`` (:class:`sksam.optim.AESAM`); a pair
        ``(c_first, c_last)`` moves linearly from the first to the last over
        the ``max_iter`` epochs' steps, as in the paper.
    gsam_alpha : float in [0, 1], default=0.4
        ``'gsam'``'s weight of the part of ``g`` orthogonal to the perturbed
        gradient ``g_s``: the descent gradient is ``g_s - gsam_alpha g_perp``
        (0 is SAM).
    wsam_gamma : float in [0, 1), default=0.9
        ``'wsam'``'s weight of the sharpness: the descent gradient is
        ``g + a (g_s - g)`` with ``a = wsam_gamma / (1 - wsam_gamma)``
        (0.5 is SAM, 0 gradient descent).
    fsam_sigma : float >= 0, default=1.0
        ``'fsam'``'s share of the average gradient ``m`` removed from the
        ascent direction ``d = g - fsam_sigma m`` (0 is SAM).
    fsam_lmbda : float in [0, 1), default=0.9
        ``'fsam'``'s forgetting rate of ``m = fsam_lmbda m + (1 - fsam_lmbda) g``.
    rho_schedule : RhoSchedule or None, default=None
        The radius of each step, for every solver: ``None`` is ``rho`` at
        every step; :class:`sksam.optim.WarmupRho` grows it from 0 to
        ``rho`` over its ``steps`` (mini-batch steps; epochs at full
        batch). The radius is clipped to ``[0, rho]``. The step size is
        constant here, so :class:`sksam.optim.ProportionalRho` (GSAM's
        radius that follows the learning rate) is ``rho`` throughout. A
        copy is used (the object is never advanced), continued by a warm
        start.
"""
    )


def attributes_doc(first, outputs, sharpness):
    """The Attributes section of both estimators around their own entries."""
    return (
        "\n    Attributes\n    ----------\n"
        + first
        + """    coefs_ : list of 2 ndarrays
        ``coefs_[0]`` is ``W`` of shape (n_features, n_hidden) and
        ``coefs_[1]`` is ``a`` of shape (n_hidden, n_outputs), the layout of
        scikit-learn's MLPs.
    intercepts_ : list of 2 ndarrays
        ``b`` of shape (n_hidden,) and ``c`` of shape (n_outputs,).
    n_outputs_ : int
"""
        + outputs
        + HISTORY_ATTRIBUTES_DOC
        + """
    sharpness_ : float or None
        The ``sharpness`` measure of the mean training """
        + sharpness
        + """ at the
        fitted weights, with respect to the trained parameters, on the
        training rows (without the validation split). None if
        ``sharpness=None``, or if the sharpness computation was interrupted.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.
"""
    )


def fit_doc(y_shape, y_meaning, name):
    """The docstring of both estimators' ``fit``, with their own ``y``."""
    return f"""Fit the network to ``X, y``; a fit that fails leaves the estimator as it was.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape {y_shape}
            {y_meaning}
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the samples in the mean loss (and in the
            validation score); integer weights act as repeated rows.

        Returns
        -------
        self : {name}
            The fitted estimator.
        """


def predict_doc(summary, returns, meaning):
    """The docstring of a prediction method of both estimators: ``X`` in, ``returns`` out."""
    return f"""{summary}

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        {returns}
            {meaning}
        """
