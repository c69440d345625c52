#!/usr/bin/env bash
# The demo command: installs what is missing, builds, installs, starts a
# local server with the extension and shows it working.  The server is
# stopped at the end; KEEP=1 leaves it running (port 5499, socket in /tmp).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DIR=/tmp/replicator-demo
PORT=5499

ensure_packages
build_and_install
log "starting a server in $DIR on port $PORT"
start_pg "$DIR" "$PORT"
[ "${KEEP:-0}" = 1 ] || trap 'log "stopping the demo server"; stop_pg "$DIR"' EXIT

demo_sql() { as_pg psql -X -h /tmp -p "$PORT" -d postgres --echo-queries "$@"; }

log "the event source"
demo_sql -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION replicator;
-- the safe form: one event per array element; returns the ids it assigned
SELECT first_id, last_id FROM insert_events(ARRAY[
  '{"entityName": "Person", "entityId": "p1", "operation": "created"}',
  '{"entityName": "Person", "entityId": "p1", "operation": "updated", "propertyName": "name", "value": "Ada"}'
]::jsonb[]);
-- slate's form, as slate's clients send it
SELECT insert_events($$($1[1], $2, '{"entityName": "Person", "entityId": "p2", "operation": "created"}')$$);
SELECT id, ts, event FROM events ORDER BY id;
SQL

log "events are immutable and ids gapless"
demo_sql <<'SQL'
UPDATE events SET event = '{}' WHERE id = 1;
INSERT INTO events VALUES (99, now(), '{}');
BEGIN;
SELECT last_id FROM insert_events(ARRAY['{"rolled": "back"}']::jsonb[]);
ROLLBACK;
SELECT last_id FROM insert_events(ARRAY['{"after": "rollback"}']::jsonb[]);
SELECT count(*) AS events, max(id) AS max_id FROM events;
SQL

log "listeners hear of every event on channel eventsinsert"
demo_sql <<'SQL'
LISTEN eventsinsert;
SELECT last_id FROM insert_events(ARRAY['{"entityName": "Person", "entityId": "p3", "operation": "created"}']::jsonb[]);
SQL
[ "${KEEP:-0}" = 1 ] && log "server left running: psql -h /tmp -p $PORT postgres; stop with: runuser -u $PG_USER -- $PG_BINDIR/pg_ctl -D $DIR stop"
exit 0
