"""Allocator tuning: applied once on glibc Linux, and can be switched off."""
from __future__ import annotations

import subprocess
import sys

import pytest

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


def _env_after_import(extra_env: dict[str, str], code: str) -> str:
    import os

    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "SAMKIT_OMP_TUNING")}
    env.update(extra_env)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_openmp_threads_spin_briefly_when_samkit_is_imported_first():
    from samkit.runtime import OMP_SPIN_COUNT

    show = "import os; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
    assert _env_after_import({}, f"import samkit; {show}") == f"PASSIVE {OMP_SPIN_COUNT}"
    # the user's own choice is left alone
    assert _env_after_import({"OMP_WAIT_POLICY": "ACTIVE"}, f"import samkit; {show}") == "ACTIVE None"
    assert _env_after_import({"GOMP_SPINCOUNT": "7"}, f"import samkit; {show}") == "None 7"
    assert _env_after_import({"SAMKIT_OMP_TUNING": "0"}, f"import samkit; {show}") == "None None"
    # too late once torch (and its OpenMP runtime) is loaded: left alone, and it says so
    code = "import torch; from samkit.runtime import tune_openmp; print(tune_openmp())"
    assert _env_after_import({}, code) == "False"


def test_a_busy_process_counts_as_busy():
    import time

    from samkit.runtime import busy_elsewhere

    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert max(busy_elsewhere() for _ in range(20)) >= 1  # the hog is runnable the whole time
    finally:
        hog.kill()
        hog.wait()


def test_this_process_threads_are_its_own_not_busy_elsewhere():
    """A thread of this process at work (a GEMM loop, GIL released) is counted by running_here, which
    busy_elsewhere takes off the machine's running count: torch's own OpenMP threads, still finishing the
    previous operator, used to count as another process's work."""
    import threading

    import torch

    from samkit.runtime import running_here

    stop = threading.Event()

    def work() -> None:
        a = torch.ones(512, 512)
        while not stop.is_set():
            a @ a

    worker = threading.Thread(target=work)
    worker.start()
    try:
        assert max(running_here() for _ in range(50)) >= 2  # the caller and the worker
    finally:
        stop.set()
        worker.join()
    assert running_here() >= 1


@pytest.mark.parametrize("cpus, busy, expected", [(4, 0, 4), (4, 1, 3), (4, 3, 1), (4, 4, 4), (4, 9, 4), (1, 0, 1)])
def test_default_threads_use_the_free_cpus_or_all_when_none_is(monkeypatch, cpus, busy, expected):
    from samkit import runtime

    monkeypatch.setattr(runtime, "available_cpus", lambda: cpus)
    monkeypatch.setattr(runtime, "busy_elsewhere", lambda: busy)
    monkeypatch.delenv("SAMKIT_THREADS", raising=False)  # adaptive (the default)
    assert runtime.default_threads() == expected  # a call of unknown size: a large one
    assert runtime.default_threads(rows=runtime.BUSY_CALL_ROWS) == expected


@pytest.mark.parametrize("cpus, busy, expected", [(2, 0, 2), (2, 1, 1), (2, 2, 1), (2, 3, 1), (4, 2, 2), (4, 9, 1)])
def test_a_click_runs_on_one_thread_when_no_cpu_is_idle(monkeypatch, cpus, busy, expected):
    from samkit import runtime

    monkeypatch.setattr(runtime, "available_cpus", lambda: cpus)
    monkeypatch.setattr(runtime, "busy_elsewhere", lambda: busy)
    monkeypatch.delenv("SAMKIT_THREADS", raising=False)
    assert runtime.default_threads(rows=64 * 64) == expected  # a sam_vit_b click


def test_samkit_threads_fixes_the_count(monkeypatch):
    from samkit import runtime

    monkeypatch.setattr(runtime, "busy_elsewhere", lambda: 5)
    monkeypatch.setenv("SAMKIT_THREADS", "3")
    assert runtime.default_threads() == 3
    monkeypatch.setenv("SAMKIT_THREADS", "lots")
    with pytest.raises(ValueError, match="SAMKIT_THREADS"):
        runtime.default_threads()


def test_thread_budget_restores_the_setting():
    import torch

    from samkit.predict.threads import thread_budget

    before = torch.get_num_threads()
    with thread_budget(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    torch.set_num_threads(1)  # what --threads 1 does: the adaptive default never goes above it
    try:
        with thread_budget() as n:
            assert n == 1
    finally:
        torch.set_num_threads(before)


def test_small_calls_run_on_one_thread_when_threads_sleep_at_once(monkeypatch):
    from samkit import runtime

    monkeypatch.setattr(runtime, "available_cpus", lambda: 4)
    monkeypatch.setattr(runtime, "busy_elsewhere", lambda: 0)
    monkeypatch.delenv("SAMKIT_THREADS", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert runtime.default_threads(rows=16 * 16) == 1  # a samkit_tiny click
    assert runtime.default_threads(rows=64 * 64) == 4  # a sam_vit_b click
    assert runtime.default_threads() == 4
    monkeypatch.setenv("GOMP_SPINCOUNT", "3000")  # samkit's short spin: no wake-up to pay, every free CPU
    assert runtime.default_threads(rows=16 * 16) == 4
    monkeypatch.setenv("SAMKIT_THREADS", "3")  # a fixed count stays fixed, whatever the size
    assert runtime.default_threads(rows=1) == 3


@pytest.mark.parametrize("env, spins", [
    ({"OMP_WAIT_POLICY": "PASSIVE"}, False), ({"OMP_WAIT_POLICY": "passive", "GOMP_SPINCOUNT": "3000"}, True),
    ({"GOMP_SPINCOUNT": "0"}, False), ({"GOMP_SPINCOUNT": "10k"}, True), ({"GOMP_SPINCOUNT": "infinite"}, True),
    ({"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "lots"}, False), ({}, True),
    ({"OMP_WAIT_POLICY": "ACTIVE"}, True),
])
def test_openmp_spins_reads_the_settings_as_libgomp_does(monkeypatch, env, spins):
    from samkit import runtime

    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert runtime.openmp_spins() is spins
