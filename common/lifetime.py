"""Child processes that cannot outlive their parent.

A parent killed with SIGKILL runs no cleanup; the kernel's PR_SET_PDEATHSIG is what
still reaches the child, so sandboxes and embedded stages never linger as orphans.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before fork: preexec_fn only calls it


def die_with_parent(sig: signal.Signals = signal.SIGKILL) -> Callable[[], None]:
    """A `preexec_fn` for Popen: `sig` reaches the child when this process dies.

    It also closes the race where the parent died between fork and the prctl.
    """
    parent = os.getpid()

    def preexec() -> None:
        if _LIBC.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec
