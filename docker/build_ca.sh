# shellcheck shell=bash
# Sourced by docker/Dockerfile's network steps (rustup, scripts/setup*.sh, the colcon build), for builds
# behind a TLS-intercepting proxy: `scripts/build_image.sh --ca-cert FILE` hands the proxy's CA(s) to the
# build as the build secret `wam_ca`, which podman mounts at /run/secrets/wam_ca for the one RUN that asks
# for it (`RUN --mount=type=secret,id=wam_ca ...`) and writes into no layer. Here Debian's trust store plus
# those CAs go into a temporary bundle that curl, rustup, pip, cargo and git use for the rest of that RUN;
# it is deleted when the RUN's shell exits. Without the secret this does nothing: the build is the plain one.
if [ -s /run/secrets/wam_ca ]; then
    wam_ca_bundle="$(mktemp /tmp/wam_ca.XXXXXX)"
    trap 'rm -f "$wam_ca_bundle"' EXIT
    cat /etc/ssl/certs/ca-certificates.crt /run/secrets/wam_ca >"$wam_ca_bundle"
    export SSL_CERT_FILE="$wam_ca_bundle" CURL_CA_BUNDLE="$wam_ca_bundle" PIP_CERT="$wam_ca_bundle" \
        REQUESTS_CA_BUNDLE="$wam_ca_bundle" CARGO_HTTP_CAINFO="$wam_ca_bundle" GIT_SSL_CAINFO="$wam_ca_bundle"
    echo "build_ca: extra CA certificates from the build secret wam_ca in use for this step" >&2
fi
