package subscribe

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/backoff"
	"github.com/sse-gateway/sse-gateway/internal/store"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

const (
	// seedBatch is the most channels one seed lookup asks the store for, in one pipeline.
	seedBatch = 500
	// seedTimeout bounds one seed lookup.
	seedTimeout = 5 * time.Second
	// seedRetryMax bounds the delay before a failed channel's next lookup.
	seedRetryMax = 2 * time.Second
)

// seeder fills the hub with the stored newest event of the channels streams subscribe to
// that the hub has not seen, off the streams' goroutines: a connect storm is a few pipelined
// lookups, not a round trip per stream. A channel whose lookup fails (Redis paused, a node
// failing over) is looked up again, with backoff, until it succeeds or the channel has no
// subscriber left; an answer that comes late is still applied. Its loop is owned by Run.
type seeder struct {
	r *Redis

	mu      sync.Mutex
	pending map[string]*seedState // guarded by mu: channels queued or being looked up
	wake    chan struct{}         // capacity 1: pending grew
}

type seedState struct {
	attempts int
	due      time.Time // not looked up before
	busy     bool      // in the lookup under way
	// again: asked for since the lookup under way began handing its answers to the hub
	// (see seeder.answering). The stream that asked subscribed after the answer, which the
	// hub may have dropped with the channel its earlier streams had left, or have handed
	// only to them: its ask is answered by one more lookup.
	again bool
}

func newSeeder(r *Redis) *seeder {
	return &seeder{r: r, pending: make(map[string]*seedState), wake: make(chan struct{}, 1)}
}

// add queues channels for a lookup; a channel already queued is not queued twice, and one
// being looked up is looked up once more after (see seedState.again).
func (s *seeder) add(channels []string) {
	if len(channels) == 0 {
		return
	}
	s.mu.Lock()
	for _, ch := range channels {
		switch st := s.pending[ch]; {
		case st == nil:
			s.pending[ch] = &seedState{}
		case st.busy:
			st.again = true
		}
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take marks up to seedBatch due channels busy and returns them, with the time the next
// channel not due yet is (zero if none).
func (s *seeder) take(now time.Time) (batch []string, next time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch, st := range s.pending {
		switch {
		case st.busy:
		case !st.due.After(now) && len(batch) < seedBatch:
			st.busy = true
			batch = append(batch, ch)
		case next.IsZero() || st.due.Before(next):
			next = st.due
		}
	}
	if len(batch) == seedBatch {
		next = now // more may be due
	}
	return batch, next
}

// answering marks the moment channels' answers start going to the hub: a stream that asked
// for one before subscribed before it, so the answer reaches it (the hub holds a channel
// while it has subscribers); one that asks from now on may have subscribed after its
// channel's answer and is looked up again (see seedState.again).
func (s *seeder) answering(channels []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range channels {
		if st := s.pending[ch]; st != nil {
			st.again = false
		}
	}
}

// done records the outcome of a lookup: channels seeded are forgotten, unless a stream asked
// for them since their answer went to the hub; failed ones are due again after a backoff
// unless nobody subscribes to them any more (live says who does).
func (s *seeder) done(seeded []string, failed []string, live map[string]bool, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range seeded {
		if st := s.pending[ch]; st != nil && st.again {
			*st = seedState{} // due now
			continue
		}
		delete(s.pending, ch)
	}
	for _, ch := range failed {
		st := s.pending[ch]
		if st == nil {
			continue
		}
		if !live[ch] && !st.again {
			delete(s.pending, ch)
			continue
		}
		st.busy, st.again = false, false
		st.attempts++
		st.due = now.Add(backoff.Jitter(s.r.backoffMin, seedRetryMax, st.attempts))
	}
}

// run looks up queued channels until ctx is done.
func (s *seeder) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		batch, next := s.take(time.Now())
		if len(batch) > 0 {
			s.lookup(ctx, batch)
			continue
		}
		var due <-chan time.Time
		if !next.IsZero() {
			timer.Reset(time.Until(next))
			due = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-due:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// lookup reads channels' stored events in one pipeline and seeds the hub with each
// channel's newest: the stored one, or the one this instance received itself if that is
// newer (an event handed to the hub before its channel had a subscriber here may not be
// stored yet; see Redis.dispatch).
func (s *seeder) lookup(ctx context.Context, channels []string) {
	r := s.r
	lctx, cancel := context.WithTimeout(ctx, seedTimeout)
	defer cancel()
	var seeded, failed []string
	var firstErr error
	if r.sharded != nil {
		// Subscribed before the store is read: whatever is published after the read is
		// delivered, whatever before is in the store (or in lastSeen).
		ok := r.sharded.await(lctx, channels)
		if len(ok) < len(channels) {
			held := make(map[string]bool, len(ok))
			for _, ch := range ok {
				held[ch] = true
			}
			for _, ch := range channels {
				if !held[ch] {
					failed = append(failed, ch)
				}
			}
			firstErr = errors.New("shard subscription not confirmed in time")
		}
		channels = ok
	}
	var got []store.Stored
	if len(channels) > 0 {
		got = r.store.GetMany(lctx, channels)
	}
	now := time.Now()
	answers := make([]int, 0, len(channels))
	for i, ch := range channels {
		if err := r.usable(ch, got[i]); err != nil {
			failed = append(failed, ch)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		answers = append(answers, i)
		seeded = append(seeded, ch)
	}
	s.answering(seeded)
	for _, i := range answers {
		r.seedHub(channels[i], got[i], now)
	}
	var live map[string]bool
	if len(failed) > 0 {
		live = make(map[string]bool)
		for _, ch := range r.hub.Channels() {
			live[ch] = true
		}
		if ctx.Err() == nil {
			r.storeLog.Log(slog.LevelWarn, "looking up channels' stored events for new streams failed; retrying",
				"channels", len(failed), "err", firstErr)
		}
	}
	s.done(seeded, failed, live, now)
	r.metrics.seedPending.Set(float64(s.len()))
}

// len is how many channels wait for a lookup or are in one.
func (s *seeder) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// usable sorts a channel's answer from the store: a value that cannot be read (not written
// by a gateway) is logged and taken for none; a Redis error is returned, as asking again
// later may succeed.
func (r *Redis) usable(channel string, stored store.Stored) error {
	if errors.Is(stored.Err, store.ErrUnreadable) {
		r.storeLog.Log(slog.LevelWarn, "ignoring unreadable stored latest event", "channel", channel, "err", stored.Err)
		return nil
	}
	return stored.Err
}

// seedHub hands the hub channel's newest event: what the store answered (stored), or what
// this instance received itself if that is newer. It reports the payload used, if any.
func (r *Redis) seedHub(channel string, stored store.Stored, now time.Time) (wire.Payload, bool) {
	p, found := stored.Payload, stored.Found
	if seen, ok := r.lastSeen.get(channel); ok && (!found || p.Version().Less(seen.Version())) {
		p, found = seen, true
	} else if found {
		r.lastSeen.update(channel, p)
	}
	if !found {
		r.hub.Seed(channel, nil)
		return wire.Payload{}, false
	}
	r.hub.Seed(channel, wire.NewMessage(channel, p, now))
	return p, true
}
