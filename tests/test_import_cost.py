"""What each module imports, and that a first fit imports nothing heavy (issue 18, warm-up).

Each check runs in a fresh interpreter, where ``sys.modules`` starts empty:
the kernel estimator stays numpy only, the torch estimators pay for torch
when they are imported (not in their first fit), and the sharpness
Hessian-vector products do not make torch import sympy on first use.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code):
    """Run ``code`` in a fresh interpreter at the repository root; its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_kernel_side_never_imports_torch():
    # sksam, the kernel estimators and the sharpness measures (the kernel's
    # exact ones are numpy) are imported and a kernel fit run: no torch
    code = """
        import sys
        import numpy as np
        import sksam, sksam.kernel, sksam._kernel_cv, sksam.sharpness
        from sksam import SAMKernelRegressor
        X = np.random.RandomState(0).standard_normal((30, 3))
        SAMKernelRegressor(max_iter=20).fit(X, X[:, 0])
        print('torch' in sys.modules)
    """
    assert _run(code) == "False"


def test_two_layer_pays_for_torch_at_import_and_its_first_fit_imports_nothing():
    # the default sharpness (top eigenvalue by Lanczos) runs Hessian-vector
    # products: with tensor grad_outputs, torch imports sympy on the first one
    code = """
        import sys, warnings
        import numpy as np
        from sksam import SAMTwoLayerRegressor
        assert "torch" in sys.modules  # paid at import, not in the first fit
        before = set(sys.modules)
        rng = np.random.RandomState(0)
        X = rng.standard_normal((40, 3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = SAMTwoLayerRegressor(n_hidden=8, max_iter=20, random_state=0)
            est.fit(X, X[:, 0])
        assert est.sharpness_ > 0
        heavy = ("torch", "sympy", "torch.fx.experimental.symbolic_shapes", "torch._dynamo")
        print(sorted(name for name in heavy if name in set(sys.modules) - before))
    """
    assert _run(code) == "[]"


def test_nets_pay_for_torch_at_import_and_their_first_fit_imports_nothing():
    code = """
        import sys, warnings
        import numpy as np
        from sksam import SAMNetClassifier
        assert all(name in sys.modules for name in ("torch", "skorch", "torch._dynamo"))
        before = set(sys.modules)
        rng = np.random.RandomState(0)
        X = rng.standard_normal((40, 3)).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            SAMNetClassifier(max_epochs=1, random_state=0).fit(X, (X[:, 0] > 0).astype(int))
        heavy = ("sympy", "torch.fx.experimental.symbolic_shapes", "torch._dynamo")
        print(sorted(name for name in heavy if name in set(sys.modules) - before))
    """
    assert _run(code) == "[]"
