#!/usr/bin/env bash
# reliability-full.sh runs the heavy reliability scenarios (reliability/, issue 5) at their
# full counts, without the race detector, against a gateway built without it:
#   - TestChurn: 50,000 connect/disconnect cycles (5,000 in the quick run);
#   - TestOrderingRacingPublishers: 2 x 2,000 racing publishes (2 x 400 in the quick run);
#   - TestRedisOutage (2,000 clients) and TestSlowClients (500 slow clients, 200 x 16 KiB),
#     which run at full size in the quick run too, for figures without -race.
# Every test prints its measured figures (t.Logf); docs/RELIABILITY.md records them with
# this command. Needs redis-server; run as root for the half-open test if RUN is widened.
#
#   loadtest/scripts/reliability-full.sh            # the four tests above
#   RUN='TestChurn' loadtest/scripts/reliability-full.sh
#   OUT=/tmp/full.log loadtest/scripts/reliability-full.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

RUN="${RUN:-TestChurn|TestOrderingRacingPublishers|TestRedisOutage|TestSlowClients}"
OUT="${OUT:-${TMPDIR:-/tmp}/reliability-full.log}"
bin="$(mktemp -d)/sse-gateway"
trap 'rm -rf "$(dirname "$bin")"' EXIT

echo "== go build -o $bin ./cmd/sse-gateway (no -race)"
go build -o "$bin" ./cmd/sse-gateway

echo "== RELIABILITY_FULL=1 go test -count=1 -timeout 20m -run '$RUN' -v ./reliability (log: $OUT)"
set +e
RELIABILITY_FULL=1 RELIABILITY_GATEWAY_BIN="$bin" \
	go test -count=1 -timeout 20m -run "$RUN" -v ./reliability >"$OUT" 2>&1
rc=$?
set -e
# The measured figures, and every failure.
grep -E '^\s+[a-z_]+_test\.go:[0-9]+: |^(--- |ok |FAIL|PASS)' "$OUT" | grep -v '^        {' || true
echo "== exit $rc (full log: $OUT)"
exit $rc
