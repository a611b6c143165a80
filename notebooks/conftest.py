"""pytest configuration for the notebooks, which ``python -m pytest`` runs with nbmake.

nbmake executes each notebook in a fresh Jupyter kernel: a separate process that does not
see this session's ``sys.path``.  Put this checkout first on the kernel's PYTHONPATH, so the
notebooks exercise the same ``meanfield`` as ``tests/`` (the source tree, not some installed
copy of it), also when the package is not installed at all.
"""

import os
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parent.parent)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    # Only the notebooks under this directory see the change, and only while they run.
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([ROOT] + ([old] if old else []))
    try:
        yield
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
