package hub

import (
	"fmt"
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

// TestChannelSeriesDeletedAndBounded: a channel's series go with its last subscription, and
// at most MaxLabeledChannels channels have series at a time, however many names clients
// choose under a wildcard; a channel refused a label does not get one later.
func TestChannelSeriesDeletedAndBounded(t *testing.T) {
	h := newHub(t, Config{LabelChannel: func(string) bool { return true }, MaxLabeledChannels: 3})
	var s recordSink
	var subs []*Subscription
	for i := range 5 {
		sub, _ := h.Subscribe(&s, []string{fmt.Sprint("c", i)}, Version{})
		subs = append(subs, sub)
		h.Publish(msg(fmt.Sprint("c", i), 1, 0))
	}
	series := func() (int, int) {
		return testutil.CollectAndCount(h.metrics.chanSubs), testutil.CollectAndCount(h.metrics.chanEvents)
	}
	if a, b := series(); a != 3 || b != 3 {
		t.Fatalf("5 channels, bound 3: %d channel_subscriptions and %d channel_events_total series, want 3 each", a, b)
	}
	h.Unsubscribe(subs[0]) // c0 goes: its series too, and a place is free
	if a, b := series(); a != 2 || b != 2 {
		t.Fatalf("after c0 went: %d and %d series, want 2 each", a, b)
	}
	h.Publish(msg("c3", 2, 0)) // c3 was created over the bound: still unlabeled
	if a, b := series(); a != 2 || b != 2 {
		t.Fatalf("c3 got series after a place freed up: %d and %d", a, b)
	}
	again, _ := h.Subscribe(&s, []string{"c0"}, Version{}) // a new c0 takes the free place
	h.Publish(msg("c0", 2, 0))
	if got := testutil.ToFloat64(h.metrics.chanEvents.WithLabelValues("c0")); got != 1 {
		t.Fatalf("the new c0 counts %v events, want 1 (its series start afresh)", got)
	}
	for _, sub := range append(subs[1:], again) {
		h.Unsubscribe(sub)
	}
	if a, b := series(); a != 0 || b != 0 {
		t.Fatalf("no channel left: %d and %d series remain", a, b)
	}
}
