package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/procstat"
)

// waitFor polls cond every 50 ms until it holds, within passes or ctx ends.
func (m *modeRun) waitFor(ctx context.Context, within time.Duration, what string, cond func(context.Context) bool) error {
	deadline := time.Now().Add(within)
	for !cond(ctx) {
		for _, g := range m.gws {
			if err := g.alive(); err != nil {
				return err
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s: not within %v", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func (m *modeRun) allReady(ctx context.Context) bool {
	for _, g := range m.gws {
		if !g.ready(ctx) {
			return false
		}
	}
	return true
}

// waitSubscribed waits until every gateway is ready and, in sharded mode, holds a confirmed
// shard subscription for want[i] channels (nil: every channel it streams). A raw SPUBLISH
// reaches only the gateways subscribed when it is made, so nothing is published before.
func (m *modeRun) waitSubscribed(ctx context.Context, want []int) error {
	if want == nil {
		want = m.gwChans
	}
	return m.waitFor(ctx, 60*time.Second, fmt.Sprintf("every gateway ready with its shard subscriptions %v", want), func(ctx context.Context) bool {
		if !m.allReady(ctx) {
			return false
		}
		if m.mode != "sharded" {
			return true
		}
		for i, g := range m.gws {
			mt, err := g.metrics(ctx)
			if err != nil || mt["sse_gateway_redis_shard_subscriptions"] != float64(want[i]) {
				return false
			}
		}
		return true
	})
}

// gwCounters is one gateway's counters at one moment.
type gwCounters struct {
	received, conns float64
	cpu             time.Duration
	rchar           int64
}

func (m *modeRun) gatewayCounters(ctx context.Context) ([]gwCounters, error) {
	out := make([]gwCounters, len(m.gws))
	for i, g := range m.gws {
		mt, err := g.metrics(ctx)
		if err != nil {
			return nil, err
		}
		c := gwCounters{received: mt["sse_gateway_events_received_total"], conns: mt["sse_gateway_redis_connected"]}
		if m.mode == "sharded" {
			c.conns = sumPrefix(mt, "sse_gateway_redis_shard_connection_up")
		}
		if c.cpu, err = procstat.ReadCPU(g.pid()); err != nil {
			return nil, err
		}
		io, err := procstat.ReadIO(g.pid())
		if err != nil {
			return nil, err
		}
		c.rchar = io.RChar
		out[i] = c
	}
	return out, nil
}

// payload is the inner JSON of event seq, as loadgen publishes it: sseparse.Quick reads
// the sequence from the etag and the publisher's clock from sentAtNs.
func (m *modeRun) payload(seq int64) string {
	return `{"etag":"\"lt-` + strconv.FormatInt(seq, 10) + `\"","lastModified":` + strconv.FormatInt(m.baseMs+seq, 10) +
		`,"sentAtNs":` + strconv.FormatInt(time.Now().UnixNano(), 10) + `}`
}

// publish sends the events seqs as a config service does (PUBLISH, or SPUBLISH in sharded
// mode, of <prefix><channel>), paced at the configured rate in pipelines of 10 ms' worth.
func (m *modeRun) publish(ctx context.Context, seqs []int64) error {
	per := max(1, m.cfg.rate/100)
	tick := time.NewTicker(time.Duration(per) * time.Second / time.Duration(m.cfg.rate))
	defer tick.Stop()
	for i := 0; i < len(seqs); i += per {
		batch := seqs[i:min(i+per, len(seqs))]
		_, err := m.cc.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, s := range batch {
				ch := channelPrefix + channelName(int(s%int64(m.cfg.channels)))
				if m.mode == "sharded" {
					p.SPublish(ctx, ch, m.payload(s))
				} else {
					p.Publish(ctx, ch, m.payload(s))
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("publishing: %w", err)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// expectedPairs is how many (stream, event) pairs must arrive, over streams ids (nil: all).
func (m *modeRun) expectedPairs(ids ...int) int {
	n := 0
	if ids == nil {
		for _, s := range m.expect {
			n += len(s)
		}
		return n
	}
	for _, id := range ids {
		n += len(m.expect[id])
	}
	return n
}

// delivered is how many of those arrived.
func (m *modeRun) delivered(ids ...int) int {
	if ids == nil {
		for id := range m.expect {
			ids = append(ids, id)
		}
	}
	m.sink.mu.Lock()
	defer m.sink.mu.Unlock()
	n := 0
	for _, id := range ids {
		got := m.sink.got[id]
		for _, seq := range m.expect[id] {
			if got[seq] > 0 {
				n++
			}
		}
	}
	return n
}

// churn closes the streams of the first cfg.churn channels and opens them again, twice: at
// once (a reconnect, inside the linger), then after the gateways dropped those channels'
// subscriptions; it counts the shard (un)subscribe commands the nodes ran each time, then
// publishes one event per churned channel and checks the reopened streams get it.
func (m *modeRun) churn(ctx context.Context) (churnResult, error) {
	k := m.cfg.churn
	var r churnResult
	r.channels = k
	churnedOn := make([]int, len(m.gws))
	for ch := range k {
		for j := range m.cfg.spread {
			churnedOn[(ch+j)%len(m.gws)]++
		}
	}
	// cycle closes the churned channels' streams, waits (between), and opens them again.
	cycle := func(between func() error) ([]int, error) {
		var kept, gone []*stream
		for _, st := range m.streams {
			if st.channel < k {
				gone = append(gone, st)
			} else {
				kept = append(kept, st)
			}
		}
		for _, st := range gone {
			st.close()
		}
		m.streams = kept
		r.streams = len(gone)
		if err := between(); err != nil {
			return nil, err
		}
		var opens []func(context.Context) (*stream, error)
		for _, st := range gone {
			opens = append(opens, m.opener(st.gw, st.channel))
		}
		before := len(m.streams)
		if err := m.openAll(ctx, opens); err != nil {
			return nil, err
		}
		var ids []int
		for _, st := range m.streams[before:] {
			ids = append(ids, st.id)
		}
		return ids, m.waitSubscribed(ctx, nil)
	}
	count := func(a, b []nodeStats) (sub, unsub float64) {
		d := delta(a, b)
		return sum(d, "cmdstat_ssubscribe.calls"), sum(d, "cmdstat_sunsubscribe.calls")
	}

	s0, err := m.cluster.snapshot(ctx)
	if err != nil {
		return r, err
	}
	if _, err := cycle(func() error { return nil }); err != nil {
		return r, err
	}
	if m.mode == "sharded" {
		// Past the linger and the gateways' next reconciliation after it: a subscription the
		// reconnect did not keep would be dropped (and subscribed again) by then.
		time.Sleep(m.cfg.linger + 3*time.Second)
	}
	s1, err := m.cluster.snapshot(ctx)
	if err != nil {
		return r, err
	}
	r.quickSub, r.quickUnsub = count(s0, s1)

	ids, err := cycle(func() error {
		if m.mode != "sharded" {
			return nil // no subscription per channel to wait for
		}
		left := make([]int, len(m.gws))
		for i := range left {
			left[i] = m.gwChans[i] - churnedOn[i]
		}
		return m.waitSubscribed(ctx, left)
	})
	if err != nil {
		return r, err
	}
	s2, err := m.cluster.snapshot(ctx)
	if err != nil {
		return r, err
	}
	r.afterSub, r.afterUnsub = count(s1, s2)

	seqs := make([]int64, k)
	for ch := range k {
		seqs[ch] = m.nextSeq(ch)
	}
	if err := m.publish(ctx, seqs); err != nil {
		return r, err
	}
	r.reopenedExpected = m.expectedPairs(ids...)
	_ = m.waitFor(ctx, m.cfg.deliverTimeout, "the reopened streams' events delivered", func(context.Context) bool {
		return m.delivered(ids...) == r.reopenedExpected
	})
	r.reopenedDelivered = m.delivered(ids...)
	return r, nil
}
