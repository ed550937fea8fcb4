"""Read an OCI runtime command line the way runc (and crun) do, without rewriting it.

``<runtime> [global flags] <subcommand> [subcommand flags] [args]``: we need the subcommand, the
``--log``/``--log-format`` global values (errors go there so that Docker shows them) and, for
``create``, the bundle. Flags are accepted with one or two dashes (urfave/cli accepts both) and
in the ``--flag value`` and ``--flag=value`` forms; a flag's value is never taken for the
subcommand, so ``--root create create`` is the ``create`` subcommand with root ``create``.
``launcher/nvdocker-runtime.c`` implements the same rules in C.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import List, Optional, Sequence, Tuple

#: Global flags that take a value (runc's, and crun's --cgroup-manager/--log-level).
GLOBAL_VALUE_FLAGS = frozenset(("root", "log", "log-format", "criu", "rootless", "cgroup-manager", "log-level"))
#: Flags of `create` that take a value.
CREATE_VALUE_FLAGS = frozenset(("bundle", "b", "console-socket", "pid-file", "pidfd-socket", "preserve-fds"))


def split_flag(arg: str) -> Optional[Tuple[str, Optional[str]]]:
    """``("name", value-or-None)`` for ``--name``, ``-name``, ``--name=value``; None for a non-flag."""
    if len(arg) < 2 or not arg.startswith("-") or arg == "--":
        return None
    name = arg[2:] if arg.startswith("--") else arg[1:]
    key, sep, value = name.partition("=")
    return (key, value) if sep else (key, None)


class RuntimeArgs:
    """The parts of an OCI runtime argv that matter to us; ``argv`` itself is kept untouched."""

    __slots__ = ("argv", "subcommand", "subcommand_index", "log", "log_format", "bundle", "container_id")

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv: List[str] = list(argv)
        self.subcommand: Optional[str] = None
        self.subcommand_index: Optional[int] = None
        self.log: Optional[str] = None
        self.log_format: Optional[str] = None
        self.bundle: Optional[str] = None
        self.container_id: Optional[str] = None

    @property
    def is_create(self) -> bool:
        return self.subcommand == "create"


def _scan_flags(argv: Sequence[str], index: int, value_flags: frozenset) -> tuple:
    """The (name, value) flags from ``index`` on, and the index of the first argument after them."""
    flags: list = []
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            return flags, index + 1
        flag = split_flag(arg)
        if flag is None:
            break
        name, value = flag
        if value is None and name in value_flags:
            value = argv[index + 1] if index + 1 < len(argv) else None
            index += 2
        else:
            index += 1
        flags.append((name, value))
    return flags, index


def parse(argv: Sequence[str]) -> RuntimeArgs:
    """Parse ``argv`` (without the program name)."""
    parsed = RuntimeArgs(argv)
    flags, index = _scan_flags(argv, 0, GLOBAL_VALUE_FLAGS)
    for name, value in flags:
        if name == "log":
            parsed.log = value
        elif name == "log-format":
            parsed.log_format = value
    if index < len(argv):
        parsed.subcommand = argv[index]
        parsed.subcommand_index = index
        if parsed.subcommand == "create":
            _parse_create(parsed, argv, index + 1)
    return parsed


def _parse_create(parsed: RuntimeArgs, argv: Sequence[str], index: int) -> None:
    flags, index = _scan_flags(argv, index, CREATE_VALUE_FLAGS)
    for name, value in flags:
        if name in ("bundle", "b"):
            parsed.bundle = value
    if index < len(argv):
        parsed.container_id = argv[index]
