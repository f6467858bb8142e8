package subscribe

import (
	"sync"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// mailbox hands events from the read loop to the dispatchers without ever blocking the
// read loop and without losing the newest event of any channel. It holds at most one
// pending event per channel (the newest; invalidations are idempotent, so an older pending
// one is worthless once a newer one arrived), so its memory is bounded by the number of
// channels, not by the event rate. A channel is handled by one dispatcher at a time, so the
// hub sees each channel's events in arrival order.
type mailbox struct {
	mu     sync.Mutex
	cond   sync.Cond              // signalled when ready grows or the mailbox closes
	boxes  map[string]*channelBox // guarded by mu: channels pending or being dispatched
	ready  []string               // guarded by mu: channels with a pending event, not in flight
	closed bool                   // guarded by mu
}

type channelBox struct {
	pending  bool // an event is waiting in ev
	inFlight bool // a dispatcher holds this channel
	ev       event
}

// event is one valid payload received on a channel.
type event struct {
	channel  string
	payload  wire.Payload
	received time.Time
	stored   bool // published by the store (wire.ParseReceived): no write-back needed
}

func newMailbox() *mailbox {
	q := &mailbox{boxes: make(map[string]*channelBox)}
	q.cond.L = &q.mu
	return q
}

// put stores ev as its channel's pending event unless a newer one is already pending.
// It reports whether ev replaced an older pending event, which is then never delivered (the
// dispatchers are behind the event rate). It never blocks beyond a short critical section.
func (q *mailbox) put(ev event) (superseded bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	b := q.boxes[ev.channel]
	if b == nil {
		b = &channelBox{}
		q.boxes[ev.channel] = b
	}
	if b.pending && !b.ev.payload.Version().Less(ev.payload.Version()) {
		return false // the pending event is the same or newer: the hub would drop this one
	}
	superseded = b.pending
	b.ev = ev
	if !b.pending {
		b.pending = true
		if !b.inFlight {
			q.ready = append(q.ready, ev.channel)
			q.cond.Signal()
		}
	}
	return superseded
}

// take waits for pending events and moves up to max of them (one per channel) in flight.
// It returns nil once the mailbox is closed. The caller must pass the batch to done.
func (q *mailbox) take(batch []event, max int) []event {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.ready) == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return nil
	}
	n := min(max, len(q.ready))
	for _, ch := range q.ready[:n] {
		b := q.boxes[ch]
		b.pending, b.inFlight = false, true
		batch = append(batch, b.ev)
		b.ev = event{}
	}
	q.ready = q.ready[n:]
	if len(q.ready) == 0 {
		q.ready = nil // let the backing array go
	}
	return batch
}

// done releases a batch returned by take: channels that received an event meanwhile are
// queued again, the others forgotten.
func (q *mailbox) done(batch []event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, ev := range batch {
		b := q.boxes[ev.channel]
		if b == nil {
			continue
		}
		b.inFlight = false
		if b.pending && !q.closed {
			q.ready = append(q.ready, ev.channel)
			q.cond.Signal()
		} else {
			delete(q.boxes, ev.channel)
		}
	}
}

// close wakes every waiting dispatcher; pending events are abandoned, as the broker is
// stopping.
func (q *mailbox) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}

// len reports how many channels are pending or in flight.
func (q *mailbox) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.boxes)
}
