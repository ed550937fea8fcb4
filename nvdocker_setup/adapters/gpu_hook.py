"""The ``--gpus`` hook as dockerd sees it: dockerd registers ``docker run --gpus`` only when an
executable of this name is on its own PATH when it starts, so a hook installed after dockerd
started needs a restart. The one home of that probe (apply decides on it, doctor reports it)."""

import os
from typing import Optional

from nvdocker_setup.adapters.hostfs import process_environ
from nvdocker_setup.context import Context
from nvdocker_setup.defaults import SYSTEMD_DEFAULT_PATH

GPU_HOOK = "nvidia-container-runtime-hook"


def hook_appeared_after_start(ctx: Context, pid: Optional[int]) -> bool:
    """Is the --gpus hook on dockerd's PATH newer than dockerd? (it registers --gpus only at start)"""
    if pid is None:
        return False
    environ = process_environ(ctx.host_path("/proc"), pid)
    if environ is None:
        return False
    try:
        with open(ctx.host_path("/proc/{}/stat".format(pid))) as handle:
            start_ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        with open(ctx.host_path("/proc/stat")) as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return False
    started = boot + start_ticks / os.sysconf("SC_CLK_TCK")
    search = environ.get("PATH", SYSTEMD_DEFAULT_PATH)
    for directory in search.split(":"):
        candidate = ctx.host_path(os.path.join(directory or ".", GPU_HOOK))
        try:
            status = os.stat(candidate)
        except OSError:
            continue
        if os.access(candidate, os.X_OK):
            return status.st_ctime > started
    return False
