// Package hub is the fan-out core: it maps channels to subscriptions and hands every new
// message of a channel to each of that channel's subscriptions, newest-only and in version
// order. It knows nothing of HTTP, Redis or the wire format; connections plug in as Sinks.
package hub

import (
	"hash/maphash"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Version orders the messages of one channel. Time is the publisher's lastModified (epoch
// ms); Tie breaks ties the same way on every instance (a hash of the ETag).
type Version struct {
	Time int64
	Tie  uint32
}

// Less reports whether v is older than o.
func (v Version) Less(o Version) bool {
	return v.Time < o.Time || (v.Time == o.Time && v.Tie < o.Tie)
}

// IsZero reports whether v is the zero version, which is older than every real one.
func (v Version) IsZero() bool { return v == Version{} }

// Message is one event on one channel, encoded once and shared read-only by every
// subscriber: nothing may modify Frame or Chunk after Publish.
type Message struct {
	// Channel is the channel the message belongs to.
	Channel string
	// Version orders this message among the channel's messages.
	Version Version
	// ID is the SSE id the frame carries.
	ID string
	// Frame is the complete SSE frame.
	Frame []byte
	// Chunk is Frame wrapped as one HTTP/1.1 chunk, precomputed so that streams written
	// outside net/http can write it without copying.
	Chunk []byte
	// Received is when the gateway got the message from its broker; fan-out latency is
	// measured from it.
	Received time.Time
	// LastModified is the publisher's timestamp; event age at delivery is measured from it.
	LastModified time.Time
}

// Sink is the connection side of a subscription.
//
// Offer hands the sink the newest message of its idx-th channel. It is called with that
// channel's lock held, on the publisher's goroutine, so it must never block: a sink that
// cannot write now keeps only the newest message per channel for later (invalidations are
// idempotent) and never copies m's bytes.
type Sink interface {
	Offer(idx int, m *Message)
}

// Config tunes a Hub. The zero value is ready to use.
type Config struct {
	// Shards is the number of channel-map shards (default 64).
	Shards int
	// ParallelFanout is the subscriber count from which one publish is split across the
	// worker goroutines (default 4096). Below it the publisher's goroutine does all the work,
	// which is cheaper than a hand-off.
	ParallelFanout int
	// Workers is the number of fan-out worker goroutines (default GOMAXPROCS).
	Workers int
	// LabelChannel reports whether a channel may appear as a metric label value
	// (sse_gateway_channel_*). Nil labels none: channel names are unbounded, so an operator
	// opts channels in explicitly.
	LabelChannel func(channel string) bool
	// MaxLabeledChannels bounds how many channels have per-channel series at a time
	// (default 1000): a wildcard in the allow-list lets clients choose channel names. A
	// channel created while the bound is reached has none for its life; a channel's series
	// are deleted when its last subscription goes.
	MaxLabeledChannels int
}

// Hub routes messages to subscriptions. All methods are safe for concurrent use.
//
// Goroutines: Publish and Seed run on the caller's goroutine (a broker's dispatcher, a
// stream handler seeding a channel) and do the fan-out there, helped for large channels by
// Workers worker goroutines that New starts and Close waits for.
//
// Lock order: a shard's mu and a channel's mu are never held together (Subscribe and
// Unsubscribe take one, release it, then take the other). A channel's mu is held for a whole
// fan-out, and Sink.Offer is called under it, so a sink may take its own lock (and, below
// it, locks of its own), but must never call back into the hub.
type Hub struct {
	// Set by New, then read-only.
	seed    maphash.Seed
	shards  []shard
	cfg     Config
	tasks   chan task // publisher -> workers: parts of a large fan-out
	metrics *metrics
	closed  chan struct{} // closed by Close: the workers return

	wg   sync.WaitGroup // the workers
	once sync.Once      // Close

	labeled atomic.Int64 // channels that have per-channel series now
}

type shard struct {
	mu    sync.RWMutex
	chans map[string]*channel // guarded by mu
}

// channel holds one channel's subscriptions. mu is held by Publish for a whole fan-out, which
// is what makes per-channel delivery ordered without any per-subscriber lock.
type channel struct {
	name    string // immutable
	refs    int    // guarded by the shard's mu: subscriptions registered or registering
	labeled bool   // immutable: per-channel metrics are kept for it

	mu     sync.Mutex
	slots  []slot   // guarded by mu: one per subscription
	latest *Message // guarded by mu: the newest message published or seeded
	seeded bool     // guarded by mu: the store was asked for this channel's latest (or a message arrived)
}

type slot struct {
	sub *Subscription
	idx int
}

// Subscription is one sink's registration on a set of channels.
type Subscription struct {
	sink Sink // immutable
	// on[i] is the subscription to its i-th channel: one slice, not one per field, which
	// saves two allocations per subscribe and 48 bytes per stream.
	on   []membership
	gone atomic.Bool // set by the first Unsubscribe
	// fromNow: the sink takes what is published after it subscribed, not the newest
	// message the hub holds or the store seeds at its subscription. Immutable.
	fromNow bool
}

// membership is a subscription's place on one channel.
type membership struct {
	ch   *channel // set by Subscribe; cleared by Unsubscribe
	pos  int      // guarded by ch.mu: the subscription's index in ch.slots
	sent Version  // guarded by ch.mu: the newest version offered on ch
}

type task struct {
	slots []slot
	m     *Message
	done  *sync.WaitGroup
}

// New starts a Hub and its fan-out workers; Close stops them.
func New(cfg Config, reg prometheus.Registerer) *Hub {
	if cfg.Shards <= 0 {
		cfg.Shards = 64
	}
	if cfg.ParallelFanout <= 0 {
		cfg.ParallelFanout = 4096
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.MaxLabeledChannels <= 0 {
		cfg.MaxLabeledChannels = 1000
	}
	h := &Hub{
		seed:    maphash.MakeSeed(),
		shards:  make([]shard, cfg.Shards),
		cfg:     cfg,
		tasks:   make(chan task, cfg.Workers),
		metrics: newMetrics(reg),
		closed:  make(chan struct{}),
	}
	for i := range h.shards {
		h.shards[i].chans = make(map[string]*channel)
	}
	h.metrics.channels = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "channels",
		Help: "Channels with at least one subscription on this instance.",
	}, func() float64 { return float64(len(h.Channels())) })
	if reg != nil {
		reg.MustRegister(h.metrics.channels)
	}
	h.wg.Add(cfg.Workers)
	for range cfg.Workers {
		go h.worker()
	}
	return h
}

