package subscribe

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/backoff"
	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/store"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

const (
	// writeBatch is the most channels one write-back pipeline stores.
	writeBatch = 500
	// maxDirty bounds the channels waiting to be written back: with Redis slow or away the
	// newest event of at most this many channels is held (one per channel; invalidations are
	// idempotent), beyond which an event is not written back (counted), and only the
	// resync after Redis returns stores what the instance's own streams need.
	maxDirty = 1 << 16
)

// writer stores the events the dispatchers hand the hub as their channels' newest, off the
// delivery path: a dispatcher marks a channel dirty and goes on with the next events, and
// the writer saves dirty channels in pipelines. A Redis that answers slowly then delays the
// storing, never the fan-out; what waits is one payload per channel, newest wins. Its loop is
// owned by Run.
//
// Every instance receives every event, and any one of them storing it is enough. So an event
// published stored (wire.ParseReceived reports the marker) is not written at all, and a raw
// one is written after a delay in [0, spread) drawn from a hash of the instance, the channel
// and the version: the instance with the shortest delay stores it and publishes a stored
// notice (store.SaveNotify), and the others, hearing it before their own delay is up, drop
// their write. Until it is stored or noticed, an event stays pending here (and in lastSeen),
// so it is written unless every instance that received it dies within spread: the no-loss
// promise of the package doc is kept, at about one write per event fleet-wide instead of one
// per instance.
type writer struct {
	r      *Redis
	spread time.Duration // 0: write at once (sharded mode: no instance hears notices)
	seed   string        // the instance's share of the delay hash

	mu      sync.Mutex
	dirty   map[string]pendingWrite // guarded by mu: the newest unwritten payload per channel
	queue   dueQueue                // guarded by mu: dirty's due times, earliest first, with stale entries (see take)
	busy    map[string]bool         // guarded by mu: channels in the write under way
	noticed map[string]hub.Version  // guarded by mu: the newest version known stored, per channel; forgotten every pruneInterval
	wake    chan struct{}           // capacity 1: dirty became non-empty
}

// pendingWrite is a payload waiting to be stored, from due on.
type pendingWrite struct {
	p   wire.Payload
	due time.Time
}

func newWriter(r *Redis, spread time.Duration) *writer {
	return &writer{r: r, spread: spread, seed: r.cfg.InstanceID, dirty: make(map[string]pendingWrite), busy: make(map[string]bool),
		noticed: make(map[string]hub.Version), wake: make(chan struct{}, 1)}
}

// mode says whether a write announces itself: with a spread, the stored notice is what
// spares the others their write; without one every instance writes at once and a notice
// would be traffic for nothing (on a Redis Cluster a classic PUBLISH crosses the cluster bus
// to every node: the notice doubled the bus messages per raw event, docs/PERFORMANCE.md
// "Sharded pub/sub").
func (w *writer) mode() store.SaveMode {
	if w.spread <= 0 {
		return store.SaveOnly
	}
	return store.SaveNotify
}

// delay is how long this instance waits before storing channel's event of version v: a hash
// of the instance, the channel and the version, so that which instance writes first changes
// from event to event and the writes spread over the fleet.
func (w *writer) delay(channel string, v hub.Version) time.Duration {
	if w.spread <= 0 {
		return 0
	}
	// FNV-1a 64 over seed, 0, channel, then the version's bytes; inline, as hash/fnv's
	// interface would allocate once per event.
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	add := func(b byte) { h = (h ^ uint64(b)) * prime }
	for i := 0; i < len(w.seed); i++ {
		add(w.seed[i])
	}
	add(0)
	for i := 0; i < len(channel); i++ {
		add(channel[i])
	}
	for i := 0; i < 64; i += 8 {
		add(byte(uint64(v.Time) >> i))
	}
	for i := 0; i < 32; i += 8 {
		add(byte(v.Tie >> i))
	}
	return time.Duration(h % uint64(w.spread))
}

// mark queues p to be stored as channel's newest unless a newer payload is queued or known
// stored. It never blocks; it reports false when the queue is full and p was dropped.
func (w *writer) mark(channel string, p wire.Payload) bool {
	v := p.Version()
	due := time.Now().Add(w.delay(channel, v))
	w.mu.Lock()
	cur, ok := w.dirty[channel]
	if n, known := w.noticed[channel]; known && !n.Less(v) {
		w.mu.Unlock()
		return true // another instance stored it (or a newer one) already
	}
	empty := len(w.dirty) == 0
	switch {
	case ok && !cur.p.Version().Less(v):
	case !ok && len(w.dirty) >= maxDirty:
		w.mu.Unlock()
		return false
	case ok && cur.due.Before(due):
		// Keep the earlier due time: a channel whose events come faster than spread is
		// still written within spread of its first unwritten one.
		w.dirty[channel] = pendingWrite{p: p, due: cur.due}
	default:
		w.dirty[channel] = pendingWrite{p: p, due: due}
		w.queue.push(dueEntry{channel: channel, due: due})
	}
	w.mu.Unlock()
	if empty || w.spread <= 0 {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// stored records that the store holds channel's event of version v or a newer one (it came
// marked as stored, or another instance's notice said so): a pending write of it or of an
// older one is dropped.
func (w *writer) stored(channel string, v hub.Version) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if cur, ok := w.dirty[channel]; ok && !v.Less(cur.p.Version()) {
		delete(w.dirty, channel)
	}
	// Remembered, bounded, for an event still on its way to mark (in the mailbox): a notice
	// can overtake it there.
	if n, ok := w.noticed[channel]; ok && !n.Less(v) {
		return
	}
	if len(w.noticed) < maxDirty {
		w.noticed[channel] = v
	}
}

// pending reports whether channel has a payload waiting or being written.
func (w *writer) pending(channel string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, dirty := w.dirty[channel]
	return dirty || w.busy[channel]
}

// len is how many channels have a payload waiting or being written.
func (w *writer) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.dirty) + len(w.busy)
}

