#!/usr/bin/env bash
# `make release`: stages the agent and its dependencies as wheels for the stemcell's
# platform into the release's blobs, and assembles the BOSH release directory.
#
# bosh/ is the release root; bosh/jobs is a link to the top-level jobs/. With the bosh CLI
# on PATH it also runs `bosh create-release`; without it, the directory is ready for one.
#
# Environment:
#   RELEASE_DIR  assemble a copy there instead of in bosh/ (jobs copied, not linked)
#   WHEELS_DIR   use these prebuilt wheels instead of building and downloading (offline)
#   PYTHON       the python whose pip builds the wheels (default: the project's .venv)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC="$ROOT/bosh"
RELEASE_DIR="${RELEASE_DIR:-$SRC}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

# Must match the vendored python-3.11 package (bosh/README.md) and the stemcell (x86_64, glibc >= 2.17).
PY_VERSION=3.11
PY_ABI=cp311
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)

say() { echo "make-release: $*" >&2; }

# 1. Wheels: the agent (pure Python, built from this tree) plus every dependency as a
#    binary wheel for the target platform, never an sdist that would need a compiler.
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
if [ -n "${WHEELS_DIR:-}" ]; then
  cp "$WHEELS_DIR"/*.whl "$stage/"
else
  "$PYTHON" -m pip wheel --no-deps --wheel-dir "$stage" "$ROOT" >&2
  platform_args=()
  for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
  "$PYTHON" -m pip download --dest "$stage" --only-binary=:all: \
    --python-version "$PY_VERSION" --implementation cp --abi "$PY_ABI" --abi abi3 --abi none \
    "${platform_args[@]}" "$stage"/log_shipper-*.whl >&2
fi
ls "$stage"/log_shipper-*.whl >/dev/null 2>&1 || { say "no log_shipper wheel in the staged wheels"; exit 1; }

# 2. The release directory.
if [ "$RELEASE_DIR" != "$SRC" ]; then
  mkdir -p "$RELEASE_DIR"
  # -L: the copy holds the jobs themselves rather than a link that would dangle.
  (cd "$SRC" && tar --exclude=./blobs --exclude=./dev_releases --exclude=./.dev_builds -chf - .) | tar -C "$RELEASE_DIR" -xf -
else
  ln -sfn ../jobs "$SRC/jobs"
fi

# 3. Blobs: what `bosh add-blob` does, for every wheel: the file under blobs/, its size
#    and sha256 in config/blobs.yml. An object_id from an earlier `bosh upload-blobs` is
#    kept while the file is unchanged.
blobs="$RELEASE_DIR/blobs/log-shipper-wheels"
rm -rf "$blobs"
mkdir -p "$blobs"
cp "$stage"/*.whl "$blobs/"
"$PYTHON" - "$RELEASE_DIR" <<'PY'
import hashlib, pathlib, re, sys

root = pathlib.Path(sys.argv[1])
blobs_yml = root / "config" / "blobs.yml"
# Earlier object_ids, from the block layout this script writes.
old = {}
current = None
for line in blobs_yml.read_text().splitlines() if blobs_yml.exists() else []:
    if line.startswith("#"):
        continue
    if m := re.match(r"^(\S.*):\s*$", line):
        current = old.setdefault(m.group(1), {})
    elif current is not None and (m := re.match(r"^\s+(\w+):\s*(\S+)\s*$", line)):
        current[m.group(1)] = m.group(2)
lines = ["# Written by bosh/scripts/make-release.sh; `bosh upload-blobs` adds object_id for final releases."]
for f in sorted((root / "blobs").rglob("*.whl")):
    name = f.relative_to(root / "blobs").as_posix()
    sha = "sha256:" + hashlib.sha256(f.read_bytes()).hexdigest()
    lines += [f"{name}:", f"  size: {f.stat().st_size}"]
    prev = old.get(name, {})
    if prev.get("sha") == sha and "object_id" in prev:
        lines.append(f"  object_id: {prev['object_id']}")
    lines.append(f"  sha: {sha}")
blobs_yml.write_text("\n".join(lines) + "\n")
PY
say "staged $(ls "$blobs" | wc -l) wheels in $blobs"

# 4. The runtime package, and the tarball when the bosh CLI is there.
if [ ! -e "$RELEASE_DIR/packages/python-3.11/spec.lock" ] && [ ! -e "$RELEASE_DIR/packages/python-3.11/spec" ]; then
  say "packages/python-3.11 is not vendored yet: run the 'bosh vendor-package' step in bosh/README.md before create-release"
fi
if command -v bosh >/dev/null 2>&1; then
  mkdir -p "$ROOT/dist"
  bosh create-release --dir "$RELEASE_DIR" --force --tarball "$ROOT/dist/log-shipper-dev-release.tgz"
else
  say "no bosh CLI on PATH: release directory assembled in $RELEASE_DIR; run 'bosh create-release --dir $RELEASE_DIR --force --tarball ...' where the CLI is installed"
fi
