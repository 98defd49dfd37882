#!/bin/sh
# The official postgres image's first start, the parts the chart uses: when $PGDATA holds no cluster,
# initdb with POSTGRES_USER (superuser) and POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE), create
# POSTGRES_DB, accept password (scram-sha-256) connections from anywhere; then exec the command.
set -eu

if [ "${1#-}" != "$1" ]; then
    set -- postgres "$@"  # `-c x=y ...` alone: options of postgres, as in the official image
fi

if [ "$(id -u)" = 0 ] && [ "$1" = postgres ]; then
    # Started as root (docker run, ctr run): own the data and socket directories (a runtime's /run tmpfs
    # may hide the image's), then run again as postgres.
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
        POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE")
    fi
    : "${POSTGRES_PASSWORD:?must be set (or POSTGRES_PASSWORD_FILE)}"
    user=${POSTGRES_USER:-postgres}
    database=${POSTGRES_DB:-$user}
    mkdir -p "$PGDATA"
    chmod 700 "$PGDATA"
    # The password through a pipe: never on a command line, never in a file.
    printf '%s\n' "$POSTGRES_PASSWORD" | initdb --username="$user" --pwfile=/dev/stdin \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8
    printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
    printf "listen_addresses = '*'\n" >> "$PGDATA/postgresql.conf"
    if [ "$database" != postgres ]; then
        # single-user mode: no server, no socket needed to create the database
        quoted=$(printf '%s' "$database" | sed 's/"/""/g')
        printf 'CREATE DATABASE "%s";\n' "$quoted" | postgres --single -D "$PGDATA" postgres >/dev/null
    fi
    echo "initialized $PGDATA: user $user, database $database"
fi

exec "$@"