// Close stops the fan-out workers. Publish must not be called after Close.
func (h *Hub) Close() {
	h.once.Do(func() {
		close(h.closed)
		h.wg.Wait()
	})
}

func (h *Hub) worker() {
	defer h.wg.Done()
	for {
		select {
		case t := <-h.tasks:
			deliver(t.slots, t.m)
			t.done.Done()
		case <-h.closed:
			return
		}
	}
}

func (h *Hub) shard(name string) *shard {
	return &h.shards[maphash.String(h.seed, name)%uint64(len(h.shards))]
}

// Subscribe registers sink on channels and offers it, for each channel, the newest message
// the hub holds if that is newer than floor (the version the client says it has seen; zero
// for a fresh client). It returns the indexes of channels whose newest message the hub has
// never looked up, so the caller can fetch it from the store and call Seed.
func (h *Hub) Subscribe(sink Sink, channels []string, floor Version) (*Subscription, []int) {
	return h.subscribe(sink, channels, floor, false)
}

// SubscribeFromNow registers sink on channels for what is published from now on: the newest
// message the hub holds is not offered, nor the one a Seed brings for a channel while this
// subscription has been offered nothing on it (a store lookup answering after it
// subscribed). Like Subscribe, it returns the channels to seed: the hub still needs their
// newest message to order what comes next.
func (h *Hub) SubscribeFromNow(sink Sink, channels []string) (*Subscription, []int) {
	return h.subscribe(sink, channels, Version{}, true)
}

