#!/bin/bash
# The store-alone harness (crates/hookgate-sqlite/examples/cycle.rs) for the
# build before routes (24e0af5), whose store API differs: an event names its
# one destination, an outcome names the event. Then both run the same load,
# and the writer's work can be counted exactly, away from the box's noise
# (docs/benchmarks.md, "Filing in slices"):
#
#   docs/tools/cycle-before-routes.sh /tmp/base      # a worktree: git worktree add /tmp/base 24e0af5
#   valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=/tmp/cg-base.%p \
#       /tmp/base-target/release/examples/cycle 20000 1
#   (and the same with target/release/examples/cycle); the writer is the thread
#   whose file names hookgate_sqlite::writer::Writer::run: compare its `summary:` line.
set -euo pipefail
BASE=$1
HERE=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$BASE/crates/hookgate-sqlite/examples"
python3 - "$HERE/crates/hookgate-sqlite/examples/cycle.rs" "$BASE/crates/hookgate-sqlite/examples/cycle.rs" <<'PY'
import sys
source, target = sys.argv[1:3]
s = open(source).read()
edits = [
    ("use hookgate_store::conformance::{event, ok_attempt, to};", "use hookgate_store::conformance::event;"),
    ("use hookgate_store::{NewEvent, Store, Verdict};",
     "use hookgate_store::{Attempt, NewEvent, Store, Verdict};\n\n"
     "fn ok_attempt(attempt: u32, at: i64) -> Attempt {\n"
     "    Attempt { attempt, started_at_ms: at, duration_ms: 5, status: Some(200), error: None }\n}"),
    ("    let mut new = NewEvent {", "    NewEvent {"),
    ("        ..event(SOURCE, now())\n    };\n    for destination in destinations {\n        new = to(destination, new);\n    }\n    new\n",
     "        destination: destinations[0].clone(),\n        ..event(SOURCE, now())\n    }\n"),
    (".finish(&claim.delivery, attempt", ".finish(&claim.id, attempt"),
]
for old, new in edits:
    if old not in s:
        sys.exit(f"cycle.rs changed; this edit no longer applies: {old!r}")
    s = s.replace(old, new)
open(target, "w").write(s)
PY
cd "$BASE" && CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/base-target} cargo build --release -p hookgate-sqlite --example cycle
