#!/bin/sh
# Build-time smoke test (debian/rules, dh_auto_test): with the interpreter and the libraries the
# packages depend on, the CLI starts, plans an install on a scratch daemon.json and writes nothing.
set -eu
python=${1:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '{\n  "log-level": "warn"\n}\n' > "$tmp/daemon.json"
cp "$tmp/daemon.json" "$tmp/expected.json"
"$python" -m nvdocker_setup --version
"$python" -m nvdocker_setup install --dry-run --json --config "$tmp/daemon.json" \
  --state-dir "$tmp/state" --runtime-path /usr/bin/nvdocker-runtime > "$tmp/out.json"
grep -q '"changed": false' "$tmp/out.json"
grep -q 'runtimes' "$tmp/out.json"
cmp "$tmp/daemon.json" "$tmp/expected.json"
echo "smoke test: ok"
