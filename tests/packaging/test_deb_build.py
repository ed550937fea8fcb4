"""The built .deb packages, inspected without installing them: lintian, contents, relations,
the launcher's hardening, the toolkit's independence, man pages and shell completions."""

import gzip
import os
import re
import subprocess

import pytest

from tests.packaging import support
from tests.packaging.support import REPO, run

TOOLKIT_MODULES = ("runtime", "hook", "driver", "cdi")
PYLIB = "/usr/lib/python3/dist-packages"


def source_modules():
    """Top-level entries of the nvdocker_setup package in the tree (what setuptools builds)."""
    package = REPO / "nvdocker_setup"
    names = set()
    for entry in package.iterdir():
        if entry.is_dir() and (entry / "__init__.py").exists():
            names.add(entry.name)
        elif entry.suffix == ".py":
            names.add(entry.name)
    return names


def top_level(files, package_dir=PYLIB + "/nvdocker_setup/"):
    return {path[len(package_dir):].split("/")[0] for path in files if path.startswith(package_dir) and path != package_dir}


def test_lintian_reports_no_errors_or_warnings(debs):
    support.need_tools("lintian")
    done = run(["lintian", "--pedantic", "--info", "--display-experimental", debs["changes"]],
               check=False, env=support.system_env(), timeout=600)
    problems = [line for line in done.stdout.splitlines() if re.match(r"^[EW]: ", line)]
    assert not problems, "lintian:\n" + done.stdout
    assert done.returncode == 0, done.stdout


def test_python_modules_are_split_by_directory(debs):
    toolkit = support.deb_files(debs["nvdocker-toolkit"])
    setup = support.deb_files(debs["nvdocker-setup"])
    in_toolkit, in_setup = top_level(toolkit), top_level(setup)
    expected_toolkit = {"__init__.py"} | (source_modules() & set(TOOLKIT_MODULES))
    assert in_toolkit == expected_toolkit
    assert in_setup == source_modules() - expected_toolkit
    assert not in_toolkit & in_setup
    assert any(path.startswith(PYLIB + "/nvdocker_setup-") for path in setup), "dist-info goes with the CLI"


def test_commands_and_their_packages(debs):
    toolkit = support.deb_files(debs["nvdocker-toolkit"])
    setup = support.deb_files(debs["nvdocker-setup"])
    nvdocker2 = support.deb_files(debs["nvdocker2"])
    assert "/usr/bin/nvdocker-setup" in setup
    assert [path for path in setup if path.startswith("/usr/bin/") and path != "/usr/bin/"] == ["/usr/bin/nvdocker-setup"]
    assert "/usr/bin/nvdocker-runtime" in toolkit
    if (REPO / "nvdocker_setup" / "hook").is_dir():
        assert "/usr/bin/nvdocker-runtime-hook" in toolkit
    assert "/usr/libexec/nvdocker2/docker-config" in nvdocker2
    assert "/usr/share/doc/nvdocker2/examples/nvdocker2.default" in nvdocker2


def test_no_package_ships_anything_under_etc(debs):
    """Not /etc/docker/daemon.json (nvidia-docker2's mistake), and no conffile at all."""
    for name in support.PACKAGES:
        files = support.deb_files(debs[name])
        assert not [path for path in files if path.startswith("/etc/")], name
        control = run(["dpkg-deb", "-I", debs[name]]).stdout
        assert "conffiles" not in control, name


def test_relations(debs):
    version = support.source_version()
    toolkit = support.dpkg_deb_fields(debs["nvdocker-toolkit"])
    setup = support.dpkg_deb_fields(debs["nvdocker-setup"])
    nvdocker2 = support.dpkg_deb_fields(debs["nvdocker2"])
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()

    assert toolkit["Architecture"] == arch
    assert setup["Architecture"] == nvdocker2["Architecture"] == "all"
    toolkit_depends = [dep.strip() for dep in toolkit["Depends"].split(",")]
    assert "python3 (>= 3.9)" in toolkit_depends
    assert "runc | crun" in toolkit_depends
    assert not [dep for dep in toolkit_depends if re.match(r"python3-(typer|rich|jsonschema)", dep)]

    setup_depends = [dep.strip() for dep in setup["Depends"].split(",")]
    for dep in ("python3-typer (>= 0.7)", "python3-rich", "python3-jsonschema", "python3-tomlkit", "python3-grpcio",
                "nvdocker-toolkit (>= {})".format(version), "nvdocker-toolkit (<< {}.1~)".format(version)):
        assert dep in setup_depends, setup["Depends"]

    nvdocker2_depends = [dep.strip() for dep in nvdocker2["Depends"].split(",")]
    assert "docker.io | docker-ce | moby-engine" in nvdocker2_depends
    assert "nvdocker-setup (= {})".format(version) in nvdocker2_depends


