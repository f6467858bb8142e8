#!/usr/bin/env bash
# fleet100k.sh: 100,000 SSE streams over six gateways on one Redis, on this machine
# (issue 9, item 5). Builds sse-gateway and loadtest/cmd/fleetload, starts a private
# redis-server and GATEWAYS gateway processes on free loopback ports, and runs fleetload:
# connect every stream, measure memory, deliver ROUNDS publishes on every channel to every
# stream, then SIGTERM the last gateway and check that its streams reconnect to the others
# with Last-Event-ID and miss nothing published during the drain.
#
# Stdout is fleetload's report (the figure block of docs/OPERATIONS.md, `make record
# FIGURE=fleet-100k`); progress goes to stderr. Plots and JSON: loadtest/results/fleet100k.*.
# Exit status: fleetload's (0 ok, 1 a check failed, 2 could not run).
#
#   loadtest/scripts/fleet100k.sh                      # the recorded run, ~2-4 minutes
#   STREAMS=3000 CHANNELS=100 loadtest/scripts/fleet100k.sh   # a quick look
#   REDIS=cluster loadtest/scripts/fleet100k.sh        # on a 6-node Redis Cluster
#
# Heavy: it takes the machine-wide lock /tmp/heavy.lock so heavy runs do not overlap.
set -euo pipefail

if [ -z "${FLEET_LOCKED:-}" ]; then
	exec env FLEET_LOCKED=1 flock /tmp/heavy.lock "$0" "$@"
fi

STREAMS=${STREAMS:-100000}
GATEWAYS=${GATEWAYS:-6}
CHANNELS=${CHANNELS:-1000}
ROUNDS=${ROUNDS:-5}
DRAIN=${DRAIN:-10s}
OUT=${OUT:-loadtest/results}
REDIS=${REDIS:-single} # or cluster: a 6-node Redis Cluster (3 masters + 3 replicas)

cd "$(dirname "$0")/../.."
log() { echo "fleet100k: $*" >&2; }
die() { log "$*"; exit 2; }

# Each process may open at most the hard limit (20,000 here): gateways and generator
# workers stay under it.
ulimit -n "$(ulimit -Hn)"

TMP=$(mktemp -d)
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 2' INT TERM

log "building"
go build -o "$TMP"/sse-gateway ./cmd/sse-gateway
go build -o "$TMP"/fleetload ./loadtest/cmd/fleetload

wait_tcp() { # port tries
	local i
	for ((i = 0; i < $2; i++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	return 1
}

NAME=fleet100k
REDIS_PID_ARGS=()
case $REDIS in
single)
	REDIS_PORT=$("$TMP"/fleetload freeport)
	redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP" >"$TMP"/redis.log 2>&1 &
	PIDS+=($!)
	REDIS_PID_ARGS=(--redis-pid "$!")
	wait_tcp "$REDIS_PORT" 50 || die "redis-server did not start: $(tail -3 "$TMP"/redis.log)"
	REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
	GATEWAY_REDIS_URL=$REDIS_URL
	;;
cluster)
	# Six nodes, three masters with a replica each, as issue 9's users run it.
	NAME=fleet100k-cluster
	NODES=()
	for ((n = 0; n < 6; n++)); do
		p=$("$TMP"/fleetload freeport)
		mkdir -p "$TMP"/node$p
		redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP"/node$p \
			--cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 >"$TMP"/node$p/log 2>&1 &
		PIDS+=($!)
		wait_tcp "$p" 50 || die "redis-server $p did not start: $(tail -3 "$TMP"/node$p/log)"
		NODES+=("127.0.0.1:$p")
	done
	redis-cli --cluster create "${NODES[@]}" --cluster-replicas 1 --cluster-yes >"$TMP"/cluster-create.log 2>&1 ||
		die "redis-cli --cluster create failed: $(tail -3 "$TMP"/cluster-create.log)"
	for ((i = 0; i < 100; i++)); do
		redis-cli -p "${NODES[0]#*:}" cluster info | grep -q 'cluster_state:ok' && break
		sleep 0.1
	done
	REDIS_URL=redis://${NODES[0]}/0 # PUBLISH on one node reaches every node over the cluster bus
	GATEWAY_REDIS_URL="redis://${NODES[0]}?addr=${NODES[1]}&addr=${NODES[2]}"
	;;
*) die "REDIS=$REDIS: single or cluster" ;;
esac
KEY=fleet-$RANDOM$RANDOM$RANDOM
printf '{"keys":[{"name":"fleet","key":"%s","channels":["*"]}]}\n' "$KEY" >"$TMP"/keys.json

TARGETS="" GPIDS=""
for ((g = 0; g < GATEWAYS; g++)); do
	port=$("$TMP"/fleetload freeport)
	"$TMP"/sse-gateway --addr 127.0.0.1:"$port" --redis-url "$GATEWAY_REDIS_URL" --keys-file "$TMP"/keys.json \
		--admin-token "fleet-admin-$RANDOM$RANDOM" --drain "$DRAIN" --log-format json >"$TMP"/gateway$g.log 2>&1 &
	PIDS+=($!)
	TARGETS+="${TARGETS:+,}127.0.0.1:$port"
	GPIDS+="${GPIDS:+,}$!"
	wait_tcp "$port" 100 || die "gateway $g did not listen: $(tail -3 "$TMP"/gateway$g.log)"
	for ((i = 0; i < 100; i++)); do # ready = Redis subscription live
		[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && break
		sleep 0.1
	done
done
log "redis $GATEWAY_REDIS_URL, gateways $TARGETS (pids $GPIDS)"

mkdir -p "$OUT"
rc=0
"$TMP"/fleetload --targets "$TARGETS" --pids "$GPIDS" --key "$KEY" --redis-url "$REDIS_URL" \
	"${REDIS_PID_ARGS[@]}" --streams "$STREAMS" --channels "$CHANNELS" --rounds "$ROUNDS" --drain "$DRAIN" \
	--json "$OUT"/$NAME.json --svg "$OUT"/$NAME.svg "$@" || rc=$?
if [ "$rc" != 0 ]; then
	for ((g = 0; g < GATEWAYS; g++)); do
		log "gateway $g log tail:"
		grep -v '"level":"INFO"' "$TMP"/gateway$g.log | tail -5 >&2 || true
	done
fi
exit "$rc"
