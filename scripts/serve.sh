#!/usr/bin/env bash
# make serve: runs the Go host over ./var with a demo server, and prints the
# token and curl commands to try it once the host is listening. Builds
# nothing (make does); the demo files are created only if missing.
#
# Where it listens: $LISTEN (host:port) or 127.0.0.1:$PORT if either is set;
# otherwise 127.0.0.1:8080, or a free port on 127.0.0.1 when 8080 is taken.
# The commands printed name the address actually used. $VAR_DIR (default
# ./var) holds the demo volumes and backups. Ctrl-C (SIGINT) or SIGTERM
# stops the host cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

# Where make put the host: under $CARGO_TARGET_DIR if set, else target/.
HOST_BIN=${CARGO_TARGET_DIR:-target}/go-host
SERVER=8f0c3a52-6d1e-4b7a-9c2f-1e5d7a3b9c40
VAR_DIR=${VAR_DIR:-$PWD/var}
DATA=$VAR_DIR/volumes
BACKUPS=$VAR_DIR/backups
ROOT=$DATA/$SERVER
START_WAIT_S=20

if [ ! -x "$HOST_BIN" ]; then
    echo "serve.sh: $HOST_BIN is missing; run: make serve" >&2
    exit 1
fi

# port_free PORT: nothing is bound to 127.0.0.1:PORT.
port_free() {
    python3 -c 'import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

if [ -n "${LISTEN:-}" ]; then
    ADDR=$LISTEN
elif [ -n "${PORT:-}" ]; then
    ADDR=127.0.0.1:$PORT
elif port_free 8080; then
    ADDR=127.0.0.1:8080
else
    free=$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
    echo "serve.sh: port 8080 is taken; using $free instead" >&2
    ADDR=127.0.0.1:$free
fi
LISTEN_PORT=${ADDR##*:}
LISTEN_HOST=${ADDR%:*}
LISTEN_HOST=${LISTEN_HOST#[}
LISTEN_HOST=${LISTEN_HOST%]}
case "$LISTEN_HOST" in
    "" | 0.0.0.0 | ::) CONNECT_HOST=127.0.0.1 ;;
    *) CONNECT_HOST=$LISTEN_HOST ;;
esac
case "$CONNECT_HOST" in
    *:*) URL_ADDR="[$CONNECT_HOST]:$LISTEN_PORT" ;;
    *) URL_ADDR="$CONNECT_HOST:$LISTEN_PORT" ;;
esac

mkdir -p "$BACKUPS"
chmod 0700 "$BACKUPS"
if [ ! -d "$ROOT" ]; then
    mkdir -p "$ROOT/world/region" "$ROOT/plugins/empty"
    printf 'motd=wings-backup demo\nmax-players=10\nserver-port=25565\n' >"$ROOT/server.properties"
    printf 'demo level data\n' >"$ROOT/world/level.dat"
    head -c 65536 /dev/urandom >"$ROOT/world/region/r.0.0.mca"
    ln -s server.properties "$ROOT/config.link"
fi

TOKEN=${WINGS_TOKEN:-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')}
BACKUP=$(cat /proc/sys/kernel/random/uuid)

# The host runs in its own process group: a Ctrl-C reaches this script only,
# which hands the host one signal and waits for it to stop cleanly. Its log
# goes to the terminal and, through tee (deaf to Ctrl-C so that the last
# lines are not lost), to a file where its "listening" line is looked for.
HOST_LOG=$(mktemp "${TMPDIR:-/tmp}/wings-backup-serve.XXXXXX")
trap 'rm -f "$HOST_LOG"' EXIT
set -m
WINGS_TOKEN=$TOKEN "$HOST_BIN" --listen "$ADDR" --data-dir "$DATA" --backup-dir "$BACKUPS" \
    2> >(trap '' INT TERM; exec tee "$HOST_LOG" >&2) &
host=$!
set +m
# From here on no command may end the script before the host has exited
# (a Ctrl-C also kills a foreground sleep, which set -e would take for a
# failure).
set +e
stopping=0
forward() {
    stopping=1
    kill -s "$1" "$host" 2>/dev/null
}
trap 'forward INT' INT
trap 'forward TERM' TERM
# wait_host: waits until the host has exited; its status in $code. A
# trapped signal makes wait return early (status > 128): wait again, for
# the host's own status (bash keeps it once the host has exited).
wait_host() {
    for _ in 1 2 3; do
        code=0
        wait "$host" || code=$?
        [ "$code" -gt 128 ] && [ "$code" != 127 ] || break
    done
}

# Wait (bounded) until the host says it listens (its socket is bound and
# accepting by then), or has exited.
listening=0
for _ in $(seq $((START_WAIT_S * 10))); do
    if [ "$stopping" = 1 ] || ! kill -0 "$host" 2>/dev/null; then
        break
    fi
    if grep -q ' msg=listening ' "$HOST_LOG"; then
        listening=1
        break
    fi
    sleep 0.1
done
if [ "$listening" != 1 ]; then
    if [ "$stopping" = 1 ]; then
        wait_host
        exit "$code"
    fi
    if kill -0 "$host" 2>/dev/null; then
        echo "serve.sh: the host did not listen on $ADDR within ${START_WAIT_S}s" >&2
        forward TERM
    else
        echo "serve.sh: the host exited before listening on $ADDR (see its messages above)" >&2
    fi
    wait_host
    exit $((code == 0 ? 1 : code))
fi

# read and printf are builtins: a Ctrl-C while printing stops nothing halfway.
IFS= read -r -d '' MSG <<MSG
Demo server $SERVER in $ROOT
Archives in $BACKUPS
Listening on http://$URL_ADDR
Node token: $TOKEN

In another shell:

export TOKEN=$TOKEN SERVER=$SERVER BACKUP=$BACKUP ADDR=$URL_ADDR

# create a backup (202, runs in the background; archive: $BACKUPS/\$BACKUP.tar.gz)
curl -i -X POST "http://\$ADDR/api/servers/\$SERVER/backup" \\
  -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
  -d '{"adapter":"wings","uuid":"'"\$BACKUP"'","ignore":""}'

# wait (at most 10 s) until it has finished: GET .../backup/\$BACKUP gives its state
for i in \$(seq 50); do curl -s "http://\$ADDR/api/servers/\$SERVER/backup/\$BACKUP" \\
  -H "Authorization: Bearer \$TOKEN" | grep -q '"state":"succeeded"' && break; sleep 0.2; done

# restore it, replacing the server's files (204)
curl -i -X POST "http://\$ADDR/api/servers/\$SERVER/backup/\$BACKUP/restore" \\
  -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
  -d '{"adapter":"wings","truncate_directory":true}'

# delete it (204, then 404)
curl -i -X DELETE "http://\$ADDR/api/servers/\$SERVER/backup/\$BACKUP" \\
  -H "Authorization: Bearer \$TOKEN"

Ctrl-C stops the host.
MSG
if [ "$stopping" != 1 ]; then
    printf '%s' "$MSG"
fi

wait_host
exit "$code"