func (h *Hub) subscribe(sink Sink, channels []string, floor Version, fromNow bool) (*Subscription, []int) {
	s := &Subscription{
		sink:    sink,
		on:      make([]membership, len(channels)),
		fromNow: fromNow,
	}
	var unseeded []int
	for i, name := range channels {
		sh := h.shard(name)
		sh.mu.Lock()
		ch := sh.chans[name]
		if ch == nil {
			ch = &channel{name: name, labeled: h.labelNew(name)}
			sh.chans[name] = ch
		}
		ch.refs++
		sh.mu.Unlock()

		ch.mu.Lock()
		s.on[i] = membership{ch: ch, pos: len(ch.slots), sent: floor}
		ch.slots = append(ch.slots, slot{sub: s, idx: i})
		if ch.labeled {
			h.metrics.chanSubs.WithLabelValues(name).Inc()
		}
		if !ch.seeded {
			unseeded = append(unseeded, i)
		}
		if m := ch.latest; m != nil && floor.Less(m.Version) {
			s.on[i].sent = m.Version
			if !fromNow {
				sink.Offer(i, m)
			}
		}
		ch.mu.Unlock()
	}
	h.metrics.subscriptions.Inc()
	return s, unseeded
}

// labelNew reports whether a channel being created gets per-channel series: the policy
// allows its name and fewer than MaxLabeledChannels channels have them. The caller holds
// the channel's shard lock.
func (h *Hub) labelNew(name string) bool {
	if h.cfg.LabelChannel == nil || !h.cfg.LabelChannel(name) {
		return false
	}
	if h.labeled.Add(1) > int64(h.cfg.MaxLabeledChannels) {
		h.labeled.Add(-1)
		return false
	}
	return true
}

// Unsubscribe removes s from all its channels. It is idempotent.
func (h *Hub) Unsubscribe(s *Subscription) {
	if s == nil || s.gone.Swap(true) {
		return
	}
	for i := range s.on {
		ch := s.on[i].ch
		if ch == nil {
			continue
		}
		ch.mu.Lock()
		p := s.on[i].pos
		last := len(ch.slots) - 1
		moved := ch.slots[last]
		ch.slots[p] = moved
		moved.sub.on[moved.idx].pos = p
		ch.slots[last] = slot{}
		ch.slots = ch.slots[:last]
		if cap(ch.slots) > 64 && len(ch.slots) < cap(ch.slots)/4 {
			// Give back the memory of a channel that lost most of its subscribers.
			ch.slots = append(make([]slot, 0, cap(ch.slots)/2), ch.slots...)
		}
		if ch.labeled {
			h.metrics.chanSubs.WithLabelValues(ch.name).Dec()
		}
		ch.mu.Unlock()
		s.on[i].ch = nil

		sh := h.shard(ch.name)
		sh.mu.Lock()
		ch.refs--
		if ch.refs == 0 && sh.chans[ch.name] == ch {
			delete(sh.chans, ch.name)
			if ch.labeled {
				// Under the shard lock: a channel of the same name created after this
				// starts its series afresh, never has them deleted under it.
				h.metrics.chanSubs.DeleteLabelValues(ch.name)
				h.metrics.chanEvents.DeleteLabelValues(ch.name)
				h.labeled.Add(-1)
			}
		}
		sh.mu.Unlock()
	}
	h.metrics.subscriptions.Dec()
}

// Publish offers m to every subscription of its channel that has not yet been offered m's
// version or a newer one, and reports the channel's subscription count (0 when dropped). A message that is not newer
// than the channel's newest (a redelivery, a replay, a publisher that lost a race) is
// dropped, so subscribers never see a channel's versions go backwards.
func (h *Hub) Publish(m *Message) int {
	return h.publish(m, false)
}

// Seed records that the store was asked for channel's newest message and publishes m if
// the store had one (m may be nil).
func (h *Hub) Seed(channel string, m *Message) int {
	if m == nil {
		sh := h.shard(channel)
		sh.mu.RLock()
		ch := sh.chans[channel]
		sh.mu.RUnlock()
		if ch != nil {
			ch.mu.Lock()
			ch.seeded = true
			ch.mu.Unlock()
		}
		return 0
	}
	return h.publish(m, true)
}

