package subscribe

import (
	"sync"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// lastSeen remembers, per channel, the newest payload this instance handed to its hub: what
// a stream subscribing to the channel is seeded with if the store does not have it yet, and
// what a resync writes back when Redis lost its data. Entries of channels that no stream
// here subscribes to are pruned once their event is stored (see prune).
type lastSeen struct {
	mu sync.Mutex
	m  map[string]seenEntry // guarded by mu
}

type seenEntry struct {
	p  wire.Payload
	at time.Time // when p was recorded
}

func newLastSeen() *lastSeen { return &lastSeen{m: make(map[string]seenEntry)} }

// update records p unless a newer or equal version is recorded; either way the channel
// counts as recently used, for prune.
func (k *lastSeen) update(channel string, p wire.Payload) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := k.m[channel]; ok && !e.p.Version().Less(p.Version()) {
		p = e.p
	}
	k.m[channel] = seenEntry{p: p, at: time.Now()}
}

func (k *lastSeen) get(channel string) (wire.Payload, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e, ok := k.m[channel]
	return e.p, ok
}

// prune forgets the channels not in keep, whose write is not pending, that were recorded
// before since: nobody here subscribes to them and the store has their event. Entries
// recorded after since may belong to a channel subscribed after keep was listed, so they
// stay until the next prune.
func (k *lastSeen) prune(keep []string, pending func(channel string) bool, since time.Time) {
	set := make(map[string]struct{}, len(keep))
	for _, ch := range keep {
		set[ch] = struct{}{}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for ch, e := range k.m {
		if _, ok := set[ch]; !ok && e.at.Before(since) && !pending(ch) {
			delete(k.m, ch)
		}
	}
}

// len is how many channels are remembered.
func (k *lastSeen) len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}
