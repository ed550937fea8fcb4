"""One home per host probe: the values that the C launcher, the runtime and the CLI side must
agree on are compared here, so they cannot drift apart."""

import os
import re

from nvdocker_setup.defaults import SYSTEMD_DEFAULT_PATH
from nvdocker_setup.runtime.config import DEFAULT_SEARCH_PATH

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_launcher_searches_the_same_default_path():
    with open(os.path.join(ROOT, "launcher", "nvdocker-runtime.c")) as handle:
        source = handle.read()
    match = re.search(r'#define DEFAULT_PATH "([^"]+)"', source)
    assert match is not None
    assert match.group(1) == SYSTEMD_DEFAULT_PATH == DEFAULT_SEARCH_PATH


def test_proc_environ_is_parsed_in_one_place():
    offenders = []
    for directory, _dirs, files in os.walk(os.path.join(ROOT, "nvdocker_setup")):
        for name in files:
            if not name.endswith(".py") or name == "hostfs.py":
                continue
            path = os.path.join(directory, name)
            with open(path) as handle:
                if re.search(r'"environ"\)|/environ"', handle.read()):
                    offenders.append(os.path.relpath(path, ROOT))
    assert offenders == []
