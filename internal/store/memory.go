package store

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// Hub is what Memory hands events to; *hub.Hub satisfies it.
type Hub interface {
	// Publish offers m to the channel's subscribers unless the hub has it or a newer one.
	Publish(m *hub.Message) int
	// Seed records that the store was asked for channel's newest message (m, maybe nil).
	Seed(channel string, m *hub.Message) int
}

var _ Hub = (*hub.Hub)(nil)

// Memory is the embedded broker of a single instance with no Redis: Publish hands events to
// the hub directly and keeps each channel's newest one in memory for LatestTTL.
type Memory struct {
	hub Hub           // immutable
	ttl time.Duration // immutable

	mu     sync.Mutex
	latest map[string]memoryEntry // guarded by mu

	running atomic.Bool // Run is running

	received  prometheus.Counter     // safe for concurrent use
	malformed *prometheus.CounterVec // safe for concurrent use
}

type memoryEntry struct {
	m       *hub.Message
	expires time.Time
}

// NewMemory returns an embedded broker feeding h. Of cfg it uses LatestTTL only.
func NewMemory(h Hub, cfg Config) *Memory {
	cfg = cfg.withDefaults()
	return &Memory{
		hub: h, ttl: cfg.LatestTTL, latest: make(map[string]memoryEntry),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sse_gateway", Name: "events_received_total",
			Help: "Events published to the embedded broker, valid or not.",
		}),
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sse_gateway", Name: "events_malformed_total",
			Help: "Events the embedded broker refused as malformed, by reason.",
		}, []string{"reason"}),
	}
}

// Register exports the broker's event counters under the names the Redis subscriber uses
// (sse_gateway_events_received_total, sse_gateway_events_malformed_total), so dashboards
// and alerts read the same on a single instance.
func (b *Memory) Register(reg prometheus.Registerer) {
	for _, r := range []string{"channel", "not_object"} {
		b.malformed.WithLabelValues(r)
	}
	reg.MustRegister(b.received, b.malformed)
}

// Publish stores p as channel's latest event and hands it to the hub if it is newer than
// the stored one; it reports false, and publishes nothing, otherwise (ErrConflict when the
// stored one has the same lastModified and another ETag). p must come from
// wire.ParsePayload. It works whether or not Run is running.
func (b *Memory) Publish(ctx context.Context, channel string, p wire.Payload) (bool, error) {
	b.received.Inc()
	if !wire.ValidChannel(channel) {
		b.malformed.WithLabelValues("channel").Inc()
		return false, ErrChannel
	}
	if len(p.Raw) == 0 {
		b.malformed.WithLabelValues("not_object").Inc()
		return false, ErrPayload
	}
	now := time.Now()
	m := wire.NewMessage(channel, p, now)
	b.mu.Lock()
	if e, ok := b.latest[channel]; ok && now.Before(e.expires) && !e.m.Version.Less(m.Version) {
		b.mu.Unlock()
		if e.m.Version.Time == m.Version.Time && e.m.Version.Tie != m.Version.Tie {
			return false, ErrConflict
		}
		return false, nil
	}
	b.latest[channel] = memoryEntry{m: m, expires: now.Add(b.ttl)}
	b.mu.Unlock()
	// Outside the lock: two racing publishers may reach the hub out of order, and the hub
	// drops the older one.
	b.hub.Publish(m)
	return true, nil
}

// Seed hands the hub each channel's latest event (or nil: none, or expired), for streams
// that subscribed to channels the hub had not seen. It never fails, and is done when it
// returns.
func (b *Memory) Seed(channels []string) {
	now := time.Now()
	for _, ch := range channels {
		b.mu.Lock()
		e, ok := b.latest[ch]
		b.mu.Unlock()
		var m *hub.Message
		if ok && now.Before(e.expires) {
			m = e.m
		}
		b.hub.Seed(ch, m)
	}
}

// Ready reports whether Run is running: an in-process broker has nothing else to wait for.
func (b *Memory) Ready() bool { return b.running.Load() }

// Run forgets expired events periodically until ctx is done, then returns nil.
func (b *Memory) Run(ctx context.Context) error {
	b.running.Store(true)
	defer b.running.Store(false)
	t := time.NewTicker(min(b.ttl, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			b.sweep(now)
		}
	}
}

func (b *Memory) sweep(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch, e := range b.latest {
		if !now.Before(e.expires) {
			delete(b.latest, ch)
		}
	}
}
