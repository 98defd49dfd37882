# Stand-in for the official postgres image for the local cluster, which can pull nothing: Debian's
# postgresql-<major> on the local Debian base, with an entrypoint doing the official image's first-start
# initdb (postgres-entrypoint.sh). The chart's contract: POSTGRES_USER/_PASSWORD/_DB and PGDATA, user and
# group 999, `postgres`, `pg_isready` and `psql` on PATH, a read-only root with mounts on
# /var/lib/postgresql/data, /var/run/postgresql and /tmp. Built by k8s-tests/localcluster/images.py.
ARG BASE
FROM ${BASE}
ARG PG_MAJOR
# The user first, with the official image's ids (the package's postinst keeps them); no `main` cluster:
# the entrypoint makes the one in $PGDATA.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 postgres \
    && useradd --system --uid 999 --gid 999 --home-dir /var/lib/postgresql --no-create-home --shell /bin/sh postgres \
    && mkdir -p /etc/postgresql-common/createcluster.d \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/local-image.conf \
    && apt-get update \
    && apt-get install -y --no-install-recommends "postgresql-${PG_MAJOR}" \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
    && chmod 1777 /var/lib/postgresql/data \
    && chmod 2777 /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
# As the official image: fast shutdown on SIGINT, root by default (the entrypoint drops to postgres).
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
