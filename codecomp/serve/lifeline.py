"""Every process the server starts dies with the process that started it, however that one dies.

The frontend starts a forkserver, and the forkserver forks the model containers. Left to themselves
they would outlive a frontend killed outright (SIGKILL, the OOM killer): multiprocessing hands every
child the forkserver's "alive" pipe, so the forkserver never sees it close, and a container's parent
is the forkserver, which lives on. Instead each link of the chain asks the kernel for SIGKILL when
its parent dies (Linux's parent-death signal; a watchdog thread polling the parent elsewhere):
frontend dies -> forkserver dies -> containers die, at once.

The parent-death signal fires when the parent *thread* that forked the child exits: the supervisor
starts processes from the frontend's event-loop thread, which lives as long as the frontend.

Torch-free and free of the other serve layers: the supervisor (frontend side) and the container
(child side) both use it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger(__name__)

# The pid a supervised process must die with, as its parent knows it: the frontend writes its own before
# starting the forkserver, the forkserver its own before forking containers (children inherit it).
PARENT_PID = "CODECOMP_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def mark_parent() -> None:
    """Name this process as the parent that the processes it starts from now on must die with."""
    os.environ[PARENT_PID] = str(os.getpid())


def die_with_parent() -> None:
    """Get SIGKILL when the parent that `mark_parent` named dies; exit at once if it already has.

    Without a `mark_parent` in an ancestor (a container started by hand on another host) it does nothing.
    """
    expected = os.environ.get(PARENT_PID)
    if expected is None:
        return
    if not set_parent_death_signal(signal.SIGKILL):
        threading.Thread(target=_watch_parent, args=(os.getppid(),), name="lifeline", daemon=True).start()
    # Orphaned before the signal was set (the parent killed in that instant): nothing would ever fire.
    if os.getppid() != int(expected):
        log.warning("parent %s died before this process (pid %d) started; exiting", expected, os.getpid())
        os._exit(1)


def set_parent_death_signal(signum: int) -> bool:
    """Ask the kernel for `signum` when the thread that started this process exits; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0


def _watch_parent(parent: int, interval_s: float = 0.1) -> None:
    """Where the kernel has no parent-death signal: exit once this process is re-parented."""
    while os.getppid() == parent:
        time.sleep(interval_s)
    os._exit(1)
