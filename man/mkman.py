#!/usr/bin/env python3
"""Write the nvdocker-setup manual pages (troff, section 8) from the CLI itself.

    PYTHONPATH=. python3 man/mkman.py [--version V] OUTDIR

One page for the command (``nvdocker-setup.8``) and one per verb (``nvdocker-setup-install.8``
...), git-style. Verbs, options, their help texts and defaults come from the typer application's
Click command tree, and the exit statuses from ``nvdocker_setup/exit_status.py``, so the pages
follow the code; the prose that ``--help`` does not carry (how the file is chosen, files,
environment, examples) is written below. The output depends only on the code and on
SOURCE_DATE_EPOCH (the page date; no date without it), so builds are reproducible.
"""

import argparse
import ast
import datetime
import os
import sys
from typing import Dict, Iterable, List, Optional, Tuple

PROG = "nvdocker-setup"
SECTION = "8"

# Extra sections of the main page, in troff. Kept short: the README has the long story.
MAIN_DESCRIPTION = r"""
.B nvdocker\-setup
adds an OCI runtime entry (by default
.BR runtimes.nvidia ,
pointing at
.BR nvdocker\-runtime )
to the
.I daemon.json
that dockerd reads, and takes it out again, without losing any of the administrator's settings.
Every change is made under an exclusive lock, after a backup of the exact bytes, and only when
the result passes a JSON Schema of daemon.json, Docker's runtime rules and, with Docker 23 or
newer,
.BR "dockerd \-\-validate" .
The new file is written to a temporary file, synced and renamed over the old one, keeping its
owner, mode and SELinux label. Keys, values, order, indentation and newlines that the change
does not concern stay byte for byte as they were.
.PP
After writing,
.B install
and
.B uninstall
can make the running dockerd take the change (see
.BR \-\-apply ):
a reload when every changed key is reloadable, a restart otherwise, verified through the Engine
API and rolled back if dockerd does not come up with it.
"""

MAIN_CHOOSING = r"""
The first rule that applies names the file; \fBnvdocker\-setup show\fR prints which one did:
.IP 1. 4
the \fB\-\-config\fR option;
.IP 2. 4
the \fBNVDOCKER_DOCKER_CONFIG\fR environment variable;
.IP 3. 4
the \fB\-\-config\-file\fR of docker.service's ExecStart, then of a running dockerd
(from /proc);
.IP 4. 4
for a user other than root with a rootless daemon,
\fI$XDG_CONFIG_HOME/docker/daemon.json\fR;
.IP 5. 4
the docker snap's \fI/var/snap/docker/current/config/daemon.json\fR;
.IP 6. 4
\fI/etc/docker/daemon.json\fR.
.PP
With \fB\-\-engine containerd\fR: the \fB\-\-config\fR option; the
\fBNVDOCKER_CONTAINERD_CONFIG\fR environment variable; the \fB\-\-config\fR/\fB\-c\fR of
containerd.service's ExecStart, then of the running system containerd; \fI/etc/containerd/config.toml\fR.
Files that k3s, RKE2 or dockerd render anew at every start are refused.
"""

MAIN_FILES = r"""
.TP
.I /etc/docker/daemon.json
dockerd's configuration, unless another file is chosen (see above). No package owns it.
.TP
.I /etc/containerd/config.toml
containerd's configuration (\fB\-\-engine containerd\fR), unless another file is chosen.
.TP
.I /var/lib/nvdocker\-setup/state.json
what each install changed, so that uninstall undoes exactly that. The directory must be
owned by root (or the invoking user) and writable by nobody else, or every command refuses it.
.TP
.I /var/lib/nvdocker\-setup/backups/
the last 10 backups of each file and those install records need, with a
\fImanifest.json\fR of checksums.
.TP
.I /var/lib/nvdocker\-setup/lock
the lock that serialises concurrent runs.
.TP
.I /etc/default/nvdocker2
settings of the nvdocker2 package's scripts, such as \fBNVDOCKER2_CONFIGURE=no\fR
(\fI/etc/sysconfig/nvdocker2\fR on RPM systems).
"""

