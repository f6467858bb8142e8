// Package reliability proves, at the level of the real binary, the promises of issue 5:
// every connected SDK ends up told about the newest config of its channel whatever fails in
// between (Redis outages and restarts, a silently dead subscription, a draining instance,
// racing publishers), and nothing a client or publisher sends can take the gateway down
// (slow and half-open clients, connection churn, hostile input).
//
// Its tests build cmd/sse-gateway once (with -race when the tests run with -race), run it
// against private redis-server processes on free loopback ports, and drive it with raw
// HTTP/1.1 clients from several 127.0.0.x source addresses. They need redis-server on PATH;
// the half-open test also needs root and iproute2 (ip netns). A missing dependency fails the
// test with a message saying what to install; no test skips.
//
// Counts are scaled down under -race so that the package stays within a few minutes on two
// cores; RELIABILITY_FULL=1 runs the full counts (loadtest/scripts/reliability-full.sh does,
// without -race). docs/RELIABILITY.md lists every scenario, its test and its measured outcome.
package reliability
