#!/usr/bin/env bash
# Unpacks, into DIR, a Docker that builds and pushes as Docker Desktop and Docker Engine 29 do:
# BuildKit through buildx, with the containerd image store, which attach a provenance
# attestation to every build by default. Debian bookworm's Docker (20.10, classic builder and
# store) never does; Debian trixie's packages do: docker.io 26.1, containerd 1.7 and
# docker-buildx 0.13. Their binaries need nothing newer than bookworm's libc, but trixie's runc
# does: bookworm's runc runs the containers (the tests build FROM scratch and need none).
#   tests/container/buildkit_docker.sh DIR      (apt-get: root, or a user who may download)
# Afterwards DIR/bin has dockerd, containerd and docker, and DIR/config/cli-plugins buildx.
set -euo pipefail

dir="${1:?usage: buildkit_docker.sh DIR}"
[ -x "$dir/bin/dockerd" ] && exit 0
mirror="${DEBIAN_MIRROR:-$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
  | grep -v security | sed -n 1p)}"
mirror="${mirror:-http://deb.debian.org/debian}"
apt_dir="$dir/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$dir/unpacked" \
  "$dir/bin" "$dir/config/cli-plugins"
echo "deb $mirror trixie main" > "$apt_dir/sources.list"
apt=(-o Dir::Etc::sourcelist="$apt_dir/sources.list" -o Dir::Etc::sourceparts=/dev/null
     -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache"
     -o APT::Sandbox::User=root -o Debug::NoLocking=1)
apt-get "${apt[@]}" update -qq
(cd "$apt_dir" && apt-get "${apt[@]}" download -qq docker.io docker-cli containerd docker-buildx)
for deb in "$apt_dir"/*.deb; do dpkg-deb -x "$deb" "$dir/unpacked"; done
ln -sf "$dir/unpacked/usr/sbin/dockerd" "$dir/unpacked/usr/bin/containerd" \
  "$dir/unpacked/usr/bin/containerd-shim-runc-v2" "$dir/unpacked/usr/bin/docker" "$dir/bin/"
ln -sf "$dir/unpacked/usr/libexec/docker/cli-plugins/docker-buildx" "$dir/config/cli-plugins/"
rm -rf "$apt_dir"
