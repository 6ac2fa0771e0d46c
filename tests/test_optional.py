"""Optional dependencies: a missing extra fails with one line naming the pip install that fixes it."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from samkit._optional import MissingDependencyError, require
from samkit.errors import SamkitError


def test_require_imports_an_installed_module() -> None:
    assert require("numpy.linalg", "eval") is np.linalg


def test_missing_module_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "scipy", None)  # as if scipy were not installed
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # (another test may have imported it already)
    with pytest.raises(MissingDependencyError) as info:
        require("scipy.stats", "eval", "score calibration")
    assert str(info.value) == "scipy is not installed (needed for score calibration): pip install 'samkit[eval]'"
    assert isinstance(info.value, SamkitError) and isinstance(info.value, ImportError)


def test_a_real_call_site_uses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """samkit.eval.calibration needs scipy only for Spearman's rank correlation, and says so."""
    from samkit.eval.calibration import score_quality

    records = [{"scores": [0.9, 0.2], "ious": [0.8, 0.1]}, {"scores": [0.5, 0.7], "ious": [0.4, 0.6]}]
    assert score_quality(records)["spearman"] == pytest.approx(1.0)
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'samkit\[eval\]'"):
        score_quality(records)


def test_a_broken_install_is_not_reported_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """An ImportError raised inside the package (one of its own dependencies) is shown as it is."""
    monkeypatch.setitem(sys.modules, "numpy_dependency_that_is_gone", None)

    class Finder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "fake_optional_pkg":
                import importlib.util

                return importlib.util.spec_from_loader(name, Loader())
            return None

    class Loader:
        def create_module(self, spec):
            return None

        def exec_module(self, module):
            import numpy_dependency_that_is_gone  # noqa: F401

    monkeypatch.setattr(sys, "meta_path", [Finder(), *sys.meta_path])
    with pytest.raises(ImportError) as info:
        require("fake_optional_pkg", "eval")
    assert not isinstance(info.value, MissingDependencyError)
    assert info.value.name == "numpy_dependency_that_is_gone"
