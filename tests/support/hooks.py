"""Our ld cache hook in both of its implementations, started as runc starts it.

``python``: ``python3 -I -S nvdocker_setup/hook/__main__.py`` (what ``cdi generate`` and a pip
install use). ``native``: the C launcher started as ``nvdocker-ldcache`` (launcher/ldcache-hook.c;
what the runtime emits when the C launcher started it); ``native-sanitized``: the same built with
``-fsanitize=address,undefined``. The tests in tests/hook take the
``run_hook`` fixture and so run against both, with the same expectations: the C hook must match
the Python one in behaviour, messages and exit status.
"""

import os
import shutil
import subprocess
import sys

import pytest

from nvdocker_setup.runtime.config import NATIVE_HOOK_NAME, hook_script

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMPLEMENTATIONS = ("python", "native", "native-sanitized")
#: The C hook built with AddressSanitizer and UndefinedBehaviorSanitizer; a finding exits 99.
SANITIZE_CFLAGS = "-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all -DNVDOCKER_SANITIZE"


def build_launcher(directory, extra_cflags=""):
    """scripts/build-launcher.sh into ``directory`` for this interpreter; the binary's path."""
    if shutil.which("gcc") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true: gcc is needed to build the launcher")
        pytest.skip("gcc is not installed")
    env = dict(os.environ, PYTHON=sys.executable)
    if extra_cflags:
        env["CFLAGS"] = (env.get("CFLAGS", "") + " " + extra_cflags).strip()
        env["STATIC"] = "no"  # the sanitizers' runtimes are shared libraries
    built = subprocess.run(["bash", os.path.join(REPO, "scripts/build-launcher.sh"), str(directory)],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert built.returncode == 0, built.stderr
    return built.stdout.strip().splitlines()[-1]


def hook_command(implementation, launcher):
    """(executable, argv prefix) that starts the hook; argv[0] is what runc passes."""
    if implementation == "python":
        return sys.executable, [sys.executable, "-I", "-S", hook_script()]
    return launcher[implementation], [NATIVE_HOOK_NAME]


class HookRunner:
    """``run_hook(args, stdin="", env=None, cwd=None, timeout=30)`` for one implementation."""

    def __init__(self, implementation, launcher):
        """``launcher``: {implementation: launcher binary} for the C ones."""
        self.implementation = implementation
        self.executable, self.prefix = hook_command(implementation, launcher)

    def argv(self, args=()):
        return list(self.prefix) + list(args)

    def command(self, args=()):
        """An argv that starts the hook without ``executable=`` (through a shell, ``unshare``...):
        for the C hook, a link named nvdocker-ldcache next to the launcher."""
        if self.implementation == "python":
            return self.argv(args)
        link = os.path.join(os.path.dirname(self.executable), NATIVE_HOOK_NAME)
        if not os.path.lexists(link):
            os.symlink(os.path.basename(self.executable), link)
        return [link] + list(args)

    def __call__(self, args, stdin="", env=None, cwd=None, timeout=30):
        return subprocess.run(
            self.argv(args), executable=self.executable, input=stdin, env=env if env is not None else {},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, cwd=cwd, timeout=timeout,
        )
