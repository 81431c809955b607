#!/bin/bash
# What the SQLite writer and each thread of `hookgate serve` pay per event
# during `hookgate bench`'s sustained phase ("ingest while delivering"),
# read from /proc over 5 s of it (docs/benchmarks.md, "Filing finished
# deliveries by key in bulk" and the sections after it, use this).
#
#   docs/tools/writer-cost.sh BINARY TEMPLATE.db LABEL [more bench arguments]
#
# TEMPLATE.db: an emptied database made by the same BINARY (its schema), e.g.
#   BINARY bench --duration 1s --storage sqlite:///tmp/tpl.db
#   sqlite3 /tmp/tpl.db "DELETE FROM attempts; DELETE FROM dedupe; DELETE FROM events;
#                        DELETE FROM deliveries; VACUUM"
# Each run works on a fresh copy of it. Needs python3 and the sqlite3 CLI.
# Make sure nothing else runs: an old server on the box skews every figure.
set -euo pipefail
BIN=$1; TPL=$2; LABEL=$3; shift 3
WORK=${WORK:-/tmp/writer-cost}
mkdir -p "$WORK"; rm -f "$WORK"/copy.db*; cp "$TPL" "$WORK/copy.db"
"$BIN" bench --duration 10s --storage "sqlite://$WORK/copy.db" --json "$@" > "$WORK/$LABEL.json" 2> "$WORK/$LABEL.err" &
BENCH=$!
until grep -q "ingest while delivering" "$WORK/$LABEL.err" 2>/dev/null; do
    kill -0 $BENCH 2>/dev/null || { echo "the bench ended early: $WORK/$LABEL.err"; exit 1; }
    sleep 0.2
done
sleep 2
SERVE=$(pgrep -f "serve --config" | head -1)
snapshot() {
    python3 - "$SERVE" "$BENCH" "$WORK/copy.db" <<'PY'
import json, os, sqlite3, sys
serve, bench, db = sys.argv[1:4]
def ticks(path):
    fields = open(path).read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])
threads, writer_io = {}, {}
for task in os.listdir(f"/proc/{serve}/task"):
    base = f"/proc/{serve}/task/{task}"
    name = open(f"{base}/comm").read().strip().rstrip("0123456789-")
    threads[name] = threads.get(name, 0) + ticks(f"{base}/stat")
    if name == "hg-sqlite-write":
        writer_io = dict(line.split(": ") for line in open(f"{base}/io").read().split("\n") if line)
cpu = [int(x) for x in open("/proc/stat").readline().split()[1:]]
events = sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("SELECT max(rid) FROM events").fetchone()[0]
print(json.dumps({"threads": threads, "serve": ticks(f"/proc/{serve}/stat"), "bench": ticks(f"/proc/{bench}/stat"),
                  "wchar": int(writer_io["wchar"]), "syscw": int(writer_io["syscw"]), "cpu": cpu, "events": events}))
PY
}
snapshot > "$WORK/a.json"; sleep 5; snapshot > "$WORK/b.json"
wait $BENCH
python3 - "$WORK" "$LABEL" <<'PY'
import json, sys
work, label = sys.argv[1:3]
a, b = (json.load(open(f"{work}/{x}.json")) for x in "ab")
report = json.load(open(f"{work}/{label}.json"))
n = b["events"] - a["events"]
us = lambda ticks: round(ticks * 10_000 / n, 1)  # clock ticks are 10 ms
busy = [y - x for x, y in zip(a["cpu"], b["cpu"])]
print(f"{label}: {n / 5:.0f} events/s in the window; writer WAL {(b['wchar'] - a['wchar']) / n / 1024:.2f} KB, "
      f"{(b['syscw'] - a['syscw']) / n:.2f} writes, {us(b['threads']['hg-sqlite-write'] - a['threads']['hg-sqlite-write'])} us CPU per event")
print("  CPU us/event by thread:", {k: us(v - a["threads"].get(k, 0)) for k, v in b["threads"].items() if v > a["threads"].get(k, 0)},
      "serve", us(b["serve"] - a["serve"]), "bench", us(b["bench"] - a["bench"]))
print(f"  box busy {100 * (sum(busy) - busy[3] - busy[4]) / sum(busy):.0f}%, iowait {100 * busy[4] / sum(busy):.0f}%")
print("  phases (events/s):", {p["name"]: round(p["events_per_s"]) for p in report["phases"]},
      f"sustained {report['sustained_per_s']:.0f}, drained {report['drain_per_s']:.0f}")
PY
