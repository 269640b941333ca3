"""Sphinx configuration for the sksam documentation and examples gallery.

The build is offline: MathJax is bundled (sphinx-mathjax-offline) and the
intersphinx inventories of numpy, scipy, scikit-learn, torch and skorch are
read from ``docs/_inventories`` (see the README there), never fetched.
"""

import sys
from pathlib import Path

from sphinx_gallery.sorting import ExplicitOrder

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

import sksam  # noqa: E402

project = "sksam"
author = "sksam developers"
copyright = "2026, sksam developers"
version = release = sksam.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # copies MathJax 3 into _static: no CDN
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "_inventories",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    # left by older builds that wrote computation-time pages (see below)
    "sg_execution_times.rst",
    "auto_examples/sg_execution_times.rst",
]
autosummary_generate = True
# scikit-learn generates set_*_request methods on every estimator; their
# docstrings point into scikit-learn's own docs, so they are left out here.
autodoc_default_options = {
    "members": True,
    "exclude-members": ",".join(
        f"set_{method}_request"
        for method in ("fit", "predict", "predict_proba", "score", "partial_fit")
    ),
}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# Every cross-reference must resolve: the docs test builds with -n -W.
nitpicky = True

intersphinx_mapping = {
    name: (url, str(DOCS / "_inventories" / f"{name}.inv"))
    for name, url in {
        "python": "https://docs.python.org/3/",
        "numpy": "https://numpy.org/doc/stable/",
        "scipy": "https://docs.scipy.org/doc/scipy/",
        "sklearn": "https://scikit-learn.org/stable/",
        "torch": "https://docs.pytorch.org/docs/stable/",
        "skorch": "https://skorch.readthedocs.io/en/stable/",
        "matplotlib": "https://matplotlib.org/stable/",
    }.items()
}
intersphinx_timeout = 1  # never wait for the network: the inventories are local

html_theme = "pydata_sphinx_theme"
html_title = f"sksam {version}"
# The header fits on one line at 1280 px: the search is an icon (the full
# box took a second line), four links, the rest under "More".
html_theme_options = {
    "navigation_with_keys": False,
    "header_links_before_dropdown": 4,
    "navbar_persistent": [],
    "navbar_end": ["search-button", "theme-switcher"],
}
html_static_path = ["_static"]
html_css_files = ["sksam.css"]
# Pages without sub-pages get no (empty) section navigation on the left.
html_sidebars = {page: [] for page in ("index", "getting_started", "changelog")}

# The examples run on one torch thread: on small CPUs more threads only add
# noise, and the gallery's timings should be comparable between runs.
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": "/plot_",
    "doc_module": ("sksam",),
    "backreferences_dir": "generated",
    "reset_modules": ("matplotlib",),
    "remove_config_comments": True,
    # the headline first, then the paper's claims, then how-to examples
    "within_subsection_order": ExplicitOrder(
        [
            "plot_when_sam_helps.py",
            "plot_kernel_bias_variance.py",
            "plot_kernel_large_n.py",
            "plot_kernel_cv_path.py",
            "plot_two_layer_teacher_student.py",
            "plot_sharpness_along_training.py",
            "plot_grid_search_rho.py",
            "plot_digits_label_noise.py",
            "plot_classifiers_label_noise.py",
            "plot_efficient_sam.py",
            "plot_digits_cnn_callbacks.py",
            "plot_sam_optimizer.py",
            "run_several_devices.py",
            "*",
        ]
    ),
    # The computation-times pages need jQuery, which the theme does not load
    # (a JavaScript error in the browser); each example's page and the build
    # log still give its running time.
    "write_computation_times": False,
}

try:  # pin torch's threads for the gallery run when torch is there
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

# ``state_dict`` is inherited from torch's Optimizer, whose methods are not
# repeated on our page: the reference stays plain text.
nitpick_ignore = [("py:meth", "state_dict")]
# SAM's docstring refers to its ``base_optimizer`` attribute, which has no
# entry of its own (an "Attributes" section in SAM's docstring would give it
# one).
nitpick_ignore += [("py:attr", "base_optimizer")]


def _private_reference_as_text(app, env, node, contnode):
    """Write references to private modules (``sksam._update_rules``) as text.

    Private modules are not part of the documented API, so they get no page
    and no link; the name is still shown, as code.
    """
    target = node.get("reftarget", "")
    if node.get("refdomain") == "py" and any(
        part.startswith("_") and not part.startswith("__") for part in target.split(".")
    ):
        return contnode
    return None


def setup(app):
    app.connect("missing-reference", _private_reference_as_text)