// take moves up to writeBatch dirty channels due by now into the write under way, and
// returns the earliest due time of those left (zero: none left). It pops due times from the
// queue, not scanning dirty (which holds up to rate x spread channels): an entry whose
// channel was since stored, noticed or given an earlier due time is stale and skipped.
func (w *writer) take(entries []store.Entry, now time.Time) ([]store.Entry, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.queue) > 0 && len(entries) < writeBatch {
		top := w.queue[0]
		if top.due.After(now) {
			break
		}
		w.queue.pop()
		pw, ok := w.dirty[top.channel]
		if !ok || !pw.due.Equal(top.due) || w.busy[top.channel] {
			continue // stale (busy cannot happen: take and done both run on the writer's loop)
		}
		entries = append(entries, store.Entry{Channel: top.channel, Payload: pw.p})
		delete(w.dirty, top.channel)
		w.busy[top.channel] = true
	}
	for len(w.queue) > 0 {
		// Skip stale entries at the top, so the due time returned is a real one.
		top := w.queue[0]
		if pw, ok := w.dirty[top.channel]; ok && pw.due.Equal(top.due) {
			return entries, top.due
		}
		w.queue.pop()
	}
	return entries, time.Time{}
}

// dueEntry is a channel's due time in the writer's queue.
type dueEntry struct {
	channel string
	due     time.Time
}

// dueQueue is a min-heap of due times. Not container/heap: its Push boxes every entry in an
// interface, an allocation per event marked.
type dueQueue []dueEntry

func (q *dueQueue) push(e dueEntry) {
	*q = append(*q, e)
	h := *q
	for i := len(h) - 1; i > 0; {
		parent := (i - 1) / 2
		if !h[i].due.Before(h[parent].due) {
			break
		}
		h[i], h[parent] = h[parent], h[i]
		i = parent
	}
}

// pop removes the earliest entry; the queue must not be empty.
func (q *dueQueue) pop() {
	h := *q
	last := len(h) - 1
	h[0] = h[last]
	h[last] = dueEntry{} // drop the channel name
	h = h[:last]
	for i := 0; ; {
		small, l, r := i, 2*i+1, 2*i+2
		if l < len(h) && h[l].due.Before(h[small].due) {
			small = l
		}
		if r < len(h) && h[r].due.Before(h[small].due) {
			small = r
		}
		if small == i {
			break
		}
		h[i], h[small] = h[small], h[i]
		i = small
	}
	*q = h
}

// done ends a write: the entries that failed are queued again unless a newer payload of
// their channel is.
func (w *writer) done(entries []store.Entry, errs []error) {
	w.mu.Lock()
	for i, e := range entries {
		delete(w.busy, e.Channel)
		if errs == nil || errs[i] == nil {
			continue
		}
		if cur, ok := w.dirty[e.Channel]; !ok || cur.p.Version().Less(e.Payload.Version()) {
			now := time.Now()
			w.dirty[e.Channel] = pendingWrite{p: e.Payload, due: now}
			w.queue.push(dueEntry{channel: e.Channel, due: now})
		}
	}
	w.mu.Unlock()
}

// run writes dirty channels until ctx is done, backing off while writes fail.
func (w *writer) run(ctx context.Context) {
	r := w.r
	var entries []store.Entry
	var next time.Time
	failures := 0
	lastForget := time.Now()
	for {
		now := time.Now()
		if now.Sub(lastForget) >= pruneInterval {
			w.forgetNotices()
			lastForget = now
		}
		entries, next = w.take(entries[:0], now)
		r.metrics.writeBackPending.Set(float64(w.len()))
		if len(entries) == 0 {
			var timer <-chan time.Time
			var t *time.Timer
			if !next.IsZero() {
				// Not before a millisecond: the writes due meanwhile go in one pipeline.
				t = time.NewTimer(max(next.Sub(now), time.Millisecond))
				timer = t.C
			}
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
			case <-timer:
			}
			if t != nil {
				t.Stop()
			}
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, storeTimeout)
		_, errs := r.store.Save(sctx, entries, w.mode())
		cancel()
		w.done(entries, errs)
		clear(entries) // drop the payloads until the next take
		if errs == nil {
			failures = 0
			continue
		}
		if ctx.Err() != nil {
			return
		}
		failures++
		delay := backoff.Jitter(r.backoffMin, r.backoffMax, failures)
		r.storeLog.Log(slog.LevelWarn, "storing received events failed (every instance stores them; retrying, and the next resync writes back what streams need)",
			"err", store.FirstError(errs), "events", countErrors(errs), "delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// forgetNotices forgets the versions known stored: they only save writes of events that
// were still on their way here when the notice came, so keeping them briefly is enough.
func (w *writer) forgetNotices() {
	w.mu.Lock()
	clear(w.noticed)
	w.mu.Unlock()
}

// countErrors is how many of errs are not nil.
func countErrors(errs []error) int {
	n := 0
	for _, err := range errs {
		if err != nil {
			n++
		}
	}
	return n
}
