#!/usr/bin/env bash
# Entrypoint of the rabbitmq stand-in: the official image's contract.
#   - as root: give /var/lib/rabbitmq (a fresh volume is root's) to
#     rabbitmq (999), make the node's Erlang cookie once, then run again as
#     rabbitmq;
#   - RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS become the user the
#     first boot creates (an Erlang term file, so any password is quoted
#     right);
#   - exec rabbitmq-server (node RABBITMQ_NODENAME, data below
#     /var/lib/rabbitmq/mnesia).
set -Eeuo pipefail

if [ "$1" != 'rabbitmq-server' ]; then
    exec "$@"
fi

cookie=/var/lib/rabbitmq/.erlang.cookie
if [ "$(id -u)" = '0' ]; then
    mkdir -p /var/lib/rabbitmq/mnesia
    find /var/lib/rabbitmq \! -user rabbitmq -exec chown rabbitmq:rabbitmq '{}' +
    if [ ! -s "$cookie" ]; then
        (umask 077 && head -c 30 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$cookie")
        chown rabbitmq:rabbitmq "$cookie"
        chmod 400 "$cookie"
    fi
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "$BASH_SOURCE" "$@"
fi

# An Erlang binary literal: backslashes and double quotes escaped.
erlang_binary() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '<<"%s"/utf8>>' "$s"
}

if [ -n "${RABBITMQ_DEFAULT_USER:-}" ] || [ -n "${RABBITMQ_DEFAULT_PASS:-}" ]; then
    # Outside the data volume: the password is needed for this boot only.
    advanced="$(mktemp -d)/advanced.config"
    (
        umask 077
        printf '[{rabbit, [{default_user, %s}, {default_pass, %s}]}].\n' \
            "$(erlang_binary "${RABBITMQ_DEFAULT_USER:-guest}")" \
            "$(erlang_binary "${RABBITMQ_DEFAULT_PASS:-guest}")" >"$advanced"
    )
    export RABBITMQ_ADVANCED_CONFIG_FILE="$advanced"
fi

exec "$@"
