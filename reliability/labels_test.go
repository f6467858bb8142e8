package reliability

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// channelSeries counts the per-channel series of name on the gateway's /metrics.
func channelSeries(g *gateway, name string) int {
	n := 0
	for series := range g.metrics() {
		if strings.HasPrefix(series, name+"{") {
			n++
		}
	}
	return n
}

// TestChannelSeriesBounded (issue 10, item 10): with a --metrics-channels wildcard, clients
// choose which channels get per-channel series, and public client keys let anyone choose.
// The series of a channel are deleted when its last stream closes, and at most
// --metrics-channels-max channels have series at a time. Before, every channel ever opened
// kept its series for the life of the process.
func TestChannelSeriesBounded(t *testing.T) {
	t.Parallel()
	const limit, opened = 20, 100
	r := startRedis(t)
	g := startGateway(t, "labels", r.URL(), "--metrics-channels", "*", "--metrics-channels-max", fmt.Sprint(limit))
	cs := newClients(t)
	var list []*sseClient
	for i := range opened {
		list = append(list, cs.start(clientConfig{channels: fmt.Sprintf("minted-%d", i), source: source(i), target: fixed(g.Addr)}))
	}
	waitOpen(t, 30*time.Second, list)
	for i := range opened {
		if s, body := g.publishAPI(fmt.Sprintf("minted-%d", i), payload(`"m"`, 1, 0, false)); s != http.StatusAccepted {
			t.Fatalf("publish: %d %s", s, body)
		}
	}
	waitHave(t, 10*time.Second, list[:1], "minted-0", versionOf(`"m"`, 1))
	subs, events := channelSeries(g, "sse_gateway_channel_subscriptions"), channelSeries(g, "sse_gateway_channel_events_total")
	if subs > limit || events > limit {
		t.Errorf("%d streams on %d channels: %d channel_subscriptions and %d channel_events_total series, want at most %d each",
			opened, opened, subs, events, limit)
	}
	cs.stop()
	var left int
	waitFor(t, 10*time.Second, func() string {
		return fmt.Sprintf("%d per-channel series left after every stream closed", left)
	}, func() bool {
		left = channelSeries(g, "sse_gateway_channel_subscriptions") + channelSeries(g, "sse_gateway_channel_events_total")
		return left == 0 && g.metrics().get("sse_gateway_streams_open") == 0
	})
	t.Logf("%d streams on %d channels, --metrics-channels '*' --metrics-channels-max %d: %d + %d series while open, %d after they closed",
		opened, opened, limit, subs, events, left)
}