MAIN_ENVIRONMENT = r"""
.TP
.B NVDOCKER_DOCKER_CONFIG
the daemon.json to edit when \fB\-\-config\fR is not given.
.TP
.B NVDOCKER_CONTAINERD_CONFIG
the config.toml to edit with \fB\-\-engine containerd\fR when \fB\-\-config\fR is not given.
.TP
.B NVDOCKER_CONTAINERD_BINARY
the containerd binary whose version and \fBconfig dump\fR count (default: the running system
containerd's, else containerd on PATH).
.TP
.B NVDOCKER_STATE_DIR
the state directory when \fB\-\-state\-dir\fR is not given.
.TP
.B NVDOCKER_DEBUG
when set, an unexpected error prints its Python traceback.
"""

MAIN_EXAMPLES = r"""
.nf
# add runtimes.nvidia and make it the default runtime
nvdocker\-setup install \-\-default\-runtime
# show the diff an install would make, write nothing
nvdocker\-setup install \-\-dry\-run
# write the file only; dockerd picks it up at its next start
nvdocker\-setup install \-\-apply none
# add the handler "nvidia" to containerd's config.toml, restart containerd, verify through CRI
nvdocker\-setup install \-\-engine containerd
# undo exactly what install changed
nvdocker\-setup uninstall
# list backups, put the newest one back
nvdocker\-setup backups list
nvdocker\-setup restore \-\-latest
.fi
"""

# The same jobs, command for command (README "Coming from nvidia-ctk").
MAIN_NVIDIA_CTK = r"""
.TP
\fBnvidia\-ctk runtime configure \-\-runtime=docker [\-\-set\-as\-default]\fR
\fBnvdocker\-setup install [\-\-default\-runtime]\fR, or \fBnvdocker\-setup runtime configure\fR with the
same options.
.TP
\fBnvidia\-ctk runtime configure \-\-runtime=containerd\fR
\fBnvdocker\-setup install \-\-engine containerd\fR.
.TP
\fBnvidia\-ctk cdi generate [\-\-mode M] [\-\-device\-name\-strategy S] [\-\-vendor V] [\-\-class C] [\-\-no\-all\-device] [\-\-device\-id ID] [\-\-format F] [\-\-dev\-root D]\fR
\fBnvdocker\-setup cdi generate\fR with the same options (each also from \fBNVDOCKER_CDI_\fIOPTION\fR in
the environment); the default output is \fI/etc/cdi/nvdocker.yaml\fR.
.TP
\fBnvidia\-ctk cdi list\fR
\fBnvdocker\-setup cdi list\fR: every spec directory, and which file each device name comes from.
.TP
\fBnvidia\-ctk cdi transform root \-\-from A \-\-to B\fR
\fBnvdocker\-setup cdi transform root \-\-from A \-\-to B\fR.
.TP
\fBnvidia\-ctk system create\-device\-nodes \-\-control\-devices [\-\-load\-kernel\-modules]\fR
\fBnvdocker\-setup system create\-device\-nodes \-\-control\-devices [\-\-load\-kernel\-modules]\fR.
.TP
\fBnvidia\-ctk config \-\-set KEY=VALUE \-\-in\-place\fR
\fBnvdocker\-setup config \-\-set KEY=VALUE \-\-in\-place\fR (runtime.conf; nvidia\-ctk's key names where they map).
.TP
\fBnvidia\-ctk system create\-dev\-char\-symlinks\fR
\fBnvdocker\-setup system create\-dev\-char\-symlinks\fR.
"""

# Prose for verb pages, after the DESCRIPTION taken from the verb's docstring.
VERB_NOTES = {
    "install": r"""
A merge that changes nothing writes nothing, takes no backup and reports
\(lqalready configured\(rq. The runtime binary must be an absolute path, owned by root and not
writable by group or others, nor may any parent directory be; a missing binary is refused with
\fB\-\-default\-runtime\fR (it would break every container) and only warned about otherwise;
\fB\-\-allow\-unsafe\-runtime\fR accepts such a binary. \fB\-\-force\fR is only about other
tools' choices: it replaces a default runtime other than runc, or a \fBruntimes.<name>\fR entry
that another tool (nvidia\-ctk) wrote, which is otherwise a conflict (exit status 7).
Install records the entry it replaced, the previous default runtime and whether the file
existed, for \fBnvdocker\-setup\-uninstall\fR(8).
""",
    "uninstall": r"""
When daemon.json is unchanged since the install, uninstall puts back the exact bytes from
before it (or removes the file if install created it). Otherwise it removes only what is still
ours: an entry whose path was changed since, or a default runtime that was switched, is left in
place with a warning unless \fB\-\-force\fR.
""",
    "runtime": r"""
\fBnvdocker\-setup runtime configure\fR accepts the options of \fBnvidia\-ctk runtime configure\fR
for Docker (\fB\-\-runtime=docker\fR, \fB\-\-set\-as\-default\fR, \fB\-\-cdi.enabled\fR,
\fB\-\-config\fR, \fB\-\-dry\-run\fR) and runs \fBnvdocker\-setup\-install\fR(8) with them, with all
its checks, its backup and its exact undo. The entry is written with \fBruntimeArgs\fR (dockerd
ignores the \fBargs\fR key nvidia\-ctk writes). \fB\-\-runtime=containerd\fR and
\fB\-\-runtime=crio\fR are usage errors: only Docker is supported so far.
""",
    "restore": r"""
The backup's checksum is verified before it is written back, and the current file is backed up
first, so a restore can itself be undone.
""",
}


