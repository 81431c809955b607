#!/bin/bash
# PostgreSQL's CPU per event stored during one phase of `hookgate bench`
# (ingest alone by default): every `postgres` process's utime + stime over
# 5 s of the phase, divided by the events the run's schema took meanwhile
# (`n_tup_ins` of its `events`). docs/benchmarks.md, "A lean store statement
# for PostgreSQL", uses this.
#
#   docs/tools/pg-cost.sh BINARY LABEL ["ingest alone" | "ingest while delivering"]
#
# Alternate the builds you compare: checkpoints of a shared server fall in
# some windows and not others. Make sure nothing else uses the server or the box.
set -euo pipefail
BIN=$1; LABEL=$2; PHASE=${3:-ingest alone}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
WORK=${WORK:-/tmp/pg-cost}
mkdir -p "$WORK"
"$BIN" bench --duration 10s --storage "$PGURL" --json > "$WORK/$LABEL.json" 2> "$WORK/$LABEL.err" &
BENCH=$!
until grep -q "$PHASE" "$WORK/$LABEL.err" 2>/dev/null; do
    kill -0 $BENCH 2>/dev/null || { echo "the bench ended early: $WORK/$LABEL.err"; exit 1; }
    sleep 0.2
done
sleep 2
# The bench makes its schema under its own pid.
SCHEMA=hookgate_bench_$BENCH
snapshot() {
    python3 - "$SCHEMA" "$PGURL" <<'PY'
import os, subprocess, sys
schema, url = sys.argv[1:3]
ticks = 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if open(f"/proc/{pid}/comm").read().strip() != "postgres":
            continue
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    except OSError:
        pass
query = f"SELECT n_tup_ins FROM pg_stat_user_tables WHERE schemaname = '{schema}' AND relname = 'events'"
stored = subprocess.run(["psql", url, "-Atc", query], capture_output=True, text=True).stdout.strip()
print(ticks, stored or 0)
PY
}
A=$(snapshot); sleep 5; B=$(snapshot)
wait $BENCH
python3 - "$A" "$B" "$WORK/$LABEL.json" "$LABEL" <<'PY'
import json, sys
(t0, n0), (t1, n1) = (map(int, x.split()) for x in sys.argv[1:3])
report = json.load(open(sys.argv[3]))
n = max(n1 - n0, 1)
print(f"{sys.argv[4]}: postgres {(t1 - t0) * 10_000 / n:.1f} us CPU per event stored ({n} events in the window)")
print("  phases (events/s):", {p["name"]: round(p["events_per_s"]) for p in report["phases"]},
      "sustained", round(report["sustained_per_s"]), "drained", round(report["drain_per_s"]))
PY
