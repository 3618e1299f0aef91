"""Process lifetimes: a child dies with its parent, a dead child's leftovers die with it,
and an orphan of an earlier run that still holds our port is recognised and ended.

Why each piece is needed (issue #19): SIGKILL of `spot api` left its Granian worker process
(a multiprocessing child) running and listening, and `spot up` then looped on "port taken"
while the orphan served. `PR_SET_PDEATHSIG` makes the kernel signal a child when the thread
that forked it dies, whatever killed it; the process group a supervised child leads is
killed as one once its leader is gone; and an orphan that predates both (or was made some
other way) is found by what it is: a Spot API server adopted by init, whose SPOT_DATA_DIR
is ours.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # psutil ships no stubs (types-psutil unlocked)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
END_GRACE_S = 3.0  # between SIGTERM and SIGKILL when ending a process of ours
# Loaded once here, not in a preexec_fn between fork and exec, where less is safer.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send `sig` to this process when its parent dies; if `parent` (the
    pid the caller knows as its parent) is already gone, the signal is sent now, since no
    death is left to notice. False where prctl does not exist (not Linux).

    Safe in a preexec_fn (between fork and exec): it only calls prctl, getppid and kill.
    The setting survives execve (not across a set-user-ID binary, which we never run)."""
    if _LIBC is None:
        return False
    if _LIBC.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # the parent died before prctl: nothing will signal us
        os.kill(os.getpid(), sig)
    return True


def end_group(pgid: int, grace_s: float = 0.0) -> list[int]:
    """End every process left in process group `pgid` (SIGTERM, then SIGKILL after
    `grace_s`); returns their pids. A supervised child leads its own group (its own
    session), so what is left in the group once the leader exited is its orphans."""
    members = group_members(pgid)
    if not members:
        return []
    _signal_group(pgid, signal.SIGTERM if grace_s > 0 else signal.SIGKILL)
    deadline = time.monotonic() + grace_s
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_members(pgid):
        _signal_group(pgid, signal.SIGKILL)
    return members


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of group `pgid`."""
    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
    return members


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def is_spot_api(proc: psutil.Process) -> bool:
    """`spot api` (python -m spot.cli api, the `spot` script) or `python -m
    spot.api_server`, or a Granian worker forked from one (same command line)."""
    cmdline = proc.cmdline()
    if "spot.api_server" in cmdline:
        return True
    for n, arg in enumerate(cmdline[:-1]):
        if (arg == "spot.cli" or arg.endswith("/spot")) and cmdline[n + 1] == "api":
            return True
    return False


def orphan_of_ours(pid: int, data_dir: str) -> int | None:
    """The orphaned Spot API server that `pid` is (or is a Granian worker of), if it served
    the stack of `data_dir`: its pid, to end, or None. Orphaned: adopted by init (pid 1)
    or a systemd subreaper, as a server is once whatever started it died; one a shell, a
    test or `spot up` still runs is no orphan."""
    try:
        top = psutil.Process(pid)
        if not is_spot_api(top):
            return None
        while (parent := top.parent()) is not None and is_spot_api(parent):
            top = parent  # a Granian worker's server
        if parent is not None and parent.pid != 1 and parent.name() != "systemd":
            return None
        theirs = str(top.environ().get("SPOT_DATA_DIR") or ".data")
        cwd = str(top.cwd())
    except (psutil.Error, OSError):
        return None
    if (Path(cwd) / theirs).resolve() != Path(data_dir).resolve():
        return None
    return int(top.pid)


def end_tree(pid: int, grace_s: float = END_GRACE_S) -> None:
    """End `pid` and its descendants: SIGTERM, then SIGKILL after `grace_s` for any left;
    returns once all are gone."""
    try:
        top = psutil.Process(pid)
        procs = [top, *top.children(recursive=True)]
    except psutil.Error:
        return
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, left = psutil.wait_procs(procs, timeout=grace_s)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=grace_s)
