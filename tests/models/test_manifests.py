"""Every registry architecture has exactly the released checkpoint's state-dict layout."""
from __future__ import annotations

import json

import pytest
import torch

from samkit.models.registry import resolve_name

MANIFESTS = {
    "sam_vit_b": "sam_vit_b.keys.json",
    "sam_vit_l": "sam_vit_l.keys.json",
    "sam_vit_h": "sam_vit_h.keys.json",
    "mobile_sam": "mobile_sam_vit_t.keys.json",
}


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_state_dict_matches_manifest(name, parity_dir):
    manifest = json.loads((parity_dir / MANIFESTS[name]).read_text())
    with torch.device("meta"):
        model = resolve_name(name).builder()
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: v["shape"] for k, v in manifest.items()}
    missing = sorted(set(theirs) - set(ours))
    unexpected = sorted(set(ours) - set(theirs))
    wrong = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
    assert not missing, f"missing keys: {missing[:10]}"
    assert not unexpected, f"unexpected keys: {unexpected[:10]}"
    assert not wrong, f"shape mismatches: {[(k, ours[k], theirs[k]) for k in wrong[:10]]}"
    dtypes = {k: str(v.dtype).removeprefix("torch.") for k, v in model.state_dict().items()}
    assert all(dtypes[k] == manifest[k]["dtype"] for k in manifest)
