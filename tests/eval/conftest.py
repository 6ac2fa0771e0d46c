"""Fixtures of the evaluation tests: MobileSAM with deterministic (meaningless) weights, for plumbing only."""
from __future__ import annotations

import pytest

from samkit.models.build_sam import build_mobile_sam


@pytest.fixture(scope="session")
def fill_mobile_sam(fill_state_dict):
    m = build_mobile_sam().eval()
    m.load_state_dict(fill_state_dict(m.state_dict()))
    return m
