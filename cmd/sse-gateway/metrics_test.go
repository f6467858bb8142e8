package main

import (
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/sse-gateway/sse-gateway/internal/redistest"
)

// TestMetricsCatalogue scrapes a gateway running on Redis that has served streams and
// events, and one in sharded mode on a Redis Cluster holding a shard subscription, lints the
// expositions with promlint, and checks that docs/OPERATIONS.md documents exactly the
// sse_gateway_ metrics they export.
func TestMetricsCatalogue(t *testing.T) {
	rdb := redistest.Start(t)
	g := startGateway(t, "--redis-url", rdb.URL(), "--metrics-addr", "127.0.0.1:0", "--metrics-channels", "vip_*")
	c := newClient(t)
	g.waitReady(c)
	s := mustOpen(t, c, g.streamURL(testKeys["k1"], "vip_1"))
	defer s.Close()
	g.publish(c, "vip_1", `"e1"`, time.Now().UnixMilli())
	if d := s.data(t, waitLimit); !strings.Contains(d, `"channel":"vip_1"`) {
		t.Fatalf("stream got %q", d)
	}

	// A stream has the event before the fan-out that wrote it is counted: wait for the
	// count of the allow-listed channel, the last series to appear.
	var body []byte
	waitFor(t, waitLimit, "the fan-out to be counted", func() bool {
		resp, err := c.Get("http://" + g.metricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/metrics: %s", resp.Status)
		}
		return strings.Contains(string(body), `sse_gateway_channel_events_total{channel="vip_1"} 1`)
	})
	problems, err := promlint.New(strings.NewReader(string(body))).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "sse_gateway_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}

	exported := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (sse_gateway_\w+) `).FindAllStringSubmatch(string(body), -1) {
		exported[m[1]] = true
	}
	for m := range shardedMetrics(t, c) {
		exported[m] = true
	}
	doc, err := os.ReadFile("../../docs/OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(sse_gateway_\\w+)` \\|").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	var undocumented, missing []string
	for m := range exported {
		if !documented[m] {
			undocumented = append(undocumented, m)
		}
	}
	for m := range documented {
		if !exported[m] {
			missing = append(missing, m)
		}
	}
	sort.Strings(undocumented)
	sort.Strings(missing)
	if len(undocumented) > 0 {
		t.Errorf("exported but not in the docs/OPERATIONS.md metrics table: %v", undocumented)
	}
	if len(missing) > 0 {
		t.Errorf("in the docs/OPERATIONS.md metrics table but not exported: %v", missing)
	}
	if len(exported) < 15 {
		t.Errorf("only %d sse_gateway_ metrics exported: %v", len(exported), exported)
	}
}

// shardedMetrics returns the sse_gateway_ metrics a gateway in sharded mode exports once it
// holds a shard subscription (for a stream), after linting them.
func shardedMetrics(t *testing.T, c *http.Client) map[string]bool {
	t.Helper()
	cluster := redistest.StartCluster(t, 3, 0)
	g := startGateway(t, "--redis-url", cluster.URL(), "--redis-pubsub", "sharded", "--metrics-addr", "127.0.0.1:0")
	g.waitReady(c)
	s := mustOpen(t, c, g.streamURL(testKeys["k1"], "shard_1"))
	defer s.Close()
	var body []byte
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(string(body), "sse_gateway_redis_shard_subscriptions 1") {
		if time.Now().After(deadline) {
			t.Fatalf("the sharded gateway never held the stream's shard subscription:\n%s", body)
		}
		resp, err := c.Get("http://" + g.metricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		time.Sleep(20 * time.Millisecond)
	}
	problems, err := promlint.New(strings.NewReader(string(body))).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "sse_gateway_") {
			t.Errorf("promlint (sharded): %s: %s", p.Metric, p.Text)
		}
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (sse_gateway_\w+) `).FindAllStringSubmatch(string(body), -1) {
		out[m[1]] = true
	}
	return out
}

// TestEmbeddedBrokerMetrics: without Redis the embedded broker exports the same event
// counters as the Redis subscriber (events received, malformed by reason), so dashboards and
// the malformed-events alert work on a single instance too. Before, it exported neither.
func TestEmbeddedBrokerMetrics(t *testing.T) {
	t.Parallel()
	g := startGateway(t, "--metrics-addr", "127.0.0.1:0")
	c := newClient(t)
	g.waitReady(c)
	g.publish(c, "embedded", `"e1"`, time.Now().UnixMilli())
	g.publish(c, "embedded", `"e2"`, time.Now().UnixMilli()+1)
	resp, err := c.Get("http://" + g.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"sse_gateway_events_received_total 2\n", "# TYPE sse_gateway_events_malformed_total counter\n"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("the embedded broker's /metrics lacks %q", strings.TrimSpace(want))
		}
	}
}
