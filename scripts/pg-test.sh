#!/usr/bin/env bash
# A throwaway PostgreSQL for the tests, from Debian's packages (installed when missing):
#   url=$(scripts/pg-test.sh start)   # prints postgres://deskbot@127.0.0.1:PORT/postgres?sslmode=disable
#   DESKBOT_TEST_PG_URL=$url cargo test
#   scripts/pg-test.sh stop "$url"
# Each server has its own port and directory (/tmp/deskbot-pg-PORT), without fsync, so several
# can run at once. initdb refuses to run as root, so as root the server runs as `postgres`.
# The server also speaks TLS, with a certificate for 127.0.0.1 from a CA made for it
# (/tmp/deskbot-pg-PORT/ca.pem): the TLS test connects with sslmode=require&sslrootcert=that file.
set -euo pipefail
as_pg=()
if [ "$(id -u)" -eq 0 ]; then as_pg=(runuser -u postgres --); fi
bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
case "${1:-}" in
start)
  if [ -z "$(bin)" ] || ! command -v openssl >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >&2
    $sudo apt-get install -y -qq postgresql openssl >&2
  fi
  b=$(bin)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  dir=/tmp/deskbot-pg-$port
  rm -rf "$dir"
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir"; fi
  "${as_pg[@]}" "$b/initdb" -D "$dir/data" -A trust -U deskbot --no-sync >"$dir/initdb.log"
  (
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
      -subj "/CN=deskbot test CA" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.crt \
      -days 2 -extfile server.ext 2>/dev/null
    chmod 600 server.key
    if [ "$(id -u)" -eq 0 ]; then chown postgres server.key server.crt; fi
  )
  # Tests need no durability; PG_DURABLE=1 (the benchmarks) keeps PostgreSQL's defaults, so a
  # commit waits for its fsync as SQLite's synchronous=FULL does.
  fast="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  [ "${PG_DURABLE:-0}" = 1 ] && fast=""
  "${as_pg[@]}" "$b/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir $fast -c max_connections=500 -c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key" \
    start >&2
  echo "postgres://deskbot@127.0.0.1:$port/postgres?sslmode=disable"
  ;;
stop)
  url=${2:?usage: scripts/pg-test.sh stop URL}
  port=${url##*:}; port=${port%%/*}
  dir=/tmp/deskbot-pg-$port
  b=$(bin)
  if [ -n "$b" ] && [ -f "$dir/data/postmaster.pid" ]; then "${as_pg[@]}" "$b/pg_ctl" -D "$dir/data" -m fast stop >&2; fi
  rm -rf "$dir"
  ;;
*)
  echo "usage: scripts/pg-test.sh start | stop URL" >&2
  exit 2
  ;;
esac
