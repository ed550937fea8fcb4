"""The namespace links of a fake ``/proc/<pid>`` (``ns/mnt``, ``ns/pid``, ``root``), as the real
``/proc`` shows them, so locate's host-namespace test runs on fake hosts too."""

import os
from pathlib import Path
from typing import Union

#: Link texts of the host's (PID 1's) namespaces on the fake host.
HOST_MNT = "mnt:[4026531841]"
HOST_PID = "pid:[4026531836]"
#: Those of a container.
CONTAINER_MNT = "mnt:[4026532201]"
CONTAINER_PID = "pid:[4026532204]"


def _link(target: str, path: str) -> None:
    if os.path.lexists(path):
        os.unlink(path)
    os.symlink(target, path)


def namespace_links(proc: Union[str, Path], pid: int, mnt: str = HOST_MNT, pid_ns: str = HOST_PID,
                    root: str = "/") -> None:
    """Give ``proc/<pid>`` namespace links (the host's by default), and ``proc/1`` the host's."""
    for number, (mount, pids, top) in ((1, (HOST_MNT, HOST_PID, "/")), (pid, (mnt, pid_ns, root))):
        entry = os.path.join(str(proc), str(number))
        os.makedirs(os.path.join(entry, "ns"), exist_ok=True)
        if number == 1 and pid != 1 and os.path.lexists(os.path.join(entry, "root")):
            continue
        _link(mount, os.path.join(entry, "ns", "mnt"))
        _link(pids, os.path.join(entry, "ns", "pid"))
        _link(top, os.path.join(entry, "root"))
