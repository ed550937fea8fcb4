"""The runtime and the hook stay on the standard library and off the CLI side, and their hot
paths stay clear of the slow-to-import modules (each costs milliseconds on every GPU create)."""

import json
import os
import subprocess
import sys

from tests.runtime.conftest import REPO, base_spec, write_bundle

#: Never, anywhere in the runtime or hook processes.
CLI_SIDE = ("typer", "click", "rich", "jsonschema", "yaml", "nvdocker_setup.cli", "nvdocker_setup.operations",
            "nvdocker_setup.adapters", "nvdocker_setup.core", "nvdocker_setup.errors", "nvdocker_setup.cdi")
#: Not on the create path: json/re/enum (~5 ms), typing (~5 ms), dataclasses/inspect (~15 ms), subprocess.
SLOW = ("json", "re", "enum", "typing", "dataclasses", "inspect", "subprocess", "configparser")

PROBE = """
import os, sys
sys.path.insert(0, {repo!r})
def report(*args):
    print(sorted(sys.modules))
    sys.stdout.flush()
    os._exit(0)
os.execv = report
sys.argv = ["nvdocker-runtime"] + {argv!r}
from nvdocker_setup.runtime.main import main
main()
"""


def loaded_modules(argv, env):
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", PROBE.format(repo=REPO, argv=argv)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
    )
    assert done.returncode == 0, done.stderr
    return set(eval(done.stdout))  # a printed list of module names


def offenders(modules, names):
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_create_with_a_gpu_request_imports_nothing_slow_or_cli_side(tmp_path, fake_runtime, driver_root):
    write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=all"]))
    modules = loaded_modules(["--nvdocker-real-runtime=/bin/true", "create", "--bundle", str(tmp_path / "b"), "c1"],
            fake_runtime.env(driver_root.path))
    assert "nvdocker_setup.driver.edits" in modules  # it did the work
    assert offenders(modules, CLI_SIDE) == []
    assert offenders(modules, SLOW) == []
    assert json.loads((tmp_path / "b" / "config.json").read_text())["linux"]["devices"]


def test_hook_modules_import_nothing_from_the_cli_side():
    code = (
        "import sys; sys.path.insert(0, {!r}); import nvdocker_setup.hook.main, nvdocker_setup.driver.discovery, "
        "nvdocker_setup.driver.edits, nvdocker_setup.driver.requirements, nvdocker_setup.driver.ldcache; print(sorted(sys.modules))"
    ).format(REPO)
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], stdout=subprocess.PIPE, universal_newlines=True, env={})
    modules = set(eval(done.stdout))
    assert offenders(modules, CLI_SIDE) == [] and offenders(modules, ("json", "typing", "subprocess", "dataclasses")) == []


def test_every_runtime_hook_and_driver_module_is_standard_library_only():
    stdlib = getattr(sys, "stdlib_module_names", None)
    if stdlib is None:  # Python 3.9: covered by the probes above
        return
    import ast

    for package in ("runtime", "hook", "driver"):
        directory = os.path.join(REPO, "nvdocker_setup", package)
        for name in os.listdir(directory):
            if not name.endswith(".py"):
                continue
            with open(os.path.join(directory, name)) as handle:
                tree = ast.parse(handle.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    roots = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    roots = [node.module or ""]
                else:
                    continue
                for module in roots:
                    top = module.split(".")[0]
                    allowed = top in stdlib or top == "__future__" or module.startswith(
                        ("nvdocker_setup.runtime", "nvdocker_setup.hook", "nvdocker_setup.driver")
                    ) or module == "nvdocker_setup"
                    assert allowed, "{}/{} imports {}".format(package, name, module)