def test_maintainer_scripts(debs, tmp_path):
    control = tmp_path / "control"
    run(["dpkg-deb", "-e", debs["nvdocker2"], control])
    scripts = {name: (control / name).read_text() for name in ("postinst", "prerm", "postrm")}
    for name, text in scripts.items():
        run(["sh", "-n", control / name])
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        assert "/etc/docker" not in code, name
        assert "restart" not in code, name
        assert re.search(r"^\s+\*\)\n.*\n\s+exit 1", text, re.M), name + ": unknown arguments are refused"
    assert re.search(r"^\s+configure\)\n\s+/usr/libexec/nvdocker2/docker-config .* configure", scripts["postinst"], re.M)
    assert re.search(r"^\s+remove\)\n\s+/usr/libexec/nvdocker2/docker-config .* unconfigure", scripts["prerm"], re.M)
    assert re.search(r"^\s+purge\)\n\s+rm -rf /var/lib/nvdocker-setup\n", scripts["postrm"], re.M)

    toolkit = tmp_path / "toolkit"
    run(["dpkg-deb", "-e", debs["nvdocker-toolkit"], toolkit])
    if "/usr/bin/nvdocker-runtime-hook" in support.deb_files(debs["nvdocker-toolkit"]):
        assert ("update-alternatives --install /usr/bin/nvidia-container-runtime-hook nvidia-container-runtime-hook "
                "/usr/bin/nvdocker-runtime-hook 10") in (toolkit / "postinst").read_text()
        assert "update-alternatives --remove nvidia-container-runtime-hook" in (toolkit / "prerm").read_text()


def _readelf(*args):
    return run(["readelf", "-W"] + list(args)).stdout


def test_launcher_is_built_with_the_hardening_flags(debs, tmp_path):
    if not list((REPO / "launcher").glob("*.c")):
        pytest.skip("launcher/ has no C sources yet: nvdocker-toolkit ships without the compiled launcher")
    root = support.extract_debs([debs["nvdocker-toolkit"]], tmp_path / "root")
    launcher = str(root / "usr/bin/nvdocker-runtime")
    with open(launcher, "rb") as handle:
        assert handle.read(4) == b"\x7fELF", "the C launcher replaces the Python script"
    assert "DYN (Position-Independent Executable" in _readelf("-h", launcher), "PIE"
    dynamic = _readelf("-d", launcher)
    assert "NEEDED" in dynamic, "dynamically linked: a static glibc would miss security updates"
    assert "BIND_NOW" in dynamic or "NOW" in dynamic
    assert "GNU_RELRO" in _readelf("-l", launcher)
    symbols = _readelf("--dyn-syms", launcher)
    assert "__stack_chk_fail" in symbols, "stack protector"
    assert re.search(r"__\w+_chk\b", symbols.replace("__stack_chk_fail", "")), "_FORTIFY_SOURCE"


def test_toolkit_works_with_the_standard_library_alone(debs, tmp_path):
    """Every toolkit module imports with `python3 -I -S` and nothing but the toolkit package."""
    root = support.extract_debs([debs["nvdocker-toolkit"]], tmp_path / "root")
    script = (
        "import importlib, pkgutil, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import nvdocker_setup\n"
        "for info in pkgutil.walk_packages(nvdocker_setup.__path__, 'nvdocker_setup.'):\n"
        "    if not info.name.endswith('__main__'):\n"
        "        importlib.import_module(info.name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'rich', 'jsonschema', 'click'))\n"
        "assert not bad, bad\n"
        "print(len([m for m in sys.modules if m.startswith('nvdocker_setup')]))\n"
    )
    done = run(["/usr/bin/python3", "-I", "-S", "-c", script, str(root / PYLIB.lstrip("/"))])
    assert int(done.stdout.strip()) > 1


def _cli_env(root):
    env = support.system_env()
    env["PATH"] = "{}:{}".format(root / "usr/bin", env["PATH"])
    env["PYTHONPATH"] = str(root / PYLIB.lstrip("/"))
    return env


@pytest.fixture
def installed_tree(debs, tmp_path):
    """The CLI's two packages unpacked; run with Debian's python3 and libraries."""
    support.need(subprocess.run(["/usr/bin/python3", "-c", "import typer, rich, jsonschema"]).returncode == 0,
                 "Debian's python3-typer, python3-rich and python3-jsonschema are not installed (make deps)")
    return support.extract_debs([debs["nvdocker-toolkit"], debs["nvdocker-setup"]], tmp_path / "root")