def troff_text(text: str) -> str:
    """Escape plain text for troff: backslashes, and control characters at a line start."""
    lines = []
    for line in text.replace("\\", "\\e").splitlines():
        line = line.strip()
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def troff_literal(word: str) -> str:
    """An option name, command or value: minus signs, not hyphens."""
    return troff_text(word).replace("-", "\\-")


def paragraphs(text: str) -> str:
    """A docstring's paragraphs as troff, separated by .PP."""
    blocks = [block.strip() for block in text.strip().split("\n\n") if block.strip()]
    return "\n.PP\n".join(troff_text(" ".join(block.split())) for block in blocks)


def first_line(text: Optional[str]) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    line = line.rstrip(".")
    return line[:1].lower() + line[1:]


def page_date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return ""
    stamp = datetime.datetime.fromtimestamp(int(epoch), tz=datetime.timezone.utc)
    return stamp.strftime("%Y-%m-%d")


def header(name: str, version: str, summary: str) -> List[str]:
    return [
        '.\\" Generated by man/mkman.py from the nvdocker-setup command line; do not edit.',
        '.TH {} {} "{}" "nvdocker-setup {}" "System Administration"'.format(
            troff_literal(name.upper()), SECTION, page_date(), version
        ),
        ".SH NAME",
        "{} \\- {}".format(troff_literal(name), troff_text(summary)),
    ]


def option_lines(params: Iterable) -> List[str]:
    """A .TP entry per visible option or argument."""
    import click

    out: List[str] = []
    for param in params:
        if getattr(param, "hidden", False):
            continue
        if isinstance(param, click.Argument):
            label = "\\fI{}\\fR".format(troff_literal(param.metavar or param.name.upper()))
        else:
            names = ", ".join("\\fB{}\\fR".format(troff_literal(opt)) for opt in list(param.opts) + list(param.secondary_opts))
            if getattr(param, "is_flag", False) or getattr(param, "count", False):
                label = names
            else:
                choices = getattr(param.type, "choices", None)
                metavar = param.metavar or ("|".join(choices) if choices else param.type.name.upper())
                label = "{} \\fI{}\\fR".format(names, troff_literal(metavar))
        text = getattr(param, "help", None) or ""
        default = param.default
        show_default = (
            not isinstance(param, click.Argument)
            and not getattr(param, "is_flag", False)
            and default not in (None, (), [], "")
            and "default" not in text
        )
        if show_default:
            text += " (default: {})".format(default)
        if getattr(param, "multiple", False) and "repeatable" not in text:
            text += " (repeatable)"
        out += [".TP", label, troff_text(text)]
    return out


def synopsis(words: str, command) -> List[str]:
    import click

    parts = ["\\fB{}\\fR".format(troff_literal(words)), "[\\fIOPTIONS\\fR]"]
    for param in command.params:
        if isinstance(param, click.Argument):
            parts.append("\\fI{}\\fR".format(troff_literal(param.metavar or param.name.upper())))
    if isinstance(command, click.Group):
        parts.append("\\fICOMMAND\\fR")
    return [".SH SYNOPSIS", " ".join(parts)]


def exit_statuses(source_path: str) -> List[Tuple[int, str]]:
    """(code, meaning) from the ``#:`` comments above each ExitStatus member."""
    with open(source_path, encoding="utf-8") as handle:
        source = handle.read()
    lines = source.splitlines()
    found: List[Tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.ClassDef) and node.name == "ExitStatus"):
            continue
        for item in node.body:
            if not (isinstance(item, ast.Assign) and isinstance(item.value, ast.Constant)):
                continue
            comment: List[str] = []
            index = item.lineno - 2
            while index >= 0 and lines[index].strip().startswith("#:"):
                comment.insert(0, lines[index].strip()[2:].strip())
                index -= 1
            text = " ".join(comment) or ("Success, whether or not anything changed." if item.value.value == 0 else "")
            found.append((int(item.value.value), text))
    return sorted(found)


