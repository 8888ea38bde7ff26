#!/usr/bin/env bash
# Builds docker/Dockerfile with podman, without an image registry (docker/README.md):
#   1. a Debian 12 base: debootstrap --variant=minbase bookworm (about 2 min) + podman import;
#   2. podman build --isolation=chroot --network=host -f docker/Dockerfile -t wam_policy:gpu .
# Not part of `make test`. Needs root (debootstrap), podman/buildah/debootstrap (installed from Debian
# when missing), and network to Debian, PyPI, crates.io and static.rust-lang.org during the build.
#
#     scripts/build_image.sh [--base-only] [--trt-tar FILE] [--tag NAME] [--ca-cert FILE]...
# --ca-cert FILE: a PEM CA certificate (or a bundle of them) the build's downloads must trust, for builds
#   behind a TLS-intercepting (corporate) proxy; repeatable. The files go to the build as the build secret
#   wam_ca (podman build --secret): docker/build_ca.sh adds them to Debian's store for the steps that
#   download, and they end up in no layer of the image. Without it the build does not change.
# Environment: WAM_BASE_DIR (default /var/tmp/wam-bookworm-rootfs), DEBIAN_MIRROR.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base_dir="${WAM_BASE_DIR:-/var/tmp/wam-bookworm-rootfs}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
base_tag="localhost/wam-bookworm-base:latest"
tag="wam_policy:gpu"
trt_tar=""
base_only=0
ca_certs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --base-only) base_only=1 ;;
        --trt-tar) trt_tar="$2"; shift ;;
        --tag) tag="$2"; shift ;;
        --ca-cert) ca_certs+=("$2"); shift ;;
        *) echo "build_image: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
say() { printf '[build_image] %s\n' "$*"; }
t0=$SECONDS

missing=()
for c in podman buildah debootstrap; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
if [ ${#missing[@]} -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! podman image exists "$base_tag"; then
    if [ ! -x "$base_dir/bin/bash" ]; then
        say "debootstrap --variant=minbase bookworm $base_dir"
        rm -rf "$base_dir"
        debootstrap --variant=minbase bookworm "$base_dir" "$mirror" >/dev/null
    fi
    say "podman import -> $base_tag"
    tar -C "$base_dir" -c . | podman import - "$base_tag" >/dev/null
fi
[ "$base_only" = 1 ] && { say "base ready in $((SECONDS - t0)) s"; exit 0; }

args=()
if [ -n "$trt_tar" ]; then
    cp "$trt_tar" "$repo/docker/"
    args+=(--build-arg "TRT_TAR=$(basename "$trt_tar")")
fi
if [ ${#ca_certs[@]} -gt 0 ]; then
    ca_bundle="$(mktemp /tmp/wam_ca.XXXXXX)"
    trap 'rm -f "$ca_bundle"' EXIT
    for f in "${ca_certs[@]}"; do
        grep -q -- '-----BEGIN CERTIFICATE-----' "$f" 2>/dev/null \
            || { echo "build_image: --ca-cert $f: not a PEM certificate file" >&2; exit 2; }
        cat "$f" >>"$ca_bundle"
        echo >>"$ca_bundle"
    done
    say "extra CA certificates for the build (secret wam_ca): ${ca_certs[*]}"
    args+=(--secret "id=wam_ca,src=$ca_bundle")
fi
say "podman build --isolation=chroot -t $tag (log: $repo/out/build_image.log)"
mkdir -p "$repo/out"
podman build --isolation=chroot --network=host --format docker --build-arg "BASE=$base_tag" "${args[@]}" \
    -f "$repo/docker/Dockerfile" -t "$tag" "$repo" 2>&1 | tee "$repo/out/build_image.log"
say "built $tag in $((SECONDS - t0)) s"
