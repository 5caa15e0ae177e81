#!/bin/sh
# Build the idv image from Debian packages and the pinned wheels, with no image pulled:
#   1. a Debian bookworm root with python3 made by mmdebstrap (Debian's packages only),
#      imported as localhost/idv-debian-base:bookworm (podman import);
#   2. idv and every dependency as wheels, at the versions of constraints.txt;
#   3. deploy/Containerfile built on them (buildah bud --isolation chroot).
# Needs: apt-get install mmdebstrap podman buildah (Debian). Usage: deploy/build-image.sh [TAG]
set -eu
tag="${1:-localhost/idv:latest}"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python="${PYTHON:-$root/.venv/bin/python}"

if ! podman image exists localhost/idv-debian-base:bookworm; then
  mmdebstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates,libpq5,tzdata \
    bookworm "$work/base.tar"
  podman import "$work/base.tar" localhost/idv-debian-base:bookworm
  rm -f "$work/base.tar"
fi

mkdir -p "$work/context/wheels"
# Debian bookworm's python3 is 3.11(.2): the wheels are built for it by the project's 3.11,
# with what a dependency asks of a 3.11 before 3.11.3 only (redis: async-timeout) added.
"$python" -m pip wheel --quiet --no-cache-dir -c "$root/constraints.txt" \
  -w "$work/context/wheels" "$root" async-timeout
cp "$root/deploy/Containerfile" "$work/context/Containerfile"
buildah bud --isolation chroot --layers=false -t "$tag" "$work/context"
echo "$tag"
