"""What install and uninstall change in containerd's config.toml: pure functions from a document to a plan.

Edits are made on the text, line by line, where a human would make them: our handler's tables go after
the last ``runtimes.*`` table (or as dotted keys after the last dotted ``runtimes.`` key), in the file's
header spelling, quoting and indentation; ``default_runtime_name`` and ``enable_cdi`` are replaced in
place or added to their table. Nothing else is rewritten. Every result is parsed again and must equal
the expected value exactly, else the plan is refused (``containerd-config-edit-unsafe``).
"""

import copy
import json
import re
from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

from nvdocker_setup.core.plan import (
    DOCKER_DEFAULT_RUNTIMES,
    InstallRecord,
    InstallRequest,
    Plan,
    entry_binary,
    validate_request,
    validate_runtime_name,
)
from nvdocker_setup.engines.containerd.config import (
    CRI_PLUGIN,
    ContainerdDocument,
    Line,
    Path,
    basic_string,
    format_key,
    format_path,
)
from nvdocker_setup.errors import ConfigReadError, Conflict, UsageError

ENGINE = "containerd"
RUNTIME_TYPE = "io.containerd.runc.v2"
#: Default handlers whose place we may take without --force: containerd's own runc.
CONTAINERD_DEFAULT_RUNTIMES = DOCKER_DEFAULT_RUNTIMES
#: In ``created_tables``: install wrote ``version = N`` into an empty file.
VERSION_MARKER = "version"
#: containerd 1.6 and 1.7's built-in ``runc`` handler (``containerd config default``). Their config
#: decoder *replaces* the built-in runtimes map with the file's, so a file that defines a handler but not
#: ``runc`` loses runc (and pods using it fail): install writes it out with our handler, uninstall removes it.
RUNC_DEFAULT_ENTRY: Dict[str, Any] = {
    "runtime_type": RUNTIME_TYPE,
    "sandbox_mode": "podsandbox",  # 1.7's default; 1.6 has no such field and ignores it
    "options": {
        "BinaryName": "", "CriuImagePath": "", "CriuPath": "", "CriuWorkPath": "", "IoGid": 0, "IoUid": 0,
        "NoNewKeyring": False, "NoPivotRoot": False, "Root": "", "ShimCgroup": "", "SystemdCgroup": False,
    },
}


# -- readers on the plain value (show, doctor) -------------------------------------------------------


def _version_of(value: Any) -> int:
    version = value.get("version") if isinstance(value, dict) else None
    return version if version in CRI_PLUGIN and not isinstance(version, bool) else 1


