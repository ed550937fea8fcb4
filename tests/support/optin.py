"""Test directories that run only when asked for (`make test-packages`, `make test-fleet`): a plain
`pytest` deselects them; naming the directory (or a file in it) or `-m <marker>` runs them."""

from pathlib import Path


def _asked_for(config, here: Path, marker: str) -> bool:
    if marker in (config.getoption("markexpr", "") or ""):
        return True
    base = Path(str(config.invocation_params.dir))
    for arg in config.args:
        path = (base / arg.split("::", 1)[0]).resolve()
        if path == here or here in path.parents:
            return True
    return False


def mark_and_deselect(config, items, here: Path, marker: str) -> None:
    """Mark the items under ``here`` with ``marker``; deselect them unless asked for."""
    import pytest

    mine = [item for item in items if here in Path(str(item.fspath)).resolve().parents]
    for item in mine:
        item.add_marker(getattr(pytest.mark, marker))
    if mine and not _asked_for(config, here, marker):
        config.hook.pytest_deselected(items=mine)
        items[:] = [item for item in items if item not in mine]
