#!/usr/bin/env bash
# Builds a stand-in for the official python:3.11-slim base image, for machines that cannot pull
# from Docker Hub (air-gapped CI, registry mirrors down). Debian bookworm ships Python 3.11, so a
# debootstrapped bookworm root with python3 + venv + headers behaves like the official base for
# our Dockerfiles.
#   docker/build_stand_in_base.sh [IMAGE_NAME] [ARCH]     (needs root + debootstrap)
# ARCH: amd64 or arm64 (default: this machine's). Another machine's architecture needs
# qemu-user-static and binfmt-support, which run debootstrap's second stage and, later, the
# image's RUN steps under emulation.
set -euo pipefail

image="${1:-byoc-stand-in/python:3.11-slim}"
arch="${2:-$(dpkg --print-architecture)}"
case "$arch" in amd64|arm64) ;; *) echo "ARCH $arch: amd64 or arm64" >&2; exit 1 ;; esac
if [ "$(docker image inspect -f '{{.Architecture}}' "$image" 2>/dev/null)" = "$arch" ]; then
  echo "stand-in base $image ($arch) already exists"
  exit 0
fi

# Use the same Debian mirror this machine's apt already uses (no host is named in the repo).
mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n 1 || true)
fi
if [ -z "$mirror" ]; then
  mirror=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -n 1 || true)
fi
[ -n "$mirror" ] || { echo "no Debian mirror found in apt sources; set DEBIAN_MIRROR" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
echo "debootstrapping bookworm ($arch) from $mirror into $root"
debootstrap --arch="$arch" --variant=minbase \
  --include=python3,python3-venv,python3-pip,python3-dev,ca-certificates \
  bookworm "$root" "$mirror" >/dev/null

# `docker import` labels every root amd64, whatever its binaries are (Docker 20.10 ignores its
# --platform): load the root instead as an image whose configuration says its architecture, in
# the format `docker save` writes, so that `docker build --platform` finds the right base.
tar -C "$root" -cf "$work/layer.tar" .
rm -rf "$root"
diff_id="sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
variant=""
[ "$arch" = arm64 ] && variant='"variant": "v8", '
cat > "$work/config.json" <<EOF
{"architecture": "$arch", ${variant}"os": "linux",
 "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "LANG=C.UTF-8"], "Cmd": ["python3"]},
 "rootfs": {"type": "layers", "diff_ids": ["$diff_id"]},
 "history": [{"created_by": "debootstrap bookworm (docker/build_stand_in_base.sh)"}]}
EOF
printf '[{"Config": "config.json", "RepoTags": ["%s"], "Layers": ["layer.tar"]}]\n' "$image" \
  > "$work/manifest.json"
tar -C "$work" -c manifest.json config.json layer.tar | docker load >/dev/null
echo "built stand-in base $image ($arch)"
