#!/usr/bin/env bash
# Builds the SeaweedFS server (the S3 gateway the cluster tests run on
# loopback) once per machine and prints the binary's path on stdout; build
# output goes to stderr. The binary is cached outside the checkout, keyed by
# the module version, so later runs reuse it. SeaweedFS's go.mod has replace
# directives, so `go install` refuses it: download the module from the
# module proxy, copy it somewhere writable and build ./weed there. Needs only
# Go and the module proxy. A build takes about 5 minutes on 2 cores.
set -euo pipefail
version="${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
module=github.com/seaweedfs/seaweedfs
cache="${ARBOR_TOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/arbor-tools}"
bin="$cache/seaweedfs-$version/weed"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
mkdir -p "$cache"

# One build at a time: parallel test packages may all ask for the binary.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache/seaweedfs.lock"
  flock 9
  if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
fi

work=$(mktemp -d "$cache/build.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

# Outside any module, so the caller's go.mod and go.sum are not touched, and
# without the caller's GOFLAGS (e.g. -mod=vendor would not apply here).
mkdir "$work/dl"
if ! json=$(cd "$work/dl" && GOFLAGS= GO111MODULE=on go mod download -json "$module@$version"); then
  echo "seaweedfs: go mod download $module@$version failed:" >&2
  echo "$json" >&2
  exit 1
fi
dir=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
if [ -z "$dir" ] || [ ! -d "$dir" ]; then
  echo "seaweedfs: no module directory in go mod download output:" >&2
  echo "$json" >&2
  exit 1
fi

echo "seaweedfs: building $module@$version into $bin" >&2
start=$(date +%s)
mkdir "$work/src"
cp -r "$dir/." "$work/src/"
chmod -R u+w "$work/src"
(cd "$work/src" && GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o "$work/weed" ./weed) >&2
mkdir -p "$(dirname "$bin")"
mv "$work/weed" "$bin"
echo "seaweedfs: built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
