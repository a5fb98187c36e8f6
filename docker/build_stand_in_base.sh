#!/usr/bin/env bash
# Builds a stand-in for the official python:3.11-slim base image, for machines that cannot pull
# from Docker Hub (air-gapped CI, registry mirrors down). Debian bookworm ships Python 3.11, so a
# debootstrapped bookworm root with python3 + venv + headers behaves like the official base for
# our Dockerfiles. Usage: docker/build_stand_in_base.sh [IMAGE_NAME]   (needs root + debootstrap)
set -euo pipefail

image="${1:-byoc-stand-in/python:3.11-slim}"
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "stand-in base $image already exists"
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

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
echo "debootstrapping bookworm from $mirror into $root"
debootstrap --variant=minbase \
  --include=python3,python3-venv,python3-pip,python3-dev,ca-certificates \
  bookworm "$root" "$mirror" >/dev/null
# Make apt inside the image use the same mirror (debootstrap writes it to sources.list).
tar -C "$root" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$image" >/dev/null
echo "built stand-in base $image"
