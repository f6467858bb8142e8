package subscribe

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/backoff"
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
// storing, never the fan-out; what waits is one payload per channel, newest wins. Every
// instance that receives an event stores it, so that whichever received it first has (see
// the package doc). Its loop is owned by Run.
type writer struct {
	r *Redis

	mu    sync.Mutex
	dirty map[string]wire.Payload // guarded by mu: the newest unwritten payload per channel
	busy  map[string]bool         // guarded by mu: channels in the write under way
	wake  chan struct{}           // capacity 1: dirty grew
}

func newWriter(r *Redis) *writer {
	return &writer{r: r, dirty: make(map[string]wire.Payload), busy: make(map[string]bool), wake: make(chan struct{}, 1)}
}

// mark queues p to be stored as channel's newest unless a newer payload is queued. It never
// blocks; it reports false when the queue is full and p was dropped.
func (w *writer) mark(channel string, p wire.Payload) bool {
	w.mu.Lock()
	cur, ok := w.dirty[channel]
	switch {
	case ok && !cur.Version().Less(p.Version()):
	case !ok && len(w.dirty) >= maxDirty:
		w.mu.Unlock()
		return false
	default:
		w.dirty[channel] = p
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return true
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

// take moves up to writeBatch dirty channels into the write under way.
func (w *writer) take(entries []store.Entry) []store.Entry {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch, p := range w.dirty {
		if len(entries) == writeBatch {
			break
		}
		if w.busy[ch] {
			continue // its write is under way; the newer payload goes in the next one
		}
		entries = append(entries, store.Entry{Channel: ch, Payload: p})
		delete(w.dirty, ch)
		w.busy[ch] = true
	}
	return entries
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
		if cur, ok := w.dirty[e.Channel]; !ok || cur.Version().Less(e.Payload.Version()) {
			w.dirty[e.Channel] = e.Payload
		}
	}
	w.mu.Unlock()
}

// run writes dirty channels until ctx is done, backing off while writes fail.
func (w *writer) run(ctx context.Context) {
	r := w.r
	var entries []store.Entry
	failures := 0
	for {
		entries = w.take(entries[:0])
		r.metrics.writeBackPending.Set(float64(w.len()))
		if len(entries) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
			}
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, storeTimeout)
		_, errs := r.store.Save(sctx, entries, false)
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