def _get(value: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def runtime_entry(value: Dict[str, Any], name: str) -> Optional[Dict[str, Any]]:
    """``runtimes.<name>`` of the CRI plugin (None: absent or not a table)."""
    entry = _get(value, CRI_PLUGIN[_version_of(value)] + ("containerd", "runtimes", name))
    return entry if isinstance(entry, dict) else None


def default_runtime_name(value: Dict[str, Any]) -> Optional[str]:
    """``containerd.default_runtime_name`` as the file sets it (None: unset, containerd uses runc)."""
    name = _get(value, CRI_PLUGIN[_version_of(value)] + ("containerd", "default_runtime_name"))
    return name if isinstance(name, str) else None


def cdi_enabled(value: Dict[str, Any]) -> Optional[bool]:
    """``enable_cdi`` as the file sets it (None: unset, containerd's default for its version)."""
    enabled = _get(value, CRI_PLUGIN[_version_of(value)] + ("enable_cdi",))
    return enabled if isinstance(enabled, bool) else None


# -- rendering ----------------------------------------------------------------------------------------


def _render(value: Any, literal: bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if literal and "'" not in value and not any(ord(c) < 0x20 or c == "\x7f" for c in value):
            return "'" + value + "'"
        return basic_string(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_render(item, literal) for item in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(
            "{} = {}".format(format_key(k, literal), _render(v, literal)) for k, v in value.items()) + " }"
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    raise ValueError("cannot write {!r} as TOML".format(value))


class _Edit:
    """The file as a list of lines (each with its own line ending) and its scanned structure."""

    def __init__(self, document: ContainerdDocument) -> None:
        self.document = document
        self.newline = document.newline
        self.literal = "'" in document.text and '"' not in document.text.replace('\\"', "")

    @property
    def lines(self) -> List[Line]:
        return self.document.lines()

    def commit(self, texts: List[str]) -> None:
        self.document = self.document.with_text("".join(texts))

    def texts(self) -> List[str]:
        return [line.text for line in self.lines]

    def indents(self) -> bool:
        return any(line.indent for line in self.lines if line.kind in ("header", "array-header"))

    # -- where things are -------------------------------------------------------------------------

    def headers(self) -> List[Line]:
        return [line for line in self.lines if line.kind in ("header", "array-header")]

    def content_end(self, header: Line) -> int:
        """Index after the last key (or continuation) line of ``header``'s own table (header included)."""
        end = header.index + 1
        for line in self.lines[header.index + 1:]:
            if line.kind in ("header", "array-header"):
                break
            if line.kind in ("key", "cont"):
                end = line.index + 1
        return end

    def block_end(self, line: Line) -> int:
        """Index after a key line and its continuation lines."""
        end = line.index + 1
        while end < len(self.lines) and self.lines[end].kind == "cont":
            end += 1
        return end

    def header_indent(self, path: Path) -> str:
        for same_parent in (True, False):
            for line in self.headers():
                if len(line.path) == len(path) and (not same_parent or line.path[:-1] == path[:-1]):
                    return line.indent
        return "  " * (len(path) - 1) if self.indents() else ""

    def key_indent(self, table: Path) -> str:
        keys = [line for line in self.lines if line.kind == "key" and len(line.table) == len(table) and line.table]
        for line in keys:
            if line.table == table:
                return line.indent
        for line in keys:
            if line.table[:-1] == table[:-1]:
                return line.indent
        if keys:
            return keys[0].indent
        return "  " * len(table) if self.indents() else ""

    def raw_prefix(self, path: Path) -> Tuple[List[str], int]:
        """The file's own spelling of the longest prefix of ``path`` that a header spells, and its length."""
        best: Tuple[List[str], int] = ([], 0)
        for line in self.headers():
            size = 0
            while size < min(len(path), len(line.path)) and line.path[size] == path[size]:
                size += 1
            if size > best[1]:
                best = (list(line.raw_parts[:size]), size)
        return best

    def spell(self, path: Path) -> str:
        raw, size = self.raw_prefix(path)
        return ".".join(raw + [format_key(part, self.literal) for part in path[size:]])

    def anchor_after(self, path: Path) -> int:
        """Where new tables under ``path`` go: after the last table under the longest prefix of ``path``
        that has a header (its content), else at the end of the file."""
        for size in range(len(path), 0, -1):
            under = [line for line in self.headers() if line.path[:size] == path[:size]]
            if under:
                return self.content_end(under[-1])
        return len(self.lines)

    # -- changing lines ---------------------------------------------------------------------------

    def insert(self, at: int, block: List[str]) -> None:
        texts = self.texts()
        nl = self.newline
        block = [text + nl for text in block]
        if at > 0 and at == len(texts) and not texts[-1].endswith("\n"):
            texts[-1] += nl
            block[-1] = block[-1][: -len(nl)]
        self.commit(texts[:at] + block + texts[at:])

    def delete(self, indices: Sequence[int]) -> None:
        texts = self.texts()
        drop = set(indices)
        last_dropped = len(texts) - 1 in drop
        kept = [text for i, text in enumerate(texts) if i not in drop]
        if last_dropped and kept and not texts[-1].endswith("\n"):
            kept[-1] = kept[-1].rstrip("\r\n")
        self.commit(kept)

    def with_blank(self, first: int, end: int) -> List[int]:
        """Lines [first, end) plus the blank line that separated them: the next one, else the previous one."""
        indices = list(range(first, end))
        if end < len(self.lines) and self.lines[end].kind == "blank":
            indices.append(end)
        elif first > 0 and self.lines[first - 1].kind == "blank":
            indices.append(first - 1)
        return indices


def _unsafe(document: ContainerdDocument, what: str) -> ConfigReadError:
    return ConfigReadError(
        "{}: cannot edit this file safely: {}".format(document.source, what),
        reference="containerd-config-edit-unsafe",
        hint="write the runtime tables as [..runtimes.<name>] headers by hand, or use a drop-in file (nothing "
        "was written)",
    )


def _check_editable(edit: _Edit, path: Path) -> None:
    """Refuse when a table on ``path`` is an inline table (TOML cannot extend one)."""
    for line in edit.lines:
        if line.kind == "key" and len(line.path) <= len(path) and path[: len(line.path)] == line.path:
            raise _unsafe(edit.document, "{} is an inline table (line {})".format(format_path(line.path), line.index + 1))


# -- the entry ----------------------------------------------------------------------------------------


def _entry_lines(edit: _Edit, path: Path, entry: Dict[str, Any]) -> List[str]:
    """``entry`` as header tables at ``path``: scalars first, each sub-table after a blank line."""
    out: List[str] = []
    header = edit.header_indent(path)
    keys = edit.key_indent(path)
    out.append("{}[{}]".format(header, edit.spell(path)))
    for key, value in entry.items():
        if not isinstance(value, dict):
            out.append("{}{} = {}".format(keys, format_key(key, edit.literal), _render(value, edit.literal)))
    for key, value in entry.items():
        if isinstance(value, dict):
            out.append("")
            out.extend(_entry_lines(edit, path + (key,), value))
    return out


def _dotted_lines(edit: _Edit, anchor: Line, path: Path, entry: Dict[str, Any]) -> List[str]:
    raw = list(anchor.raw_parts[: len(path) - len(anchor.table) - 1])
    prefix = raw + [format_key(path[-1], edit.literal)]
    out: List[str] = []

    def walk(keys: List[str], value: Dict[str, Any]) -> None:
        for key, item in value.items():
            if isinstance(item, dict) and item:
                walk(keys + [format_key(key, edit.literal)], item)
            else:
                out.append("{}{} = {}".format(anchor.indent, ".".join(keys + [format_key(key, edit.literal)]),
                                              _render(item, edit.literal)))

    walk(prefix, entry)
    return out


def _insert_entry(edit: _Edit, runtimes: Path, name: str, entry: Dict[str, Any]) -> None:
    target = runtimes + (name,)
    _check_editable(edit, target)
    under_header = [line for line in edit.headers() if line.path[: len(runtimes)] == runtimes]
    dotted = [line for line in edit.lines if line.kind == "key" and len(line.table) < len(runtimes)
              and line.path[: len(runtimes)] == runtimes and len(line.path) > len(runtimes) + 1]
    if dotted and not under_header:
        anchor = dotted[-1]
        edit.insert(edit.block_end(anchor), _dotted_lines(edit, anchor, target, entry))
        return
    at = edit.anchor_after(target)
    block = _entry_lines(edit, target, entry)
    if at > 0:
        block = [""] + block
    else:
        block = block + [""] if edit.lines else block
    edit.insert(at, block)


def _remove_entry(edit: _Edit, target: Path) -> None:
    tables = [line for line in edit.headers() if line.path[: len(target)] == target]
    keys = [line for line in edit.lines if line.kind == "key" and line.path[: len(target)] == target
            and len(line.table) < len(target)]
    drop: List[int] = []
    for line in keys:
        drop.extend(range(line.index, edit.block_end(line)))
    if tables:
        first, end = tables[0].index, edit.content_end(tables[-1])
        inside = [line for line in edit.headers() if first <= line.index < end]
        if all(line.path[: len(target)] == target for line in inside):
            drop.extend(edit.with_blank(first, end))
        else:
            for line in tables:
                drop.extend(edit.with_blank(line.index, edit.content_end(line)))
    if drop:
        edit.delete(drop)


# -- single keys --------------------------------------------------------------------------------------


def _set_key(edit: _Edit, path: Path, value: Any, created: List[str]) -> None:
    table, key = path[:-1], path[-1]
    _check_editable(edit, table)
    for line in edit.lines:
        if line.kind == "key" and line.path == path:
            if line.value_span is None:
                raise _unsafe(edit.document, "{} spans several lines (line {})".format(format_path(path), line.index + 1))
            start, end = line.value_span
            literal = line.text[start:start + 1] == "'"
            texts = edit.texts()
            texts[line.index] = line.text[:start] + _render(value, literal) + line.text[end:]
            edit.commit(texts)
            return
    headers = [line for line in edit.headers() if line.path == table]
    if headers:
        header = headers[-1]
        indent = edit.key_indent(table)
        if not any(line.kind == "key" and line.table == table for line in edit.lines) and edit.indents():
            indent = header.indent + "  "
        edit.insert(edit.content_end(header), ["{}{} = {}".format(indent, format_key(key, edit.literal),
                                                                    _render(value, edit.literal))])
        return
    dotted = [line for line in edit.lines if line.kind == "key" and len(line.table) < len(table)
              and line.path[: len(table)] == table and len(line.path) > len(table)]
    if dotted:
        anchor = dotted[-1]
        raw = list(anchor.raw_parts[: len(table) - len(anchor.table)])
        edit.insert(edit.block_end(anchor), ["{}{} = {}".format(
            anchor.indent, ".".join(raw + [format_key(key, edit.literal)]), _render(value, edit.literal))])
        return
    block = ["{}[{}]".format(edit.header_indent(table), edit.spell(table)),
             "{}{} = {}".format(edit.key_indent(table), format_key(key, edit.literal), _render(value, edit.literal))]
    below = [line for line in edit.headers() if line.path[: len(table)] == table]
    if below:
        at = below[0].index
        while at > 0 and edit.lines[at - 1].kind == "comment":
            at -= 1
        edit.insert(at, block + [""])
    else:
        at = edit.anchor_after(table)
        edit.insert(at, ([""] if at > 0 else []) + block + ([""] if at == 0 and edit.lines else []))
    created.append(format_path(table))


def _remove_key(edit: _Edit, path: Path) -> None:
    for line in edit.lines:
        if line.kind == "key" and line.path == path:
            edit.delete(range(line.index, edit.block_end(line)))
            return


def _remove_empty_table(edit: _Edit, table: Path) -> bool:
    for line in edit.headers():
        if line.path == table and line.kind == "header":
            end = line.index + 1
            while end < len(edit.lines) and edit.lines[end].kind not in ("header", "array-header"):
                if edit.lines[end].kind != "blank":
                    return False
                end += 1
            edit.delete(edit.with_blank(line.index, line.index + 1))
            return True
    return False


def _parse_table_path(text: str) -> Path:
    from nvdocker_setup.engines.containerd.config import _parse_key

    parts, end = _parse_key(text, 0)
    if end != len(text):
        raise ValueError("not a table path: {!r}".format(text))
    return tuple(decoded for _, decoded in parts)


# -- checking the result ------------------------------------------------------------------------------


def _prune(value: Any, paths: Sequence[Path]) -> Any:
    """``value`` without the empty tables along ``paths`` (a table we created and removed again)."""
    value = copy.deepcopy(value)
    for path in paths:
        for cut in range(len(path), 0, -1):
            parent = _get(value, path[: cut - 1]) if cut > 1 else value
            if isinstance(parent, dict) and parent.get(path[cut - 1]) == {}:
                del parent[path[cut - 1]]
    return value


def _set_in(value: Dict[str, Any], path: Path, item: Any) -> None:
    node = value
    for key in path[:-1]:
        node = node.setdefault(key, {})
    if item is None:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = copy.deepcopy(item)


def _verify(before: ContainerdDocument, after: ContainerdDocument, expected: Dict[str, Any],
            paths: Sequence[Path]) -> None:
    if _prune(after.value, paths) != _prune(expected, paths):
        raise _unsafe(before, "the edited text does not read back as the intended change")


# -- planning -----------------------------------------------------------------------------------------


def _check_cri(document: ContainerdDocument) -> None:
    disabled = document.cri_disabled()
    if disabled is not None:
        raise Conflict(
            "{}: the CRI plugin is disabled (disabled_plugins contains {}), so containerd would ignore a runtime "
            "handler".format(document.source, basic_string(disabled)),
            reference="containerd-cri-disabled",
            hint="remove {} from disabled_plugins (docker-ce's containerd.io ships it disabled; Kubernetes needs "
            "it), or start from `containerd config default`".format(basic_string(disabled)),
        )


def _needs_runc(document: ContainerdDocument) -> bool:
    """Whether adding a handler would make containerd 1.x forget its built-in runc (see RUNC_DEFAULT_ENTRY)."""
    runtimes = document.get(document.runtimes_path) or {}
    return document.version in (1, 2) and "runc" not in runtimes


#: Fields of the default handler that our handler does not copy (everything else is copied, as NVIDIA's
#: toolkit does, so that a pod moved onto our handler runs as it did: ``sandbox_mode``/``sandboxer``,
#: ``base_runtime_spec``, ``privileged_without_host_devices``, annotations, ``snapshotter`` ...):
#: ``runtime_type`` and ``options.BinaryName`` are ours; ``runtime_path`` overrides the *shim* binary of
#: the default's handler type (our handler names its own shim type, and a shim override chosen for runc
#: is not known to be right for our binary); ``runtime_root`` and ``runtime_engine`` belong to the removed
#: ``io.containerd.runtime.v1.linux`` handlers (NVIDIA's toolkit clears them too).
NOT_COPIED = ("runtime_type", "runtime_path", "runtime_root", "runtime_engine")


def _default_source(document: ContainerdDocument) -> Dict[str, Any]:
    """The handler our entry copies: the default handler (if it is a runc v2 handler), else runc's."""
    runtimes = dict(document.get(document.runtimes_path) or {})
    if _needs_runc(document):
        runtimes["runc"] = RUNC_DEFAULT_ENTRY
    default = document.get(document.default_runtime_name_path)
    for candidate in (default, "runc"):
        entry = runtimes.get(candidate) if isinstance(candidate, str) else None
        if isinstance(entry, dict) and entry.get("runtime_type", RUNTIME_TYPE) == RUNTIME_TYPE:
            return entry
    return {}


def make_entry(document: ContainerdDocument, request: InstallRequest) -> Dict[str, Any]:
    """``runtimes.<name>``: a runc handler running our binary, with the default handler's fields and options
    (all but :data:`NOT_COPIED`)."""
    source = _default_source(document)
    entry: Dict[str, Any] = {"runtime_type": RUNTIME_TYPE}
    for key, value in source.items():
        if key not in NOT_COPIED and key != "options":
            entry[key] = copy.deepcopy(value)
    source_options = source.get("options")
    source_options = source_options if isinstance(source_options, dict) else {}
    options: Dict[str, Any] = {}
    if "BinaryName" not in source_options:
        options["BinaryName"] = request.runtime_path
    for key, value in source_options.items():
        options[key] = request.runtime_path if key == "BinaryName" else copy.deepcopy(value)
    entry["options"] = options
    return entry


def _ensure_version(edit: _Edit, created: List[str]) -> None:
    if edit.document.implicit_version and "version" not in edit.document.value:
        version = edit.document.implicit_version
        edit.insert(0, ["version = {}".format(version)] + ([""] if edit.lines and edit.lines[0].kind != "blank" else []))
        created.append(VERSION_MARKER)


def plan_install(document: ContainerdDocument, request: InstallRequest, record: Optional[InstallRecord] = None, *,
                 cdi_supported: bool = True, base: Optional[ContainerdDocument] = None) -> Plan:
    """Add our handler (and optionally default_runtime_name and enable_cdi) to ``document``.

    ``base``: ``document`` is a drop-in imported by ``base`` (containerd 2.1 merges it into ``base``): the
    entry copies ``base``'s default handler, the foreign checks look at ``base`` too, and no built-in runc is
    written (2.x keeps it)."""
    validate_request(request)
    if request.runtime_args:
        raise UsageError(
            "containerd's runc handlers take no runtime arguments (got {})".format(" ".join(request.runtime_args)),
            reference="containerd-runtime-args",
            hint="drop the runtime arguments; configure the runtime through its own config file",
        )
    if request.enable_cdi and not cdi_supported:
        raise UsageError(
            "this containerd has no CDI support (enable_cdi needs containerd 1.7 or later)",
            reference="containerd-cdi-unsupported",
            hint="drop --cdi, or upgrade containerd to 1.7 or later",
        )
    _check_cri(document)
    name = request.runtime_name
    current = document.value
    runtimes_path = document.runtimes_path
    target = runtimes_path + (name,)
    runtimes = document.get(runtimes_path)
    existing = runtimes.get(name) if isinstance(runtimes, dict) else None
    entry = make_entry(base or document, request)
    fresh = record is None
    if record is None:
        record = InstallRecord(runtime_name=name, entry=entry, engine=ENGINE, previous_entry=copy.deepcopy(existing),
                               runtimes_created=runtimes is None)
    if existing is not None and existing != entry and fresh and entry_binary(ENGINE, existing) != request.runtime_path:
        if not request.force:
            raise Conflict(
                "{} is already a handler running {}, which nvdocker-setup did not install; not replacing it".format(
                    format_path(target), basic_string(str(entry_binary(ENGINE, existing)))),
                reference="runtime-entry-foreign",
                hint="install beside it under another name (--runtime-name nvdocker), or pass --force to replace it "
                "(uninstall puts it back)",
            )
    plan = Plan(before=document, after=document)  # type: ignore[arg-type]
    edit = _Edit(document)
    expected = copy.deepcopy(current)
    created: List[str] = []
    pruned: List[Path] = [target]

    def begin() -> None:
        if not created:
            _ensure_version(edit, created)
            if VERSION_MARKER in created:
                expected["version"] = document.implicit_version

    if existing != entry:
        begin()
        if existing is not None:
            _remove_entry(edit, target)
        if base is None and _needs_runc(document):
            _insert_entry(edit, runtimes_path, "runc", RUNC_DEFAULT_ENTRY)
            _set_in(expected, runtimes_path + ("runc",), RUNC_DEFAULT_ENTRY)
            created.append(format_path(runtimes_path + ("runc",)))
            plan.changes.append("add {} as containerd's built-in default (containerd 1.x forgets it once the file "
                                "names any handler)".format(format_path(runtimes_path + ("runc",))))
        _insert_entry(edit, runtimes_path, name, entry)
        _set_in(expected, target, entry)
        plan.changes.append("{} {} -> {}".format("replace" if existing is not None else "add", format_path(target),
                                                request.runtime_path))
        if existing is not None and fresh:
            plan.warnings.append("replacing the existing {} handler; uninstall puts it back".format(format_path(target)))
    record = replace(record, entry=entry, engine=ENGINE)

    if request.set_default:
        path = document.default_runtime_name_path
        previous = document.get(path)
        if previous is None and base is not None:
            previous = base.get(base.default_runtime_name_path)
        if document.get(path) != name:
            if previous is not None and previous not in CONTAINERD_DEFAULT_RUNTIMES and not request.force:
                raise Conflict(
                    "default_runtime_name is {}, set by someone else; not replacing it".format(basic_string(previous)),
                    reference="default-runtime-foreign",
                    hint="pass --force to make {} the default anyway (uninstall restores {})".format(
                        name, previous),
                )
            begin()
            _set_key(edit, path, name, created)
            _set_in(expected, path, name)
            pruned.append(path[:-1])
            plan.changes.append("set {} -> {} (was {})".format(format_path(path), name, previous or "unset"))
            if not record.default_changed:
                record = replace(record, default_changed=True, previous_default=previous)

    if request.enable_cdi:
        path = document.enable_cdi_path
        previous_cdi = document.get(path)
        if previous_cdi is None and base is not None:
            previous_cdi = base.get(base.enable_cdi_path)
        if document.get(path) is not True:
            begin()
            _set_key(edit, path, True, created)
            _set_in(expected, path, True)
            pruned.append(path[:-1])
            plan.changes.append("set {} -> true (cdi_spec_dirs kept)".format(format_path(path)))
            if not record.cdi_changed:
                record = replace(record, cdi_changed=True, previous_cdi=previous_cdi)

    if created:
        known = list(record.created_tables)
        added = sorted((t for t in created if t not in known), key=lambda t: (t != VERSION_MARKER, len(t)))
        record = replace(record, created_tables=tuple(known + added))
    plan.after = edit.document  # type: ignore[assignment]
    if plan.changed:
        _verify(document, edit.document, expected, pruned)
    _check_recordable(document, record)
    plan.record = record
    return plan


def _check_recordable(document: ContainerdDocument, record: InstallRecord) -> None:
    """Refuse, before anything is written, a record the state file cannot keep and read back (a TOML
    date, nan or inf, or more than a record may hold, in the handler we copy or replace): written, it
    would make every later run refuse the state as damaged."""
    try:
        InstallRecord.from_dict(json.loads(json.dumps(record.to_dict(), allow_nan=False)))
    except (TypeError, ValueError) as error:
        raise Conflict(
            "{}: the handler this install copies or replaces holds values nvdocker-setup cannot record for "
            "uninstall ({})".format(document.source, str(error)[:200]),
            reference="runtime-entry-unrecordable",
            hint="remove dates, nan and inf from {} by hand, or install under another name (--runtime-name)".format(
                format_path(document.runtimes_path)),
        ) from None


def plan_uninstall(document: ContainerdDocument, name: str, record: Optional[InstallRecord],
                   force: bool = False) -> Plan:
    """Undo what ``record`` says install changed, leaving the admin's later edits alone."""
    validate_runtime_name(name)
    plan = Plan(before=document, after=document)  # type: ignore[arg-type]
    runtimes_path = document.runtimes_path
    target = runtimes_path + (name,)
    existing = document.get(target)
    if record is None:
        if not force:
            if existing is not None:
                plan.warnings.append("{} exists but nvdocker-setup has no record of installing it; left in place "
                                     "(--force removes it)".format(format_path(target)))
            return plan
        record = InstallRecord(runtime_name=name, entry=existing or {}, engine=ENGINE, default_changed=True)
    edit = _Edit(document)
    expected = copy.deepcopy(document.value)
    pruned: List[Path] = [target]

    if existing is not None:
        ours = entry_binary(ENGINE, existing) == entry_binary(ENGINE, record.entry)
        if ours or force:
            _remove_entry(edit, target)
            if record.previous_entry is not None:
                _insert_entry(edit, runtimes_path, name, record.previous_entry)
                _set_in(expected, target, record.previous_entry)
                plan.changes.append("restore the previous {} handler".format(format_path(target)))
            else:
                _set_in(expected, target, None)
                plan.changes.append("remove {}".format(format_path(target)))
        else:
            plan.warnings.append("{} now runs {}, not {} as installed; left in place (--force removes it)".format(
                format_path(target), entry_binary(ENGINE, existing), entry_binary(ENGINE, record.entry)))

    path = document.default_runtime_name_path
    if record.default_changed and document.get(path) == name:
        if record.previous_default is None:
            _remove_key(edit, path)
            plan.changes.append("remove {} (containerd falls back to runc)".format(format_path(path)))
        else:
            _set_key(edit, path, record.previous_default, [])
            plan.changes.append("restore {} -> {}".format(format_path(path), record.previous_default))
        _set_in(expected, path, record.previous_default)
        pruned.append(path[:-1])

    path = document.enable_cdi_path
    if record.cdi_changed and document.get(path) is True:
        if record.previous_cdi is None:
            _remove_key(edit, path)
            plan.changes.append("remove {}".format(format_path(path)))
        else:
            _set_key(edit, path, record.previous_cdi, [])
            plan.changes.append("restore {} -> {}".format(format_path(path), str(record.previous_cdi).lower()))
        _set_in(expected, path, record.previous_cdi)
        pruned.append(path[:-1])

    for table in reversed(record.created_tables):
        if table == VERSION_MARKER:
            continue
        try:
            table_path = _parse_table_path(table)
        except ValueError:
            continue
        if table_path == runtimes_path + ("runc",):
            if edit.document.get(table_path) == RUNC_DEFAULT_ENTRY and edit.document.get(target) is None:
                _remove_entry(edit, table_path)
                _set_in(expected, table_path, None)
                pruned.append(table_path)
            continue
        if _remove_empty_table(edit, table_path):
            pruned.append(table_path)
    if VERSION_MARKER in record.created_tables and _only_version(edit):
        edit.delete([line.index for line in edit.lines])
        expected.pop("version", None)

    plan.after = edit.document  # type: ignore[assignment]
    if plan.changed:
        _verify(document, edit.document, expected, pruned)
    return plan


def _only_version(edit: _Edit) -> bool:
    keys = [line for line in edit.lines if line.kind not in ("blank",)]
    return len(keys) == 1 and keys[0].path == ("version",) and re.match(r"\s*version\s*=", keys[0].text) is not None


# -- drop-in mode ---------------------------------------------------------------------------------------

#: In ``created_tables``: install created the ``imports`` key / added this entry to it.
IMPORTS_MARKER = "imports"
IMPORT_PREFIX = "import:"
DROP_IN_HEADER = (
    "# Written by nvdocker-setup: the {name} runtime handler, imported by {main}.\n"
    "# `nvdocker-setup uninstall --engine containerd` removes this file and that import.\n"
)


def _imports_line(edit: _Edit) -> Optional[Line]:
    for line in edit.lines:
        if line.kind == "key" and line.path == ("imports",) and not line.table:
            return line
    return None


def add_import(document: ContainerdDocument, entry: str) -> Tuple[ContainerdDocument, List[str]]:
    """``document`` importing ``entry`` last (once), and the ``created_tables`` markers of that change."""
    if entry in document.imports:
        return document, []
    edit = _Edit(document)
    created: List[str] = []
    _ensure_version(edit, created)
    line = _imports_line(edit)
    texts = edit.texts()
    if line is None:
        at = 0
        for candidate in edit.lines:
            if candidate.kind in ("header", "array-header"):
                break
            if candidate.kind == "key" and candidate.path == ("version",):
                at = edit.block_end(candidate)
        edit.insert(at, ["imports = [{}]".format(_render(entry, edit.literal))])
        created.append(IMPORTS_MARKER)
    else:
        if line.value_span is None:
            raise _unsafe(document, "imports spans several lines (line {}); add {} to it by hand, or install in "
                          "place".format(line.index + 1, basic_string(entry)))
        start, end = line.value_span
        close = line.text.rindex("]", start, end)
        inside = line.text[start + 1:close]
        body = inside.rstrip()
        if body.endswith(","):
            body = body[:-1].rstrip()
        rendered = _render(entry, edit.literal)
        new_inside = (body + ", " + rendered) if body.strip() else rendered
        texts[line.index] = line.text[:start + 1] + new_inside + line.text[close:]
        edit.commit(texts)
    created.append(IMPORT_PREFIX + entry)
    expected = copy.deepcopy(document.value)
    expected["imports"] = document.imports + [entry]
    if VERSION_MARKER in created:
        expected["version"] = document.implicit_version
    if edit.document.value != expected:
        raise _unsafe(document, "the edited imports do not read back as intended")
    return edit.document, created


def remove_import(document: ContainerdDocument, entry: str, created_key: bool) -> ContainerdDocument:
    """``document`` without the ``imports`` entry install added (and without the key when install created it
    and nothing else is in it)."""
    if entry not in document.imports:
        return document
    edit = _Edit(document)
    line = _imports_line(edit)
    if line is None or line.value_span is None:
        raise _unsafe(document, "imports spans several lines; remove {} from it by hand".format(basic_string(entry)))
    expected = copy.deepcopy(document.value)
    rest = [item for item in document.imports if item != entry]
    if created_key and not rest:
        edit.delete(edit.with_blank(line.index, edit.block_end(line)) if False else [line.index])
        expected.pop("imports", None)
    else:
        start, end = line.value_span
        value = line.text[start:end]
        for rendered in (basic_string(entry), "'" + entry + "'"):
            for pattern in (", " + rendered, "," + rendered, rendered + ", ", rendered + ",", rendered):
                if pattern in value:
                    value = value.replace(pattern, "", 1)
                    break
            else:
                continue
            break
        texts = edit.texts()
        texts[line.index] = line.text[:start] + value + line.text[end:]
        edit.commit(texts)
        expected["imports"] = rest
    if edit.document.value != expected:
        raise _unsafe(document, "the edited imports do not read back as intended")
    return edit.document


def plan_drop_in(main: ContainerdDocument, drop_in: ContainerdDocument, request: InstallRequest,
                 record: Optional[InstallRecord], import_entry: str, *, cdi_supported: bool = True
                 ) -> Tuple[Plan, Plan]:
    """Drop-in mode: (the plan of ``main``, which imports ``import_entry`` once, and the plan of ``drop_in``,
    which holds our handler and the default/CDI keys asked for). The record (on the main plan) covers both."""
    _check_cri(main)
    if main.version == 1:
        raise Conflict(
            "{} is a version 1 config; a drop-in needs version 2 or 3 (containerd 1.x replaces whole plugin tables "
            "on import, and 2.x ignores a version 1 file's runtimes)".format(main.source),
            reference="containerd-drop-in-v1",
            hint="install in place (without --drop-in)",
        )
    name = request.runtime_name
    if main.get(main.runtimes_path + (name,)) is not None and record is None:
        raise Conflict(
            "{} already defines {}; a drop-in would merge into that table, not replace it".format(
                main.source, format_path(main.runtimes_path + (name,))),
            reference="containerd-drop-in-entry-in-main",
            hint="install in place (without --drop-in), with --force if the handler is another tool's, or "
            "choose another --runtime-name",
        )
    if record is None and drop_in.value:
        raise Conflict(
            "{} exists and nvdocker-setup did not write it; not writing our handler into it".format(drop_in.source),
            reference="containerd-drop-in-foreign",
            hint="choose another file with --drop-in-path, or move that one away",
        )
    if drop_in.version != main.version and not drop_in.value:
        drop_in = ContainerdDocument.empty(drop_in.source, main.version)
    inner = plan_install(drop_in, request, record, cdi_supported=cdi_supported, base=main)
    if inner.changed and not drop_in.text:
        header = DROP_IN_HEADER.format(name=basic_string(name), main=main.source)
        inner.after = inner.after.with_text(header + inner.after.text)  # type: ignore[attr-defined]
    after_main, created = add_import(main, import_entry)
    outer = Plan(before=main, after=main)  # type: ignore[arg-type]
    outer.after = after_main  # type: ignore[assignment]
    outer.changes = list(inner.changes)
    if created:
        outer.changes.append("add {} to the imports of {}".format(basic_string(import_entry), main.source))
    outer.warnings = list(inner.warnings)
    assert inner.record is not None
    record = inner.record
    known = [t for t in record.created_tables if t.startswith(IMPORT_PREFIX) or t == IMPORTS_MARKER]
    if created:
        record = replace(record, created_tables=tuple(record.created_tables) + tuple(
            t for t in created if t != VERSION_MARKER and t not in known))
    outer.record = record
    return outer, inner


def plan_uninstall_drop_in_main(main: ContainerdDocument, record: InstallRecord) -> Plan:
    """Uninstall in drop-in mode, the main file's part: remove the imports entry install added."""
    plan = Plan(before=main, after=main)  # type: ignore[arg-type]
    after = main
    created_key = IMPORTS_MARKER in record.created_tables
    for marker in record.created_tables:
        if marker.startswith(IMPORT_PREFIX):
            entry = marker[len(IMPORT_PREFIX):]
            if entry in after.imports:
                after = remove_import(after, entry, created_key)
                plan.changes.append("remove {} from the imports of {}".format(basic_string(entry), main.source))
    plan.after = after  # type: ignore[assignment]
    return plan


def drop_in_record_part(record: InstallRecord) -> InstallRecord:
    """The record as the drop-in's own uninstall plan reads it: everything of ours goes (nothing was there)."""
    return replace(record, previous_entry=None, previous_default=None, previous_cdi=None, created_tables=tuple(
        t for t in record.created_tables if not t.startswith(IMPORT_PREFIX) and t != IMPORTS_MARKER))
