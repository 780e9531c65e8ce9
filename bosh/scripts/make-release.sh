#!/usr/bin/env bash
# `make release`: stages the agent and its dependencies as wheels for the stemcell's
# platform into the release's blobs, assembles the BOSH release directory and runs
# `bosh create-release --force --tarball` on it.
#
# bosh/ is the release root; bosh/jobs is a link to the top-level jobs/.
#
# The bosh CLI is not vendored: $BOSH_CLI, else `bosh` on PATH, else ../shared/tools/bosh
# beside the project root.
#
# Environment:
#   RELEASE_DIR  assemble a copy there instead of in bosh/ (jobs copied, not linked)
#   TARBALL      where the release tarball goes (default: dist/log-shipper-dev-release.tgz)
#   WHEELS_DIR   use these prebuilt wheels instead of building and downloading (offline)
#   WHEEL_CACHE  where downloaded dependency wheels are kept between runs
#                (default: /var/tmp/log-shipper-cache/release-wheels)
#   PYTHON       the python whose pip builds the wheels (default: the project's .venv)
#   TEST_ONLY_PYTHON_STANDIN
#                tests only: a package directory copied in as packages/python-3.11 in place
#                of the vendored one; needs RELEASE_DIR, and the release is then named
#                log-shipper-test-standin so it cannot pass for a real one
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC="$ROOT/bosh"
RELEASE_DIR="${RELEASE_DIR:-$SRC}"
TARBALL="${TARBALL:-$ROOT/dist/log-shipper-dev-release.tgz}"
WHEEL_CACHE="${WHEEL_CACHE:-/var/tmp/log-shipper-cache/release-wheels}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

# Must match the vendored python-3.11 package (bosh/README.md) and the stemcell (x86_64, glibc >= 2.17).
PY_VERSION=3.11
PY_ABI=cp311
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)

say() { echo "make-release: $*" >&2; }

find_bosh() {
  if [ -n "${BOSH_CLI:-}" ]; then
    [ -x "$BOSH_CLI" ] || { say "BOSH_CLI=$BOSH_CLI is not an executable"; return 1; }
    echo "$BOSH_CLI"
  elif command -v bosh >/dev/null 2>&1; then
    command -v bosh
  elif [ -x "$ROOT/../shared/tools/bosh" ]; then
    echo "$ROOT/../shared/tools/bosh"
  else
    say "no bosh CLI: set BOSH_CLI, put bosh on PATH (https://github.com/cloudfoundry/bosh-cli/releases) or place it at ../shared/tools/bosh"
    return 1
  fi
}
bosh="$(find_bosh)"

name_args=()
if [ -n "${TEST_ONLY_PYTHON_STANDIN:-}" ]; then
  [ "$RELEASE_DIR" != "$SRC" ] || { say "TEST_ONLY_PYTHON_STANDIN needs RELEASE_DIR: the stand-in never goes into bosh/"; exit 1; }
  name_args=(--name log-shipper-test-standin)
elif [ ! -e "$RELEASE_DIR/packages/python-3.11/spec.lock" ] && [ ! -e "$RELEASE_DIR/packages/python-3.11/spec" ]; then
  say "packages/python-3.11 is not vendored yet: run step 1 of bosh/README.md ('bosh vendor-package python-3.11 ...') first"
  exit 1
fi

# 1. Wheels: the agent (pure Python, built from this tree) plus every dependency as a
#    binary wheel for the target platform, never an sdist that would need a compiler.
#    Dependencies come from WHEEL_CACHE when it has them all, from the index otherwise.
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
if [ -n "${WHEELS_DIR:-}" ]; then
  cp "$WHEELS_DIR"/*.whl "$stage/"
else
  "$PYTHON" -m pip wheel -q --no-deps --wheel-dir "$stage" "$ROOT" >&2
  agent_wheel="$(ls "$stage"/log_shipper-*.whl)"
  download=("$PYTHON" -m pip download -q --disable-pip-version-check --only-binary=:all:
    --python-version "$PY_VERSION" --implementation cp --abi "$PY_ABI" --abi abi3 --abi none)
  for p in "${PLATFORMS[@]}"; do download+=(--platform "$p"); done
  mkdir -p "$WHEEL_CACHE"
  if ! "${download[@]}" --no-index --find-links "$WHEEL_CACHE" --dest "$stage" "$agent_wheel" 2>/dev/null; then
    say "fetching dependency wheels into $WHEEL_CACHE"
    "${download[@]}" --find-links "$WHEEL_CACHE" --dest "$WHEEL_CACHE" "$agent_wheel" >&2
    rm -f "$WHEEL_CACHE"/log_shipper-*.whl  # the agent is rebuilt from the tree every time
    "${download[@]}" --no-index --find-links "$WHEEL_CACHE" --dest "$stage" "$agent_wheel" >&2
  fi
fi
ls "$stage"/log_shipper-*.whl >/dev/null 2>&1 || { say "no log_shipper wheel in the staged wheels"; exit 1; }

# 2. The release directory. src/ is where create-release looks for package files besides
#    blobs/; this release has none there, and git keeps no empty directory.
if [ "$RELEASE_DIR" != "$SRC" ]; then
  mkdir -p "$RELEASE_DIR"
  # -L: the copy holds the jobs themselves rather than a link that would dangle.
  (cd "$SRC" && tar --exclude=./blobs --exclude=./dev_releases --exclude=./.dev_builds -chf - .) | tar -C "$RELEASE_DIR" -xf -
else
  ln -sfn ../jobs "$SRC/jobs"
fi
mkdir -p "$RELEASE_DIR/src"
if [ -n "${TEST_ONLY_PYTHON_STANDIN:-}" ]; then
  rm -rf "$RELEASE_DIR/packages/python-3.11"
  cp -r "$TEST_ONLY_PYTHON_STANDIN" "$RELEASE_DIR/packages/python-3.11"
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

# 4. The tarball.
mkdir -p "$(dirname "$TARBALL")"
"$bosh" create-release --dir "$RELEASE_DIR" --force "${name_args[@]}" --tarball "$TARBALL" >&2
say "release tarball: $TARBALL"
