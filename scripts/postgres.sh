#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback, for the tests of the shared sweep history.
#   scripts/postgres.sh start   installs Debian's `postgresql` when absent, initialises a cluster in a
#                               temporary directory, starts it on 127.0.0.1 on a free port with password
#                               (SCRAM) authentication and TLS (a self-signed certificate), creates the
#                               database `assay_test`, and prints
#                               shell assignments: ASSAY_TEST_POSTGRES=<url> ASSAY_PG_DIR=<dir>
#   scripts/postgres.sh stop DIR  stops that server and removes its directory.
# Runs as any user; as root the server runs as the `postgres` account (PostgreSQL refuses root).
set -euo pipefail
cmd="${1:-start}"

as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ "$cmd" = stop ]; then
  dir="${2:?usage: scripts/postgres.sh stop DIR}"
  bin="$(cat "$dir/bin" 2>/dev/null || true)"
  [ -n "$bin" ] && as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  exit 0
fi
[ "$cmd" = start ] || { echo "usage: scripts/postgres.sh start | stop DIR" >&2; exit 4; }

bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "postgres: installing Debian's postgresql" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq postgresql postgresql-client >/dev/null
  bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
fi

dir="$(mktemp -d "${TMPDIR:-/tmp}/assay-pg.XXXXXX")"
# A failure from here on stops whatever started and removes the directory.
trap 'as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true; rm -rf "$dir"' ERR
echo "$bin" > "$dir/bin"
echo assay > "$dir/pwfile"
[ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$dir"
chmod 700 "$dir"

# A self-signed certificate, so the tests also connect over TLS (openssl comes with postgresql's ssl-cert).
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" \
  -keyout "$dir/server.key" -out "$dir/server.crt" >/dev/null 2>&1
chmod 600 "$dir/server.key"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir/server.key" "$dir/server.crt"

port=55432
while (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done

as_owner "$bin/initdb" -D "$dir/data" -U assay --pwfile="$dir/pwfile" -A scram-sha-256 -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; false; }
as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $port -k '$dir' -c fsync=off -c max_connections=200 -c ssl=on -c ssl_cert_file='$dir/server.crt' -c ssl_key_file='$dir/server.key'" start >/dev/null \
  || { cat "$dir/server.log" >&2; false; }
PGPASSWORD=assay "$bin/psql" -q -h 127.0.0.1 -p "$port" -U assay -d postgres -c "CREATE DATABASE assay_test" >/dev/null
echo "postgres: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($dir)" >&2
trap - ERR
printf 'ASSAY_TEST_POSTGRES=%q ASSAY_PG_DIR=%q\n' "postgres://assay:assay@127.0.0.1:$port/assay_test" "$dir"
