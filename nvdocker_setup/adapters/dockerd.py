"""Ask dockerd itself whether it would accept a daemon.json (``dockerd --validate``, 23.0+).

Our schema can lag behind dockerd, so when a new enough dockerd is installed its own verdict is
the one that counts. Nothing here raises: :func:`validate_config` reports what happened and the
caller decides whether a missing or old dockerd is fatal.
"""

import re
import subprocess
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

from nvdocker_setup.context import Context

#: The first release with ``--validate``.
VALIDATE_SINCE = (23, 0)
#: ``dockerd --version`` answers at once; a slow one is broken.
VERSION_TIMEOUT = 10.0

_VERSION_RE = re.compile(r"\bversion\s+v?((\d+)\.(\d+)[^\s,]*)", re.IGNORECASE)
_PREFIX_RE = re.compile(r"^unable to configure the Docker daemon with file (.+?): (.*)$")


@dataclass(frozen=True)
class DockerdBinary:
    """An installed dockerd and the version it reports."""

    path: str
    #: As printed, e.g. ``20.10.24+dfsg1``.
    version: str
    major: int
    minor: int

    @property
    def can_validate(self) -> bool:
        """``--validate`` appeared in 23.0; older dockerd fails with ``unknown flag``."""
        return (self.major, self.minor) >= VALIDATE_SINCE


@dataclass(frozen=True)
class DockerdValidation:
    """The verdict of :func:`validate_config`.

    ``ran`` says whether ``dockerd --validate`` was executed; when it was not, ``reason`` says why
    (no dockerd, too old). ``messages`` are dockerd's complaints without the
    ``unable to configure the Docker daemon with file X:`` prefix.
    """

    ran: bool
    ok: bool
    binary: Optional[DockerdBinary]
    output: str
    reason: str
    messages: Tuple[str, ...] = ()


def parse_version(text: str) -> Optional[Tuple[str, int, int]]:
    """Parse ``Docker version 26.1.5+dfsg1, build a72d7cd`` into (version, major, minor)."""
    match = _VERSION_RE.search(text)
    if match is None:
        return None
    return match.group(1), int(match.group(2)), int(match.group(3))


def _text(value: Any) -> str:
    """Output as text; TimeoutExpired carries bytes even in text mode."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _probe(ctx: Context, path: str) -> Optional[DockerdBinary]:
    try:
        result = ctx.run([path, "--version"], timeout=VERSION_TIMEOUT, env=dict(ctx.env))
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    parsed = parse_version(_text(result.stdout) + "\n" + _text(result.stderr))
    if parsed is None:
        return None
    version, major, minor = parsed
    return DockerdBinary(path=path, version=version, major=major, minor=minor)


def probe_binary(ctx: Context, path: str) -> Optional[DockerdBinary]:
    """The dockerd at ``path`` and the version it reports; None when it cannot say."""
    return _probe(ctx, path)


def find_dockerd(ctx: Context) -> Optional[DockerdBinary]:
    """dockerd on the context's PATH and its version; None when absent, broken or unparsable."""
    path = ctx.which("dockerd")
    if path is None:
        return None
    return _probe(ctx, path)


def clean_messages(output: str, config_path: Optional[str] = None) -> Tuple[str, ...]:
    """dockerd's error lines, each stripped of the ``unable to configure ... file X:`` prefix."""
    exact = None
    if config_path is not None:
        exact = "unable to configure the Docker daemon with file {}: ".format(config_path)
    messages = []
    for raw in output.splitlines():
        line = raw.strip()
        if not line or line == "configuration OK":
            continue
        if exact is not None and line.startswith(exact):
            line = line[len(exact):]
        else:
            match = _PREFIX_RE.match(line)
            if match is not None:
                line = match.group(2)
        line = line.strip()
        if line:
            messages.append(line)
    return tuple(messages)


def validate_config(
    ctx: Context,
    config_path: str,
    timeout: float = 30.0,
    *,
    flags: Sequence[str] = (),
    binary: Optional[DockerdBinary] = None,
) -> DockerdValidation:
    """Run ``dockerd --validate --config-file <config_path> [flags]``; never raises.

    Pass the daemon's ExecStart ``flags`` to catch flag/file conflicts (``hosts`` vs ``-H``), which
    dockerd only reports for flags given to the same invocation. ``binary`` skips the lookup.
    """
    if binary is None:
        path = ctx.which("dockerd")
        if path is None:
            return DockerdValidation(False, False, None, "", "dockerd not found on PATH")
        binary = _probe(ctx, path)
        if binary is None:
            return DockerdValidation(
                False,
                False,
                None,
                "",
                "could not read the version of {} (`dockerd --version` failed)".format(path),
            )
    if not binary.can_validate:
        return DockerdValidation(
            False,
            False,
            binary,
            "",
            "dockerd {}.{} has no --validate (needs {}.{}+)".format(
                binary.major, binary.minor, *VALIDATE_SINCE
            ),
        )
    argv = [binary.path, "--validate", "--config-file", config_path, *flags]
    try:
        result = ctx.run(argv, timeout=timeout, env=dict(ctx.env))
    except subprocess.TimeoutExpired as exc:
        output = (_text(exc.stderr) + _text(exc.stdout)).strip()
        return DockerdValidation(
            True,
            False,
            binary,
            output,
            "dockerd --validate did not finish within {:g} s".format(timeout),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return DockerdValidation(
            False, False, binary, "", "could not run {}: {}".format(binary.path, exc)
        )
    output = "\n".join(
        part for part in (_text(result.stderr).strip(), _text(result.stdout).strip()) if part
    )
    if result.returncode == 0:
        reason = "dockerd {} accepted the configuration".format(binary.version)
        return DockerdValidation(True, True, binary, output, reason)
    messages = clean_messages(output, config_path)
    if messages:
        reason = "dockerd {} rejected the configuration: {}".format(binary.version, messages[0])
    else:
        reason = "dockerd {} rejected the configuration (exit status {})".format(
            binary.version, result.returncode
        )
    return DockerdValidation(True, False, binary, output, reason, messages)