def leaf_sections(words: str, command) -> List[str]:
    out: List[str] = []
    options = option_lines(command.params)
    if options:
        out += [".SH OPTIONS"] + options + [".TP", "\\fB\\-\\-help\\fR", "show the options and exit"]
    return out


def verb_page(verb: str, command, version: str) -> str:
    import click

    name = "{}-{}".format(PROG, verb)
    lines = header(name, version, first_line(command.help))
    lines += synopsis("{} {}".format(PROG, verb), command)
    lines += [".SH DESCRIPTION", paragraphs(command.help or "")]
    if verb in VERB_NOTES:
        lines += [".PP", VERB_NOTES[verb].strip()]
    if isinstance(command, click.Group):
        lines += [".SH COMMANDS"]
        for sub_name in sorted(command.commands):
            sub = command.commands[sub_name]
            lines += [".SS {}".format(troff_literal("{} {} {}".format(PROG, verb, sub_name)))]
            lines += [paragraphs(sub.help or "")]
            options = option_lines(sub.params)
            if options:
                lines += [".PP", "Options:"] + options
    else:
        lines += leaf_sections(verb, command)
    lines += [".SH SEE ALSO", "\\fB{}\\fR({})".format(troff_literal(PROG), SECTION)]
    return "\n".join(lines) + "\n"


def main_page(group, verbs: Dict[str, object], version: str, exit_source: str) -> str:
    lines = header(PROG, version, first_line(group.help))
    lines += [".SH SYNOPSIS", "\\fBnvdocker\\-setup\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]..."]
    lines += [".SH DESCRIPTION", MAIN_DESCRIPTION.strip()]
    lines += [".SH COMMANDS"]
    for verb in sorted(verbs):
        command = verbs[verb]
        lines += [".TP", "\\fB{}\\fR".format(troff_literal(verb)), troff_text(first_line(command.help) + ";"),
                  "see \\fB{}\\fR({}).".format(troff_literal("{}-{}".format(PROG, verb)), SECTION)]
    lines += [".SH OPTIONS"] + option_lines(group.params) + [".TP", "\\fB\\-\\-help\\fR", "show the commands and exit"]
    lines += [".SH WHICH DAEMON.JSON", MAIN_CHOOSING.strip()]
    lines += [".SH EXIT STATUS"]
    for code, meaning in exit_statuses(exit_source):
        lines += [".TP", "\\fB{}\\fR".format(code), troff_text(meaning)]
    lines += [".SH FILES", MAIN_FILES.strip()]
    lines += [".SH ENVIRONMENT", MAIN_ENVIRONMENT.strip()]
    lines += [".SH EXAMPLES", MAIN_EXAMPLES.strip()]
    lines += [".SH COMING FROM NVIDIA\\-CTK", MAIN_NVIDIA_CTK.strip()]
    see = ["\\fB{}\\fR({})".format(troff_literal("{}-{}".format(PROG, verb)), SECTION) for verb in sorted(verbs)]
    see += ["\\fBdockerd\\fR(8)"]
    lines += [".SH SEE ALSO", ",\n".join(see)]
    return "\n".join(lines) + "\n"


def generate(outdir: str, version: str) -> List[str]:
    import typer.main

    from nvdocker_setup.cli.main import app
    import nvdocker_setup.exit_status as exit_module

    group = typer.main.get_command(app)
    verbs = {name: cmd for name, cmd in group.commands.items() if not getattr(cmd, "hidden", False)}
    os.makedirs(outdir, exist_ok=True)
    pages = {"{}.{}".format(PROG, SECTION): main_page(group, verbs, version, exit_module.__file__)}
    for verb, command in verbs.items():
        pages["{}-{}.{}".format(PROG, verb, SECTION)] = verb_page(verb, command, version)
    written = []
    for filename in sorted(pages):
        path = os.path.join(outdir, filename)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(pages[filename])
        written.append(path)
    return written


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--version", help="version for the page footer (default: the package's)")
    args = parser.parse_args(argv)
    version = args.version
    if not version:
        from nvdocker_setup import __version__ as version
    for path in generate(args.outdir, version):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
