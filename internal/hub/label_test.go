package hub

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestChannelLabelsOnlyForAllowListedChannels: channel names reach metric labels only when
// the operator allow-listed them, so label cardinality stays bounded.
func TestChannelLabelsOnlyForAllowListedChannels(t *testing.T) {
	h := newHub(t, Config{LabelChannel: func(ch string) bool { return strings.HasPrefix(ch, "vip_") }})
	var s recordSink
	a, _ := h.Subscribe(&s, []string{"vip_1", "other"}, Version{})
	b, _ := h.Subscribe(&s, []string{"vip_1"}, Version{})
	h.Publish(msg("vip_1", 1, 0))
	h.Publish(msg("vip_1", 2, 0))
	h.Publish(msg("vip_1", 2, 0)) // duplicate: not fanned out, not counted
	h.Publish(msg("other", 1, 0))

	if got := testutil.ToFloat64(h.metrics.chanSubs.WithLabelValues("vip_1")); got != 2 {
		t.Errorf("channel_subscriptions{vip_1} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(h.metrics.chanEvents.WithLabelValues("vip_1")); got != 2 {
		t.Errorf("channel_events_total{vip_1} = %v, want 2", got)
	}
	if n := testutil.CollectAndCount(h.metrics.chanEvents); n != 1 {
		t.Errorf("channel_events_total has %d series, want 1 (only the allow-listed channel)", n)
	}
	if n := testutil.CollectAndCount(h.metrics.chanSubs); n != 1 {
		t.Errorf("channel_subscriptions has %d series, want 1", n)
	}
	h.Unsubscribe(a)
	h.Unsubscribe(b)
	if got := testutil.ToFloat64(h.metrics.chanSubs.WithLabelValues("vip_1")); got != 0 {
		t.Errorf("channel_subscriptions{vip_1} after unsubscribing = %v, want 0", got)
	}
}
