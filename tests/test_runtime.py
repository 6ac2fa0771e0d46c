"""Allocator tuning: applied once on glibc Linux, and can be switched off."""
from __future__ import annotations

import subprocess
import sys

CODE = "from samkit.runtime import tune_allocator; print(tune_allocator(), tune_allocator())"


def _run(env_value: str | None) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if k != "SAMKIT_MALLOC_TUNING"}
    if env_value is not None:
        env["SAMKIT_MALLOC_TUNING"] = env_value
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_applied_on_glibc_linux():
    assert _run(None) == "True True"


def test_switched_off_by_env():
    assert _run("0") == "False False"
