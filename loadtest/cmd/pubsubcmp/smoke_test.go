package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs the comparison in small on a real cluster (redis-server and redis-cli from
// PATH) and checks what must hold whatever the machine's speed: every event reaches its
// streams, a classic gateway receives every event, a sharded one only its channels', and
// only sharded mode subscribes per channel. It checks counts, never timings.
func TestSmoke(t *testing.T) {
	cfg := config{gateways: 3, channels: 12, spread: 1, streamsPerChannel: 2, publishes: 36, rate: 200, churn: 3,
		modes: []string{"classic", "sharded"}, deliverTimeout: 20 * time.Second, linger: 5 * time.Second}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var log bytes.Buffer
	res, err := compare(ctx, cfg, &log)
	if err != nil {
		t.Fatalf("compare: %v\n%s", err, log.String())
	}
	var out bytes.Buffer
	render(&out, cfg, res)
	t.Logf("\n%s", out.String())
	if len(res) != 2 {
		t.Fatalf("%d results, want classic and sharded", len(res))
	}
	for _, r := range res {
		if len(r.problems) > 0 {
			t.Errorf("%s: %v", r.mode, r.problems)
		}
		if r.expected != cfg.publishes*cfg.streamsPerChannel || r.delivered != r.expected {
			t.Errorf("%s: delivered %d of %d, want %d", r.mode, r.delivered, r.expected, cfg.publishes*cfg.streamsPerChannel)
		}
		if r.churn.reopenedExpected != cfg.churn*cfg.streamsPerChannel || r.churn.reopenedDelivered != r.churn.reopenedExpected {
			t.Errorf("%s: reopened streams got %d of %d", r.mode, r.churn.reopenedDelivered, r.churn.reopenedExpected)
		}
		for _, g := range r.gateways {
			// 12 channels over 3 gateways: 4 each, 3 publishes per channel.
			want := float64(cfg.publishes)
			if r.mode == "sharded" {
				want = 4 * 3
			}
			if g.received != want || g.streams != 8 {
				t.Errorf("%s: gateway %s received %v events with %d streams, want %v with 8", r.mode, g.name, g.received, g.streams, want)
			}
			if r.mode == "classic" && g.conns != 1 || r.mode == "sharded" && (g.conns < 1 || g.conns > 3) {
				t.Errorf("%s: gateway %s holds %v pub/sub connections", r.mode, g.name, g.conns)
			}
		}
		c := r.churn
		subs := sum(r.nodes, "cmdstat_ssubscribe.calls")
		switch r.mode {
		case "classic":
			if c.quickSub+c.quickUnsub+c.afterSub+c.afterUnsub+subs != 0 {
				t.Errorf("classic mode sent shard (un)subscriptions: %+v", c)
			}
			// The publishes themselves and a few probes: on a cluster no stored notice
			// follows a raw PUBLISH (each would cross the bus to every node again).
			if pubs := sum(r.nodes, "cmdstat_publish.calls"); pubs > 1.5*float64(cfg.publishes) {
				t.Errorf("classic mode on a cluster: %v PUBLISH commands for %d publishes; stored notices are sent", pubs, cfg.publishes)
			}
		case "sharded":
			// A reconnect inside the linger keeps the subscriptions; a return after it
			// subscribes each churned channel again (one command per slot), plus the probe
			// of a connection that had closed with its node's last channel.
			if c.quickSub != 0 || c.quickUnsub != 0 {
				t.Errorf("sharded: streams reconnecting at once churned subscriptions: %+v", c)
			}
			if c.afterSub < 1 || c.afterSub > float64(cfg.churn+3) || c.afterUnsub > float64(cfg.churn) {
				t.Errorf("sharded: %d channels' streams back after the linger: %v SSUBSCRIBE, %v SUNSUBSCRIBE", cfg.churn, c.afterSub, c.afterUnsub)
			}
		}
	}
	if !strings.Contains(out.String(), "| events delivered / expected | 72 / 72 | 72 / 72 |") {
		t.Errorf("the table lacks the delivery row:\n%s", out.String())
	}
}
