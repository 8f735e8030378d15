#!/usr/bin/env bash
# Entrypoint of the postgres stand-in: the official image's contract.
#   - make PGDATA (mode 700); as root also give it and the socket
#     directory to postgres (999), then run again as postgres (run as 999
#     from the start, as Pod Security "restricted" has it, it goes on);
#   - on an empty PGDATA: initdb with POSTGRES_USER (default postgres) and
#     POSTGRES_PASSWORD, trust on the local socket and loopback and
#     scram-sha-256 for every other host; start a server that listens on the
#     socket only (so nothing outside sees a half-initialised database),
#     create POSTGRES_DB, run /docker-entrypoint-initdb.d/*.sql and *.sh in
#     name order, stop it;
#   - exec postgres, which listens on every address (port 5432).
set -Eeuo pipefail

if [ "${1:0:1}" = '-' ]; then
    set -- postgres "$@"
fi

if [ "$1" != 'postgres' ]; then
    exec "$@"
fi

# As any user (the official image does the same): a data directory that
# an init container or fsGroup left group-writable is made 0700, which
# postgres insists on; as a non-owner the chmod fails and postgres says why.
mkdir -p "$PGDATA"
chmod 00700 "$PGDATA" 2>/dev/null || :
if [ "$(id -u)" = '0' ]; then
    chown -R postgres:postgres "$PGDATA"
    mkdir -p /var/run/postgresql
    chown postgres:postgres /var/run/postgresql
    chmod 03777 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
fi

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export POSTGRES_USER POSTGRES_DB

# Clients of the init-time server use the socket, whatever PGHOST the
# workload's environment names (e.g. the db Service).
init_psql() {
    PGHOST= PGHOSTADDR= psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" \
        --no-password --no-psqlrc "$@"
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres stand-in: the database is uninitialised and POSTGRES_PASSWORD is not set" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth=trust \
        ${POSTGRES_INITDB_ARGS:-} >/dev/null
    rm -f "$pwfile"
    printf '\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"

    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start
    if [ "$POSTGRES_DB" != 'postgres' ]; then
        # psql expands :"db" (quoted as an identifier) only in its input.
        printf 'CREATE DATABASE :"db";\n' |
            init_psql --dbname postgres --set db="$POSTGRES_DB"
    fi
    shopt -s nullglob
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh)
                echo "postgres stand-in: running $f"
                if [ -x "$f" ]; then "$f"; else . "$f"; fi
                ;;
            *.sql)
                echo "postgres stand-in: running $f"
                init_psql --dbname "$POSTGRES_DB" -f "$f"
                ;;
            *) echo "postgres stand-in: ignoring $f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo "postgres stand-in: init process complete; ready for start up"
fi

exec "$@"