func (h *Hub) publish(m *Message, seed bool) int {
	sh := h.shard(m.Channel)
	sh.mu.RLock()
	ch := sh.chans[m.Channel]
	sh.mu.RUnlock()
	if ch == nil {
		return 0
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if seed {
		ch.seeded = true
	}
	if ch.latest != nil && !ch.latest.Version.Less(m.Version) {
		if ch.latest.Version == m.Version {
			h.metrics.drops[DropDuplicate].Inc()
		} else {
			h.metrics.drops[DropStale].Inc()
		}
		return 0
	}
	ch.latest = m
	ch.seeded = true
	if seed {
		// What the store had when a stream subscribed is no news to a subscription that
		// asked for what comes from now on and has been offered nothing on this channel.
		for _, sl := range ch.slots {
			if on := &sl.sub.on[sl.idx]; sl.sub.fromNow && on.sent.IsZero() {
				on.sent = m.Version
			}
		}
	}
	if ch.labeled && len(ch.slots) > 0 {
		// Only while it has subscribers: a publish racing the last unsubscribe must not
		// bring back the series that unsubscribe deletes. Before the writes, so that a
		// client that has the event finds it counted.
		h.metrics.chanEvents.WithLabelValues(ch.name).Inc()
	}
	n := h.fanoutLocked(ch.slots, m)
	if !m.Received.IsZero() {
		h.metrics.fanout.Observe(time.Since(m.Received).Seconds())
	}
	return n
}

// fanoutLocked splits large channels across the workers; the publisher's goroutine takes a
// share too, so a busy pool slows a publish down but never deadlocks it.
func (h *Hub) fanoutLocked(slots []slot, m *Message) int {
	n := len(slots)
	if n < h.cfg.ParallelFanout || h.cfg.Workers < 2 {
		deliver(slots, m)
		return n
	}
	parts := h.cfg.Workers + 1
	size := (n + parts - 1) / parts
	var done sync.WaitGroup
	for start := size; start < n; start += size {
		end := min(start+size, n)
		done.Add(1)
		select {
		case h.tasks <- task{slots: slots[start:end], m: m, done: &done}:
		default:
			deliver(slots[start:end], m)
			done.Done()
		}
	}
	deliver(slots[:min(size, n)], m)
	done.Wait()
	return n
}

// deliver is the per-subscriber hot loop: no allocation, no lock, one interface call.
func deliver(slots []slot, m *Message) {
	for _, sl := range slots {
		s := sl.sub
		on := &s.on[sl.idx]
		if !on.sent.Less(m.Version) {
			continue
		}
		on.sent = m.Version
		s.sink.Offer(sl.idx, m)
	}
}

// Busy reports whether any of channels is locked now, nearly always by a fan-out in progress:
// a subscription to them made now would wait for it, which on a large channel takes a while.
// A caller that must not wait (one accepting connections) subscribes elsewhere then. It asks
// the lock (TryLock) rather than have every publish count itself.
func (h *Hub) Busy(channels []string) bool {
	for _, name := range channels {
		sh := h.shard(name)
		sh.mu.RLock()
		ch := sh.chans[name]
		sh.mu.RUnlock()
		if ch == nil {
			continue
		}
		if !ch.mu.TryLock() {
			return true
		}
		ch.mu.Unlock()
	}
	return false
}

// Latest returns the newest message the hub holds for channel, or nil.
func (h *Hub) Latest(channel string) *Message {
	sh := h.shard(channel)
	sh.mu.RLock()
	ch := sh.chans[channel]
	sh.mu.RUnlock()
	if ch == nil {
		return nil
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.latest
}

// Channels lists the channels that have at least one subscription, for resynchronising them
// with the store after a broker outage.
func (h *Hub) Channels() []string {
	var out []string
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for name := range sh.chans {
			out = append(out, name)
		}
		sh.mu.RUnlock()
	}
	return out
}
