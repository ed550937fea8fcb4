"""Stand-in for ansible-test's get-pip bootstrap script, whose download host is not reachable here.

ansible-test runs it in each fresh sanity venv with pip's options and ``pip==X``: bring pip in
with ensurepip, then let it install what was asked for from the package index.
"""

import subprocess
import sys

args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)
