#!/usr/bin/env bash
# Run the suite with /usr/bin/python3 and Debian 12's own typer/rich/jsonschema/pytest/hypothesis,
# from the working tree (no venv), because the .deb packages run exactly that.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! /usr/bin/python3 -c 'import typer, rich, jsonschema, tomlkit, grpc, pytest, hypothesis' 2>/dev/null; then
  if [ "${CI:-}" = "true" ]; then
    echo "run-debian-tests: Debian's python3 libraries are missing in CI" >&2
    exit 1
  fi
  echo "run-debian-tests: SKIPPED (Debian's python3-typer/rich/jsonschema/tomlkit/grpcio/pytest/hypothesis not installed; run as root to install them)" >&2
  exit 0
fi
/usr/bin/python3 -c 'import typer, rich, jsonschema; print("Debian libraries: typer", typer.__version__, "| jsonschema", jsonschema.__version__)' 2>/dev/null || true
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# The console script is not installed here; tests that need it use `python -m nvdocker_setup`.
exec /usr/bin/python3 -m pytest -p no:cacheprovider "$@"
