#!/usr/bin/env bash
# Instructions the server executes per request, counted by valgrind's callgrind: a figure that does not move
# with the machine's speed, for costs too small for req/s to show on a noisy machine (a few percent).
#
#   DATABASE_URL=postgres://... bench/instructions.sh <store> [route] [requests] [warm-up requests]
#   e.g. bench/instructions.sh none /nodb; bench/instructions.sh ours /nodb
#
# <store> is one of bench/stores.mjs (the apps of bench/server.mjs); route defaults to /nodb. The library is
# compiled from the working tree first. The server runs under callgrind with --predictable (no background
# compilation threads); after the warm-up the counters are zeroed, `requests` requests are sent (4
# connections), and the count is divided by them. Each call takes about five minutes. The second line splits
# the count (bench/instruction-split.mjs): V8's optimising compiler and the GC run in bursts that move the
# total by a percent or two between runs of one app; the rest, the requests' own work, is what to compare.
set -euo pipefail
cd "$(dirname "$0")/.."

store=${1:?usage: bench/instructions.sh <store> [route] [requests] [warm-up]}
route=${2:-/nodb}
requests=${3:-5000}
# After 2,000 requests of warm-up a fifth of the count was still V8's optimising compiler at work on
# Express's and Node's functions, more for an app with more code; after 15,000 it is a tenth.
warm=${4:-15000}
: "${DATABASE_URL:?DATABASE_URL must name a PostgreSQL server (the bench apps keep their sessions there)}"
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }

# Inside the project, so the compiled library finds its dependencies.
work=.bench-results/instructions-$$
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
node node_modules/typescript/bin/tsc -p tsconfig.esm.json --outDir "$work/lib" --declaration false --sourceMap false
echo '{"type":"module"}' > "$work/lib/package.json"

BENCH_LIB="$PWD/$work/lib/index.js" valgrind --tool=callgrind --callgrind-out-file="$work/out.%p" --dump-instr=no \
  node --predictable bench/server.mjs "$store" instructions > "$work/server.log" 2>&1 &
server=$!
url=
for _ in $(seq 1 180); do
  url=$(grep -o 'http://[^ ]*' "$work/server.log" | head -n1 || true)
  [ -n "$url" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 1
done
[ -n "$url" ] || { echo "the server did not start" >&2; kill "$server"; exit 1; }

load() {
  node -e '
    const autocannon = require("autocannon");
    autocannon({ url: process.argv[1], connections: 4, amount: Number(process.argv[2]) }).then((r) => {
      if (r.non2xx || r.errors || r.timeouts) { console.error(`failed requests: ${r.non2xx} non-2xx, ${r.errors} errors`); process.exit(1); }
    });' "${url%/}$route" "$1"
}

load "$warm"
callgrind_control -z "$server" >/dev/null 2>&1
load "$requests"
callgrind_control -d "$server" >/dev/null 2>&1
kill -INT "$server"
wait "$server" || true

# The dump requested above is part 1 of the server's profile.
total=$(awk '/^(summary|totals):/ { print $2; exit }' "$work/out.$server.1")
echo "$store $route: $((total / requests)) instructions/request ($requests requests after $warm of warm-up)"
echo "  $(node bench/instruction-split.mjs "$work/out.$server.1" "$requests")"
