"""Sphinx configuration for the sksam documentation and examples gallery."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import sksam  # noqa: E402

project = "sksam"
author = "sksam developers"
copyright = "2026, sksam developers"
version = release = sksam.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py"]
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

html_theme = "pydata_sphinx_theme"
html_title = f"sksam {version}"
html_theme_options = {"navigation_with_keys": False}

# The examples run on one torch thread: on small CPUs more threads only add
# noise, and the gallery's timings should be comparable between runs.
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": "/plot_",
    "doc_module": ("sksam",),
    "backreferences_dir": "generated",
    "reference_url": {"sksam": None},
    "reset_modules": ("matplotlib",),
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
}

try:  # pin torch's threads for the gallery run when torch is there
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass
