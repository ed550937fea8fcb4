"""`nvdocker-setup ... | head -1`, `| grep -q`: a reader that goes away is not an error of ours (issue
#24): no message, no traceback, and the exit status is the command's own."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=REPO, COLUMNS="80")


def cli(*args):
    return [sys.executable, "-m", "nvdocker_setup", *args]


@pytest.mark.parametrize("args", [["--help"], ["doctor"], ["doctor", "--json"], ["doctor", "--help"], ["show", "--json"]])
def test_a_reader_that_is_gone_before_the_first_byte(args):
    normal = subprocess.run(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=REPO, timeout=120)
    process = subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=REPO)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == normal.returncode
    assert stderr == normal.stderr.decode()  # nothing about a broken pipe
    assert "BrokenPipe" not in stderr and "internal-error" not in stderr and "Exception ignored" not in stderr


def test_head_1_in_a_shell_pipeline_keeps_doctors_status():
    normal = subprocess.run(cli("doctor"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ENV, cwd=REPO, timeout=120)
    script = "set -o pipefail; {} | head -1; echo status=$?".format(" ".join(cli("doctor")))
    done = subprocess.run(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=REPO,
                          universal_newlines=True, timeout=120)
    assert done.stdout.splitlines()[0] == normal.stdout.decode().splitlines()[0]
    assert done.stdout.splitlines()[-1] == "status={}".format(normal.returncode)
    assert done.stderr == ""
