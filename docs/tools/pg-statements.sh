#!/bin/bash
# Database time per event of each statement hookgate runs on PostgreSQL,
# over one whole `hookgate bench --storage postgres://…` run, from
# pg_stat_statements (docs/benchmarks.md, "A lean store statement for
# PostgreSQL", uses this). On this box's shared server the whole bench's
# figures move with checkpoints; a statement's time per row, read beside
# the statements a change did not touch, moves much less.
#
#   docs/tools/pg-statements.sh BINARY [BINARY…]
#
# Each binary runs the bench once, in turn, on the server at $PGURL
# (postgres://postgres@127.0.0.1:5432/postgres by default). The script
# preloads pg_stat_statements (ALTER SYSTEM and a restart), and on exit
# removes it and restarts the server again, so the server is left as it was.
# Run it only on a server of your own, with nothing else using it.
set -euo pipefail
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
CLUSTER=${CLUSTER:-$(ls /etc/postgresql) main}
restart() { pg_ctlcluster --skip-systemctl-redirect $CLUSTER restart; sleep 2; }
cleanup() {
    psql "$PGURL" -qAtc "DROP EXTENSION IF EXISTS pg_stat_statements" || true
    psql "$PGURL" -qAtc "ALTER SYSTEM RESET shared_preload_libraries" || true
    restart
}
trap cleanup EXIT
psql "$PGURL" -qAtc "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"
restart
psql "$PGURL" -qAtc "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
for BIN in "$@"; do
    psql "$PGURL" -qAtc "SELECT pg_stat_statements_reset()" > /dev/null
    "$BIN" bench --duration 10s --storage "$PGURL" --json > /tmp/pg-statements.json 2> /dev/null
    echo "== $BIN"
    python3 -c "import json; r = json.load(open('/tmp/pg-statements.json')); print('  events/s by phase:',
        {p['name']: round(p['events_per_s']) for p in r['phases']}, 'drained', round(r['drain_per_s']))"
    echo "  total ms | calls | rows | us per row | statement"
    psql "$PGURL" -F' | ' -Atc "SELECT round(total_exec_time::numeric), calls, rows,
        round((total_exec_time / NULLIF(rows, 0) * 1000)::numeric, 1),
        left(regexp_replace(query, '\s+', ' ', 'g'), 90)
        FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 10" | sed 's/^/  /'
done
