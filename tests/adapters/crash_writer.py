"""Child process for the fault-injection tests: write a file and SIGKILL ourselves at one step.

Usage: crash_writer.py PATH STEP NEW_DATA_FILE [--in-place]

SIGKILL cannot be caught, so no finally block or atexit handler runs: this is what a power cut
or the OOM killer leaves behind, and what the parent then inspects.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from nvdocker_setup.adapters.files import read_snapshot, write_atomically  # noqa: E402


def main() -> None:
    path, crash_at, new_data_file = sys.argv[1:4]
    with open(new_data_file, "rb") as handle:
        new_data = handle.read()

    def hook(step: str) -> None:
        if step == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)

    in_place = "--in-place" in sys.argv[4:]
    write_atomically(read_snapshot(path), new_data, step_hook=hook, in_place=in_place)
    sys.exit(3)  # only reached when the step never came: the parent treats it as a failure


if __name__ == "__main__":
    main()
