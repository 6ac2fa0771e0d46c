"""Process-level tuning for interactive CPU inference: allocator, OpenMP waiting, thread counts.

Imports no torch: :func:`tune_openmp` must run before torch loads its OpenMP runtime.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_TUNED: bool | None = None


def tune_allocator() -> bool:
    """Keep freed tensor memory in the process for reuse (glibc ``mallopt``); returns whether applied.

    Each prompt allocates and frees a few dozen 1-16 MB buffers. glibc serves blocks above its mmap
    threshold with fresh mappings and trims freed memory back to the OS, so every click pays page
    faults for memory it just released (about 30 % of a ViT-B click on a 2-core VM). Raising both
    thresholds lets freed blocks be reused; the cost is that the process keeps its peak heap.
    Off with ``SAMKIT_MALLOC_TUNING=0``; a no-op where the C library is not glibc.
    """
    global _TUNED
    if _TUNED is not None:
        return _TUNED
    _TUNED = False
    if os.environ.get("SAMKIT_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return _TUNED
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return _TUNED
    _TUNED = bool(mallopt(_M_MMAP_THRESHOLD, 1 << 25)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    return _TUNED



# How long an OpenMP thread spins for its next task before it sleeps (GNU OpenMP's GOMP_SPINCOUNT; libgomp
# estimates 100,000 spins per millisecond, so about 30 us). Long enough to bridge the gaps between the operators
# of one call, far shorter than libgomp's default (300,000) that steals time slices from other processes.
OMP_SPIN_COUNT = 3000


def tune_openmp() -> bool:
    """Make idle OpenMP threads spin briefly, then sleep (``GOMP_SPINCOUNT`` = :data:`OMP_SPIN_COUNT`,
    ``OMP_WAIT_POLICY=PASSIVE`` for other runtimes); returns whether applied.

    torch's CPU kernels run each operator as an OpenMP parallel region. GNU OpenMP's default is to spin for
    about 3 ms at every barrier: when other processes want the same cores, the spinning threads take the time
    slices the working ones need (a sam_vit_b click measured 0.8-1.3 s instead of 0.07-0.1 s on a loaded 2-core
    VM, bench/speed.py). Sleeping at once (passive) costs a wake-up at each of a click's parallel regions
    instead, which on a VM means waking an idle virtual CPU: a quiet sam_vit_b click 25-33 ms passive against
    20-22 ms with this short spin, and the same within noise beside one or three CPU hogs (bench/openmp_wait.py).
    libgomp reads the setting once, when torch loads it: nothing is changed when torch is already imported,
    when ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set (the user's choice), or with
    ``SAMKIT_OMP_TUNING=0``. Called by ``import samkit``.
    """
    if ("torch" in sys.modules or os.environ.get("SAMKIT_OMP_TUNING", "1") == "0"
            or "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ):
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    os.environ["GOMP_SPINCOUNT"] = str(OMP_SPIN_COUNT)
    return True


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def running_here() -> int:
    """Threads of this process that are running or runnable now (``R`` in ``/proc/self/task/*/stat``), the
    caller included; 1 where unknown."""
    count = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended meanwhile
        state = stat.rfind(b")") + 2  # the state letter follows "(comm) "; comm may hold spaces or ")"
        count += stat[state:state + 1] == b"R"
    return max(1, count)


def busy_elsewhere() -> int:
    """Threads runnable right now in other processes: ``/proc/loadavg``'s running count less this process's
    own (:func:`running_here`: the caller, and torch's OpenMP threads still finishing the previous
    operator, which counted as other work and halved a quiet sam_vit_b click's threads); 0 where unknown."""
    own = running_here()
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, running - own)


# Calls over fewer rows of work than this (e.g. a mask decoder call: prompts x embedding tokens) run on one
# thread when the count is adaptive and OpenMP threads sleep at once (passive waiting): their many small operators
# lose more to waking the other threads than they gain (2 cores: a samkit_tiny click 7.8-8.8 ms on one thread vs
# 10.2-10.9 ms on two; a sam_vit_b click, 64 x 64 tokens, 32 vs 19 ms). With samkit's short spin
# (:func:`tune_openmp`) there is no wake-up to pay and two threads are faster (samkit_tiny 5.9-6.6 vs 7.2-8.2 ms).
SMALL_CALL_ROWS = 1024

# When no CPU is idle, calls over fewer rows than this (a click: a few prompts on SAM's 64 x 64 grid) run on one
# thread: its operators are short, and each barrier waits for a thread that another process may hold (beside
# three CPU hogs on 2 cores a sam_vit_b click took 65-72 ms on one thread, 73-83 ms on two; bench/openmp_wait.py).
# Larger calls (the image encoder, segment-everything's batches) take every CPU: their operators are long enough
# for more time-sliced threads to mean a larger share of the machine.
BUSY_CALL_ROWS = 16 * 1024


def openmp_spins() -> bool:
    """Whether idle OpenMP threads spin for a while before they sleep, as this process's settings say (libgomp:
    ``GOMP_SPINCOUNT`` above 0, else any ``OMP_WAIT_POLICY`` but ``PASSIVE``)."""
    count = os.environ.get("GOMP_SPINCOUNT", "").strip()
    if count.lower() in ("infinite", "infinity"):
        return True
    digits = count.rstrip("kKmMgGtT")  # libgomp takes a number with an optional size suffix
    if digits.isdigit():
        return int(digits) > 0
    return os.environ.get("OMP_WAIT_POLICY", "").strip().upper() != "PASSIVE"


def configured_threads() -> int | None:
    """``SAMKIT_THREADS`` as a count; None when unset or ``auto`` (adaptive)."""
    fixed = os.environ.get("SAMKIT_THREADS", "auto").strip().lower()
    if fixed == "auto":
        return None
    try:
        return max(1, int(fixed))
    except ValueError:
        raise ValueError(f"SAMKIT_THREADS must be a number of threads or 'auto', got {fixed!r}") from None


def pool_threads() -> int:
    """Threads for a pool sized once for its whole life (an ONNX Runtime session): ``SAMKIT_THREADS`` when
    set, else every CPU this process may use. Not the load of the moment: a session made while something
    else ran would keep one thread for good (bench/speed.py's int8 encoder session measured 0.99x fp32
    that way, 1.7x with both sessions on two threads)."""
    return configured_threads() or available_cpus()


def default_threads(rows: int | None = None) -> int:
    """Intra-op threads for the next call. When some of this process's CPUs are idle, only those: a
    thread that shares its core with a busy process holds up every operator's barrier. When none is
    (more runnable threads than CPUs), one for a call below :data:`BUSY_CALL_ROWS` rows, else all of them:
    every thread is time-sliced then; for long operators more threads get a larger share of the machine,
    a click's short ones lose more at each barrier than they gain (beside three CPU hogs, see
    :data:`BUSY_CALL_ROWS`; a 2026-12-02 run of bench/speed.py at load ~9, with passive waiting, had a
    click faster on 2 threads).
    ``rows``: the call's size where known (unknown: a large call); below :data:`SMALL_CALL_ROWS`, one thread
    unless OpenMP threads spin (:func:`openmp_spins`).

    ``SAMKIT_THREADS=N`` fixes the count instead (reproducible results: the order of float sums, and so
    the last bits of some outputs, can depend on the thread count); unset or ``auto``: adaptive."""
    fixed = configured_threads()
    if fixed is not None:
        return fixed
    if rows is not None and rows < SMALL_CALL_ROWS and not openmp_spins():
        return 1
    cpus = available_cpus()
    free = cpus - busy_elsewhere()
    if free >= 1:
        return free
    return 1 if rows is not None and rows < BUSY_CALL_ROWS else cpus
