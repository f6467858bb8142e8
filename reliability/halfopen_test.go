package reliability

import (
	"fmt"
	"testing"
	"time"
)

// TestHalfOpenClient is scenario 5 (half-open): a client in a network namespace whose link
// is then taken down never sends a FIN or RST; its stream would stay open forever if
// nothing wrote to it. With --heartbeat 1s --write-timeout 2s the heartbeat stays
// unacknowledged and the kernel fails the socket (TCP_USER_TIMEOUT = the write timeout):
// the gateway must close the stream (stream_closes_total grows, streams_open drops), count
// it "slow", while a client on a healthy link keeps its stream and still receives a publish.
func TestHalfOpenClient(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	r := startRedis(t)
	g := startGateway(t, "halfopen", r.URL(), "--addr", ns.hostIP+":0", "--heartbeat", "1s", "--write-timeout", "2s")
	cs := newClients(t)
	const ch = "halfopen"
	remote := cs.start(clientConfig{channels: ch, target: fixed(g.Addr), dial: ns.dial})
	local := cs.start(clientConfig{channels: ch, target: fixed(g.Addr)})
	waitOpen(t, 10*time.Second, []*sseClient{remote, local})
	// The namespaced client really streams: it receives heartbeats.
	waitFor(t, 10*time.Second, func() string { return "the namespaced client got no heartbeat: " + remote.describe() }, func() bool {
		remote.mu.Lock()
		defer remote.mu.Unlock()
		return remote.beats >= 2
	})
	m := g.metrics()
	closes0 := m.get("sse_gateway_stream_closes_total")
	if open := m.get("sse_gateway_streams_open"); open != 2 {
		t.Fatalf("streams_open = %v before the cut, want 2", open)
	}

	ns.cut(t)
	cut := time.Now()
	var m1 metricSet
	waitFor(t, 30*time.Second, func() string {
		return fmt.Sprintf("the half-open stream was not closed: streams_open=%v closes=%v", m1.get("sse_gateway_streams_open"), m1.get("sse_gateway_stream_closes_total"))
	}, func() bool {
		m1 = g.metrics()
		return m1.get("sse_gateway_streams_open") == 1 && m1.get("sse_gateway_stream_closes_total") == closes0+1
	})
	found := time.Since(cut)
	reason := "?"
	for _, rs := range []string{"client", "slow", "drain", "revoked", "lifetime"} {
		if m1.get("sse_gateway_stream_closes_total", `reason="`+rs+`"`) > m.get("sse_gateway_stream_closes_total", `reason="`+rs+`"`) {
			reason = rs
		}
	}
	if reason != "slow" {
		t.Errorf("the half-open stream was counted %q, want \"slow\" (its writes could not complete: the peer is gone, not hung up)", reason)
	}
	if !remote.isOpen() {
		t.Errorf("the namespaced client saw its stream end, so the connection was not half-open: %s", remote.describe())
	}
	etag := `"h1"`
	lm := time.Now().UnixMilli()
	r.publishRaw(ch, payload(etag, lm, 0, false))
	waitHave(t, 10*time.Second, []*sseClient{local}, ch, versionOf(etag, lm))
	t.Logf("link to a streaming client cut (no FIN/RST): the gateway closed its stream %v later (heartbeat 1s, write timeout 2s), counted with reason %q; the healthy client kept its stream and got a publish",
		found.Round(time.Millisecond), reason)
}
