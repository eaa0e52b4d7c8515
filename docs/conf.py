"""Sphinx configuration of the documentation site (``make docs``; Read the Docs builds it too).

Every code block of these pages is run by ``tests/test_readme.py``; the configuration reference
and the CLI reference are generated from the code (autodoc, and sphinx-argparse reading the
``eventtracking`` command's own parser), so they cannot drift from it.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))  # the checkout, for autodoc and the version

from eventtracking import __version__  # noqa: E402

project = "eventtracking"
author = "eventtracking contributors"
copyright = "the eventtracking contributors"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",
]

exclude_patterns = ["_build", "*.md"]  # orjson-bug.md is an upstream report, linked as a file
master_doc = "index"

# The reference reads like the code: members in source order, signatures with their types.
autodoc_member_order = "bysource"
autodoc_typehints = "description"


html_theme = "sphinx_book_theme"  # the Open edX documentation theme
html_title = f"eventtracking {release}"
html_theme_options = {
    "path_to_docs": "docs",
    "use_repository_button": False,
    "show_toc_level": 2,
}
