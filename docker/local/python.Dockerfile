# Stand-in for the official python image (docker/Dockerfile's PYTHON_IMAGE) for the local cluster, which
# can pull nothing: the local Debian base (mmdebstrap) + its python3 (bookworm: 3.11). Built by
# k8s-tests/localcluster/images.py; the build context holds only ca-certificates/ (the host's extra CAs).
ARG BASE
FROM ${BASE}
# The host's CAs: pip/uv in later builds verify TLS through this machine's egress proxy.
COPY ca-certificates/ /usr/local/share/ca-certificates/
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python-is-python3 \
    && rm -rf /var/lib/apt/lists/* \
    && update-ca-certificates
# UV_NATIVE_TLS: uv trusts the system store (with the CAs above) instead of its bundled roots.
ENV LANG=C.UTF-8 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    UV_NATIVE_TLS=1
CMD ["python3"]
