# Stand-in for the official redis image for the local cluster, which can pull nothing: Debian's
# redis-server on the local Debian base. The chart's contract: `sh`, `redis-server` and `redis-cli` on
# PATH, user and group 999 (runAsUser), /data writable by them; it runs with a read-only root and its
# own /data and /tmp mounts. Built by k8s-tests/localcluster/images.py (empty build context).
ARG BASE
FROM ${BASE}
# Debian's redis of the suite (bookworm: 7.0): checked, so a suite change cannot silently change it.
ARG REDIS_VERSION
# The user first, with the official image's ids: the package's postinst then keeps them.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 redis \
    && useradd --system --uid 999 --gid 999 --home-dir /data --no-create-home --shell /usr/sbin/nologin redis \
    && apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && case "$(redis-server --version)" in \
         *"v=${REDIS_VERSION}."*) ;; \
         *) echo "expected redis ${REDIS_VERSION}, got: $(redis-server --version)" >&2; exit 1 ;; \
       esac \
    && mkdir /data && chown redis:redis /data
WORKDIR /data
# Numeric, so that runAsNonRoot can verify it; there is no entrypoint dropping root as the official one does.
USER 999:999
EXPOSE 6379
CMD ["redis-server"]