def _verbs(root):
    script = (
        "import typer.main\n"
        "from nvdocker_setup.cli.main import app\n"
        "group = typer.main.get_command(app)\n"
        "for name, cmd in sorted(group.commands.items()):\n"
        "    params = list(cmd.params) + [p for sub in getattr(cmd, 'commands', {}).values() for p in sub.params]\n"
        "    opts = [o for p in params if not getattr(p, 'hidden', False) for o in p.opts if o.startswith('--')]\n"
        "    print(name, *opts)\n"
    )
    out = run(["/usr/bin/python3", "-c", script], env=_cli_env(root)).stdout
    return {line.split()[0]: line.split()[1:] for line in out.splitlines()}


def test_every_verb_has_a_man_page_that_renders_cleanly(installed_tree):
    support.need_tools("man")
    mandir = installed_tree / "usr/share/man/man8"
    verbs = _verbs(installed_tree)
    assert {"install", "uninstall", "show", "backups", "restore"} <= set(verbs)
    pages = {"nvdocker-setup"} | {"nvdocker-setup-" + verb for verb in verbs}
    assert pages <= {path.name[:-len(".8.gz")] for path in mandir.glob("*.8.gz")}
    for page in sorted(pages):
        path = mandir / (page + ".8.gz")
        done = run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", path],
                   env=support.system_env(MANWIDTH="80"), check=False)
        assert done.returncode == 0 and not done.stdout.strip().startswith(("troff:", "man:")), done.stdout[:2000]
        text = gzip.decompress(path.read_bytes()).decode()
        verb = page[len("nvdocker-setup-"):]
        for option in verbs.get(verb, []):
            assert option.replace("-", "\\-") in text, "{} is not in {}".format(option, page)
    main_page = gzip.decompress((mandir / "nvdocker-setup.8.gz").read_bytes()).decode()
    for verb in verbs:
        assert "nvdocker\\-setup\\-{}".format(verb.replace("-", "\\-")) in main_page


def test_bash_completion_completes_verbs_and_options(installed_tree):
    script = installed_tree / "usr/share/bash-completion/completions/nvdocker-setup"
    assert not script.read_text().startswith("#!"), "completion files are sourced, not run"

    def complete(*words):
        line = ". {}; COMP_WORDS=({}); COMP_CWORD={}; _nvdocker_setup nvdocker-setup; printf '%s\\n' \"${{COMPREPLY[@]}}\"".format(
            script, " ".join("'{}'".format(w) for w in words), len(words) - 1)
        return run(["bash", "-c", line], env=_cli_env(installed_tree)).stdout.split()

    assert complete("nvdocker-setup", "unin") == ["uninstall"]
    assert "--dry-run" in complete("nvdocker-setup", "install", "--dr")
    assert "list" in complete("nvdocker-setup", "backups", "")


def test_zsh_completion_completes_on_the_first_tab(installed_tree, tmp_path):
    """zsh autoloads _nvdocker-setup as the completion function itself (typer's own script only
    defines one there, so its first TAB completes nothing)."""
    support.need_tools("zsh")
    fpath = installed_tree / "usr/share/zsh/vendor-completions"
    assert (fpath / "_nvdocker-setup").read_text().startswith("#compdef nvdocker-setup\n")
    env = _cli_env(installed_tree)
    driver = tmp_path / "drive.zsh"
    driver.write_text(
        "zmodload zsh/zpty\n"
        "zpty z 'zsh -f -i'\n"
        "zpty -w z 'PS1=\"> \"; fpath=({} $fpath); autoload -Uz compinit; compinit -u -D; print READY'\n"
        "out=''; for i in {{1..100}}; do zpty -r -t z line && out+=$line; [[ $out == *READY* ]] && break; sleep 0.1; done\n"
        "zpty -w -n z $'nvdocker-setup unin\\t'\n"
        "out=''; for i in {{1..100}}; do zpty -r -t z line && out+=$line; [[ $out == *uninstall* ]] && break; sleep 0.1; done\n"
        "zpty -d z\n"
        "print -r -- \"$out\"\n".format(fpath)
    )
    env["HOME"] = str(tmp_path)
    env["TERM"] = "dumb"
    done = run(["zsh", "-f", driver], env=env, timeout=60)
    assert "nvdocker-setup uninstall" in done.stdout, done.stdout[-2000:]


def test_docker_config_helper_is_valid_python(debs, tmp_path):
    root = support.extract_debs([debs["nvdocker2"]], tmp_path / "root")
    helper = root / "usr/libexec/nvdocker2/docker-config"
    assert os.access(str(helper), os.X_OK)
    run(["/usr/bin/python3", "-m", "py_compile", helper])
    usage = run(["/usr/bin/python3", helper, "bogus"], check=False)
    assert usage.returncode == 2 and "usage" in usage.stdout
