"""Child process for the crash tests: run install or uninstall and SIGKILL ourselves at one point.

Usage: crash_child.py STATE_DIR CONFIG RUNTIME VERB KILL_POINT [--cdi] [--in-place]

VERB is install or uninstall. KILL_POINT is ``config:<step>`` (a step of write_atomically),
``remove:<step>`` (of remove_file), ``before:<file>`` / ``after:<file>`` around a private write
in the state directory (<file>: state, manifest or copy), or ``none``. SIGKILL cannot be caught:
no finally block runs, which is what a power cut or the OOM killer leaves behind.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from nvdocker_setup import operations  # noqa: E402
from nvdocker_setup.adapters import statedir  # noqa: E402
from nvdocker_setup.context import Context  # noqa: E402
from nvdocker_setup.core.plan import InstallRequest  # noqa: E402


def main() -> None:
    state_dir, config, runtime, verb, kill_at = sys.argv[1:6]
    cdi = "--cdi" in sys.argv[6:]
    in_place = "--in-place" in sys.argv[6:]

    def maybe_die(point: str) -> None:
        if point == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    real_write, real_remove, real_private = operations.write_atomically, operations.remove_file, statedir.write_private

    def write_atomically(snapshot, data, **kwargs):
        return real_write(snapshot, data, step_hook=lambda step: maybe_die("config:" + step), **kwargs)

    def remove_file(snapshot, **kwargs):
        return real_remove(snapshot, step_hook=lambda step: maybe_die("remove:" + step), **kwargs)

    def write_private(path, data, *args, **kwargs):
        name = os.path.basename(path)
        kind = {"state.json": "state", "manifest.json": "manifest"}.get(name, "copy")
        maybe_die("before:" + kind)
        real_private(path, data, *args, **kwargs)
        maybe_die("after:" + kind)

    operations.write_atomically = write_atomically
    operations.remove_file = remove_file
    statedir.write_private = write_private

    ctx = Context(env={"PATH": os.environ.get("PATH", "")}, state_dir=state_dir)
    if verb == "install":
        operations.install(ctx, InstallRequest("nvidia", runtime, enable_cdi=cdi), config=config, in_place=in_place)
    else:
        operations.uninstall(ctx, "nvidia", config=config, in_place=in_place)
    sys.exit(3 if kill_at != "none" else 0)  # 3: the kill point never came


if __name__ == "__main__":
    main()
