#!/bin/sh
# Copy the source tree into DEST (which must not exist): the files git tracks plus the untracked
# ones it does not ignore, so work in progress is built too; without git, everything but build
# outputs and caches. Used by debian/build-debs.sh and rpm/build-rpms.sh.
#   sh debian/export-tree.sh DEST
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
dest=$1
mkdir -p "$dest"
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # (a file deleted from the work tree but still tracked is skipped)
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
     | xargs -0 sh -c 'for f do if [ -e "$f" ] || [ -L "$f" ]; then printf "%s\0" "$f"; fi; done' sh \
     | tar --null --no-recursion -T - -cf -) | tar -C "$dest" -xf -
else
  (cd "$repo" && tar --exclude=./.git --exclude=./.venv --exclude='./.venv-*' --exclude=./build \
     --exclude=./dist --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis \
     --exclude=.mypy_cache --exclude='*.egg-info' --exclude=./debian/generated -cf - .) \
    | tar -C "$dest" -xf -
fi
# Caches an editor or a test run may leave in untracked folders.
find "$dest" -name __pycache__ -type d -prune -exec rm -rf {} +
