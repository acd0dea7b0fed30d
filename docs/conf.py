"""Sphinx configuration of the aniso-nequip documentation (layout as nequip's own ``docs/``).

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (what CI runs).
"""

from importlib.metadata import version as _installed_version

# nequip first, as in any nequip command: nequip's own __init__ imports aniso_nequip through the
# `nequip.extension` entry point, and importing aniso_nequip's submodules before nequip is
# initialised would be a circular import (the autodoc pages import every module)
import nequip  # noqa: F401

project = "aniso-nequip"
author = "The aniso-nequip developers"
copyright = "2026, The aniso-nequip developers"
release = _installed_version("aniso-nequip")
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_enable_extensions = ["colon_fence", "dollarmath"]
# anchors for headings down to level 3, so pages can link to sections of RESULTS.md and the card
myst_heading_anchors = 3

# The API reference is generated from the package root recursively (docs/api/index.rst), so a
# module that moves needs no edit here.
autosummary_generate = True
autosummary_imported_members = False
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": True}
# Type hints go into the description, not the signature: nequip's and torch's annotations
# (``AtomicDataDict.Type``, ``torch.nn.Module``) make signatures unreadable otherwise.
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Cross-references to names outside this package (torch, nequip, ase) cannot all be resolved
# without network access to their inventories (no intersphinx: CI has none), so missing
# reference targets are not warnings.
nitpicky = False

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

html_theme = "furo"
html_title = f"aniso-nequip {release}"
html_static_path = []
