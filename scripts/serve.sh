#!/usr/bin/env bash
# make serve: runs the Go host on 127.0.0.1:8080 over ./var with a demo
# server, and prints the token and curl commands to try it. Builds nothing
# (make does); the demo files are created only if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

HOST_BIN=target/go-host
SERVER=8f0c3a52-6d1e-4b7a-9c2f-1e5d7a3b9c40
DATA=$PWD/var/volumes
BACKUPS=$PWD/var/backups
ROOT=$DATA/$SERVER
LISTEN=127.0.0.1:8080

if [ ! -x "$HOST_BIN" ]; then
    echo "serve.sh: $HOST_BIN is missing; run: make serve" >&2
    exit 1
fi

mkdir -p "$BACKUPS"
if [ ! -d "$ROOT" ]; then
    mkdir -p "$ROOT/world/region" "$ROOT/plugins/empty"
    printf 'motd=wings-backup demo\nmax-players=10\nserver-port=25565\n' >"$ROOT/server.properties"
    printf 'demo level data\n' >"$ROOT/world/level.dat"
    head -c 65536 /dev/urandom >"$ROOT/world/region/r.0.0.mca"
    ln -s server.properties "$ROOT/config.link"
fi

TOKEN=${WINGS_TOKEN:-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')}
BACKUP=$(cat /proc/sys/kernel/random/uuid)

cat <<MSG
Demo server $SERVER in $ROOT
Archives in $BACKUPS
Node token: $TOKEN

In another shell:

export TOKEN=$TOKEN SERVER=$SERVER BACKUP=$BACKUP

# create a backup (202, runs in the background; archive: var/backups/\$BACKUP.tar.gz)
curl -i -X POST "http://$LISTEN/api/servers/\$SERVER/backup" \\
  -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
  -d '{"adapter":"wings","uuid":"'"\$BACKUP"'","ignore":""}'

# wait (at most 10 s) until the archive is there (run from this directory)
for i in \$(seq 50); do [ -f var/backups/\$BACKUP.tar.gz ] && break; sleep 0.2; done

# restore it, replacing the server's files (204)
curl -i -X POST "http://$LISTEN/api/servers/\$SERVER/backup/\$BACKUP/restore" \\
  -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
  -d '{"adapter":"wings","truncate_directory":true}'

# delete it (204, then 404)
curl -i -X DELETE "http://$LISTEN/api/servers/\$SERVER/backup/\$BACKUP" \\
  -H "Authorization: Bearer \$TOKEN"

MSG

export WINGS_TOKEN=$TOKEN
exec "$HOST_BIN" --listen "$LISTEN" --data-dir "$DATA" --backup-dir "$BACKUPS"
