//go:build linux

package stream

import (
	"sync"
	"time"
)

// maxTick bounds the wheel's tick: every per-stream timer fires within a tick of its time
// (plus the sweeper's scheduling delay), well inside the promised second.
const maxTick = 250 * time.Millisecond

// maxSlots bounds the wheel's size for very long intervals; a timer further out than the
// wheel reaches is parked in its last slot and rescheduled from there.
const maxSlots = 1 << 16

// wheel is a hashed timing wheel of the taken-over streams' timers (heartbeat, write deadline,
// lifetime, the end of a goodbye). Each stream sits in at most one slot, the one of the
// first sweeper tick at or after its earliest timer, linked through its wheelLink. The
// sweeper takes only the streams of the slots that came due, so a tick costs O(streams due),
// however many are open; each stream then runs its due timers and goes back in at its next
// one (pollStream.timers).
//
// Timers move later lazily: a write that pushes a heartbeat back does not touch the wheel,
// the stream comes up at its old time, finds nothing due and goes back in at the new one.
// Only a timer that moves earlier (a write stalling: its deadline) moves the stream at once.
//
// Every field below mu is guarded by it, and so is each stream's wheelLink. Lock order: a
// stream's mu, then the wheel's mu.
type wheel struct {
	tick  int64 // nanos; immutable
	start int64 // unix nanos of tick 0; immutable

	mu    sync.Mutex
	slots []*pollStream // head of each slot's list; slot k%len(slots) holds tick k
	cur   int64         // the last tick swept; slots hold ticks cur+1 .. cur+len(slots)
	swept uint64        // streams taken out of due slots, ever (the sweep's cost, for tests)
}

// wheelLink is a stream's place in the wheel, guarded by the wheel's mu.
type wheelLink struct {
	prev, next *pollStream
	at         int64 // the tick it is scheduled for; 0: not in the wheel
}

// newWheel sizes a wheel so that the longest timer a stream can have from now (a heartbeat
// interval or a write timeout; a lifetime is capped by the heartbeat due before it) fits.
func newWheel(heartbeat, writeTimeout time.Duration, now time.Time) *wheel {
	tick := max(min(heartbeat/16, maxTick), time.Millisecond)
	n := int(max(heartbeat, writeTimeout)/tick) + 2
	return &wheel{tick: int64(tick), start: now.UnixNano(), slots: make([]*pollStream, min(n, maxSlots))}
}

// tickOf is the first tick at or after unix nanos t.
func (w *wheel) tickOf(t int64) int64 {
	d := t - w.start
	if d <= 0 {
		return 0
	}
	return (d + w.tick - 1) / w.tick
}

// schedule puts c in the slot of its timer at unix nanos t. With earlierOnly, a stream
// already in the wheel for an earlier or the same tick stays where it is. The caller holds
// c.mu.
func (w *wheel) schedule(c *pollStream, t int64, earlierOnly bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := min(max(w.tickOf(t), w.cur+1), w.cur+int64(len(w.slots)))
	if c.link.at != 0 {
		if earlierOnly && c.link.at <= k {
			return
		}
		w.unlinkLocked(c)
	}
	i := k % int64(len(w.slots))
	c.link = wheelLink{next: w.slots[i], at: k}
	if h := w.slots[i]; h != nil {
		h.link.prev = c
	}
	w.slots[i] = c
}

// remove takes c out of the wheel, if it is in.
func (w *wheel) remove(c *pollStream) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c.link.at != 0 {
		w.unlinkLocked(c)
	}
}

func (w *wheel) unlinkLocked(c *pollStream) {
	l := &c.link
	if l.prev != nil {
		l.prev.link.next = l.next
	} else {
		w.slots[l.at%int64(len(w.slots))] = l.next
	}
	if l.next != nil {
		l.next.link.prev = l.prev
	}
	*l = wheelLink{}
}

// due takes out of the wheel the streams of every tick up to unix nanos now that was not
// swept yet, appending them to batch.
func (w *wheel) due(now int64, batch []*pollStream) []*pollStream {
	w.mu.Lock()
	defer w.mu.Unlock()
	n0 := len(batch)
	last := (now - w.start) / w.tick
	for ; w.cur < last; w.cur++ {
		i := (w.cur + 1) % int64(len(w.slots))
		for c := w.slots[i]; c != nil; {
			next := c.link.next
			c.link = wheelLink{}
			batch = append(batch, c)
			c = next
		}
		w.slots[i] = nil
	}
	w.swept += uint64(len(batch) - n0)
	return batch
}
