package subscribe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sse-gateway/sse-gateway/internal/redisconn"
)

const (
	// shardLinger is how long a channel's shard subscription is kept after its last stream
	// here closed: a stream that reconnects at once (a drain, a lifetime close, an app back
	// from the background) finds it still there instead of churning SUNSUBSCRIBE/SSUBSCRIBE.
	shardLinger = 5 * time.Second
	// topologyMaxAge is how old the subscriber's picture of the cluster may get before it is
	// read again even though nothing failed (slots moved by an operator show up here).
	topologyMaxAge = 30 * time.Second
)

// sharded is the subscriber in sharded pub/sub mode (Redis 7 on a cluster): instead of one
// pattern subscription that receives every event of every channel, it holds an exact shard
// subscription (SSUBSCRIBE) for each channel that has a stream here, on the master that owns
// the channel's slot, over one connection per master. An event then travels only to the
// shard that owns its channel and to the gateways that stream it.
//
// One goroutine, run, owns the reconciliation: it compares the channels the hub has with
// the subscriptions held and subscribes, moves and drops them, and publishes each
// connection's probe. Each connection has a reader goroutine (started by run, waited for by
// run) that hands events to the mailbox and reports confirmations and failures.
//
// Lock order: sharded.mu, then clusterView.mu (ownerLocked, suspect); no network call is
// made with sharded.mu held.
type sharded struct {
	r    *Redis
	view *clusterView

	mu          sync.Mutex
	chans       map[string]*shardChan // guarded by mu: channels wanted or held
	nodes       map[string]*shardNode // guarded by mu: connections, by node address
	lastTopo    time.Time             // guarded by mu: last time CLUSTER NODES was read
	refreshAsap bool                  // guarded by mu: read the topology at the next pass
	resync      []string              // guarded by mu: channels to resync once confirmed

	kick  chan struct{} // capacity 1: reconcile now
	ready atomic.Bool   // set by run after each pass
	wg    sync.WaitGroup
}

// shardChan is one channel's shard subscription.
type shardChan struct {
	node      string        // the node it is subscribed (or being subscribed) on; "" none
	confirmed bool          // the node confirmed the subscription
	done      chan struct{} // closed when confirmed; replaced when it stops being
	idleSince time.Time     // when the hub was first seen without subscribers for it
	since     time.Time     // when it was last (re)subscribed or wanted
	lost      bool          // it was held and lost (node failed, slot moved): resync on confirm
}

// shardNode is one connection holding shard subscriptions on a master.
type shardNode struct {
	addr       string
	ps         *redis.PubSub
	probe      string       // its probe's shard channel, in a slot this node owns
	probeSlot  int          // that slot
	unanswered atomic.Int64 // like Redis.unanswered, for this connection's probe
	lastHeard  atomic.Int64 // like Redis.lastHeard
	dead       atomic.Bool  // failed: run closes it and moves its channels
}

func newSharded(r *Redis, view *clusterView) *sharded {
	return &sharded{r: r, view: view, chans: make(map[string]*shardChan),
		nodes: make(map[string]*shardNode), kick: make(chan struct{}, 1), refreshAsap: true}
}

func (s *sharded) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// await makes sure channels are subscribed and waits until their subscriptions are
// confirmed, or ctx ends; it returns the channels confirmed. Whatever is published after a
// confirmation reaches the hub, so a store lookup made after it misses nothing.
func (s *sharded) await(ctx context.Context, channels []string) []string {
	now := time.Now()
	waits := make([]chan struct{}, len(channels))
	s.mu.Lock()
	for i, ch := range channels {
		c := s.chans[ch]
		if c == nil {
			c = &shardChan{done: make(chan struct{})}
			s.chans[ch] = c
		}
		c.idleSince, c.since = time.Time{}, now
		if !c.confirmed {
			waits[i] = c.done
		}
	}
	s.mu.Unlock()
	s.wake()
	var ok []string
	for i, w := range waits {
		if w != nil {
			select {
			case <-w:
			case <-ctx.Done():
				continue
			}
		}
		ok = append(ok, channels[i])
	}
	return ok
}

// run reconciles until ctx is done, then closes every connection and waits for its reader.
func (s *sharded) run(ctx context.Context) {
	r := s.r
	defer func() {
		s.mu.Lock()
		for _, n := range s.nodes {
			_ = n.ps.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	}()
	t := time.NewTicker(r.cfg.ProbeInterval)
	defer t.Stop()
	for {
		s.reconcile(ctx)
		if chs := s.takeResync(); len(chs) > 0 {
			s.wg.Go(func() { r.resyncLoop(ctx, chs, nil) })
		}
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-t.C:
			s.probe(ctx)
		}
	}
}

// probe publishes each connection's probe through the cluster client, which routes it to
// the node that owns the probe's slot now: a connection on a node that no longer owns it,
// that froze or that left the cluster does not hear it, and is replaced.
func (s *sharded) probe(ctx context.Context) {
	s.mu.Lock()
	nodes := make([]*shardNode, 0, len(s.nodes))
	for _, n := range s.nodes {
		nodes = append(nodes, n)
	}
	s.mu.Unlock()
	for _, n := range nodes {
		sent := s.r.now()
		pctx, cancel := context.WithTimeout(ctx, s.r.cfg.ProbeInterval)
		err := s.r.client.SPublish(pctx, n.probe, strconv.FormatInt(time.Now().UnixNano(), 10)).Err()
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				s.r.probeLog.Log(slog.LevelWarn, "publishing a shard connection's probe failed", "node", n.addr, "err", err)
			}
			s.topologyChanged()
			continue
		}
		if n.unanswered.CompareAndSwap(0, sent) && n.lastHeard.Load() >= sent {
			n.unanswered.CompareAndSwap(sent, 0)
		}
	}
}

// silent reports why a connection is to be taken for dead, or "" (see Redis.silent).
func (s *sharded) silent(n *shardNode) string {
	now := s.r.now()
	if u := n.unanswered.Load(); u != 0 && time.Duration(now-u) > probeTimeouts*s.r.cfg.ProbeInterval {
		return fmt.Sprintf("a probe published %v ago has not come back", time.Duration(now-u).Round(time.Millisecond))
	}
	return ""
}

func (n *shardNode) heard(now int64) {
	n.lastHeard.Store(now)
	if u := n.unanswered.Load(); u != 0 && u <= now {
		n.unanswered.CompareAndSwap(u, 0)
	}
}

// topologyChanged asks for the cluster to be read again at the next pass, at once.
func (s *sharded) topologyChanged() {
	s.mu.Lock()
	s.refreshAsap = true
	s.mu.Unlock()
	s.wake()
}

// shardOp is one SSUBSCRIBE or SUNSUBSCRIBE of channels of one slot on one node.
type shardOp struct {
	node      *shardNode
	subscribe bool
	channels  []string // without the prefix
}

// reconcile is one pass: read the topology if due, drop dead connections, forget channels
// idle for shardLinger, (re)subscribe every wanted channel on its slot's owner, close
// connections left without channels, and start the resyncs of channels that were lost.
func (s *sharded) reconcile(ctx context.Context) {
	r := s.r
	now := time.Now()
	s.mu.Lock()
	refresh := s.refreshAsap || s.lastTopo.IsZero() || now.Sub(s.lastTopo) > topologyMaxAge
	s.mu.Unlock()
	if refresh {
		if err := s.view.refresh(ctx); err != nil {
			if ctx.Err() == nil {
				r.probeLog.Log(slog.LevelWarn, "reading the cluster topology failed", "err", err)
			}
		} else {
			s.mu.Lock()
			s.lastTopo, s.refreshAsap = now, false
			s.mu.Unlock()
		}
	}
	live := map[string]bool{}
	for _, ch := range r.hub.Channels() {
		live[ch] = true
	}

	var ops []shardOp
	var closing []*shardNode
	s.mu.Lock()
	// Hub channels held by no subscription (a safety net: streams ask for theirs through
	// await): hold them too, with a resync, as they have subscribers.
	for ch := range live {
		if s.chans[ch] == nil {
			s.chans[ch] = &shardChan{done: make(chan struct{}), since: now, lost: true}
		}
	}
	// Dead or silent connections: their channels are lost and move.
	for addr, n := range s.nodes {
		why := s.silent(n)
		if !n.dead.Load() && why == "" {
			continue
		}
		if why != "" {
			r.log.Warn("shard connection silent; replacing it", "node", addr, "why", why)
		}
		s.view.suspect(addr)
		s.refreshAsap = true
		closing = append(closing, n)
		delete(s.nodes, addr)
		r.metrics.shardNodeUp.DeleteLabelValues(addr)
		for _, c := range s.chans {
			if c.node == addr {
				s.loseLocked(c)
			}
		}
	}
	// Channels: drop the idle, place the wanted.
	batches := map[string]map[int][]string{} // node -> slot -> channels to subscribe
	for ch, c := range s.chans {
		if live[ch] {
			c.idleSince = time.Time{}
		} else if c.idleSince.IsZero() {
			c.idleSince = now
		}
		owner, slot, known := s.ownerLocked(ch)
		if !c.idleSince.IsZero() && now.Sub(c.idleSince) >= shardLinger && now.Sub(c.since) >= shardLinger {
			if n := s.nodes[c.node]; n != nil && c.node != "" {
				ops = append(ops, shardOp{node: n, channels: []string{ch}})
			}
			delete(s.chans, ch)
			continue
		}
		if !known {
			// No healthy master serves its slot (a failover under way): read the
			// cluster again at the next pass until one does.
			s.refreshAsap = true
			continue
		}
		if c.node == owner {
			continue
		}
		if n := s.nodes[c.node]; n != nil && c.node != "" {
			ops = append(ops, shardOp{node: n, channels: []string{ch}}) // it moved away
			if c.confirmed {
				c.lost = true
			}
		}
		c.node, c.confirmed = owner, false
		if isClosed(c.done) {
			c.done = make(chan struct{})
		}
		if batches[owner] == nil {
			batches[owner] = map[int][]string{}
		}
		batches[owner][slot] = append(batches[owner][slot], ch)
	}
	// Connections for the nodes that get channels; connections left without any close.
	used := map[string]bool{}
	for _, c := range s.chans {
		if c.node != "" {
			used[c.node] = true
		}
	}
	var opening []string
	for addr := range batches {
		if s.nodes[addr] == nil {
			opening = append(opening, addr)
		}
	}
	for addr, n := range s.nodes {
		if !used[addr] {
			closing = append(closing, n)
			delete(s.nodes, addr)
			r.metrics.shardNodeUp.DeleteLabelValues(addr)
		}
	}
	// Closing a connection drops its subscriptions: an SUNSUBSCRIBE on it would fail (and
	// be logged as a failure).
	ops = slices.DeleteFunc(ops, func(op shardOp) bool { return slices.Contains(closing, op.node) })
	// Channels dropped or lost at this pass are no longer held; the confirmations keep the
	// gauge up to date otherwise.
	r.metrics.shardSubs.Set(float64(s.confirmedLocked()))
	s.mu.Unlock()

	for _, n := range closing {
		_ = n.ps.Close()
	}
	for _, addr := range opening {
		n, err := s.open(ctx, addr)
		s.mu.Lock()
		if err != nil {
			// Its channels wait for the next pass, after a topology refresh.
			for _, c := range s.chans {
				if c.node == addr {
					c.node = ""
				}
			}
			s.refreshAsap = true
			s.mu.Unlock()
			s.view.suspect(addr)
			if ctx.Err() == nil {
				r.log.Warn("opening a shard connection failed", "node", addr, "err", err)
			}
			delete(batches, addr)
			continue
		}
		s.nodes[addr] = n
		s.mu.Unlock()
	}
	s.mu.Lock()
	for addr, slots := range batches {
		n := s.nodes[addr]
		if n == nil {
			continue
		}
		for _, chs := range slots {
			ops = append(ops, shardOp{node: n, subscribe: true, channels: chs})
		}
	}
	s.mu.Unlock()

	for _, op := range ops {
		s.send(ctx, op)
	}
	s.updateReady(now)
}

// loseLocked marks a channel's subscription lost: it is placed again at this pass and
// resynchronised once confirmed.
func (s *sharded) loseLocked(c *shardChan) {
	if c.confirmed || c.node != "" {
		c.lost = true
	}
	c.node, c.confirmed = "", false
	if isClosed(c.done) {
		c.done = make(chan struct{})
	}
}

func (s *sharded) wakeLocked() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// ownerLocked is the master that owns channel's slot, by the last topology read.
func (s *sharded) ownerLocked(channel string) (addr string, slot int, ok bool) {
	slot = redisconn.Slot(s.r.channelPrefix + channel)
	addr, ok = s.view.owner(slot)
	return addr, slot, ok
}

// send makes one SSUBSCRIBE or SUNSUBSCRIBE; the node's answer comes to its reader. A
// failed write fails the connection.
func (s *sharded) send(ctx context.Context, op shardOp) {
	full := make([]string, len(op.channels))
	for i, ch := range op.channels {
		full[i] = s.r.channelPrefix + ch
	}
	s.r.log.Debug("shard subscription", "node", op.node.addr, "subscribe", op.subscribe, "channels", op.channels)
	var err error
	if op.subscribe {
		err = op.node.ps.SSubscribe(ctx, full...)
		s.r.metrics.shardOps.WithLabelValues("subscribe").Inc()
	} else {
		err = op.node.ps.SUnsubscribe(ctx, full...)
		s.r.metrics.shardOps.WithLabelValues("unsubscribe").Inc()
	}
	if err != nil && ctx.Err() == nil {
		s.r.log.Warn("shard subscription command failed", "node", op.node.addr, "subscribe", op.subscribe, "err", err)
		op.node.dead.Store(true)
		s.wake()
	}
}

// open connects to a master, subscribes its probe channel and starts its reader.
func (s *sharded) open(ctx context.Context, addr string) (*shardNode, error) {
	slot, ok := s.view.someSlot(addr)
	if !ok {
		return nil, errors.New("the node serves no slot")
	}
	tag := probeTag(slot)
	n := &shardNode{addr: addr, probe: s.r.probeChannel + ".{" + tag + "}", probeSlot: slot}
	n.ps = s.view.client(addr).SSubscribe(ctx, n.probe)
	n.heard(s.r.now())
	s.wg.Go(func() { s.read(ctx, n) })
	s.r.metrics.shardNodeUp.WithLabelValues(addr).Set(1)
	return n, nil
}

// probeTag returns a hash tag whose slot is slot: "p<N>" for the first N that hashes there.
func probeTag(slot int) string {
	for i := 0; ; i++ {
		tag := "p" + strconv.Itoa(i)
		if redisconn.Slot(tag) == slot {
			return tag
		}
	}
}

// read is a connection's reader: events to the mailbox, confirmations and failures to the
// channels' state. It returns when the connection is closed or fails.
func (s *sharded) read(ctx context.Context, n *shardNode) {
	r := s.r
	for {
		msg, err := n.ps.ReceiveTimeout(ctx, r.cfg.ProbeInterval)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, redis.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if slot, ok := movedSlot(err); ok {
				// A channel of that slot went to a node that does not own it (the slot
				// moved between our topology read and the command): place it again.
				s.slotMoved(n, slot)
				continue
			}
			if !n.dead.Load() {
				if strings.Contains(err.Error(), "unknown command") {
					r.log.Error("sharded pub/sub needs Redis 7 or later (SSUBSCRIBE)", "node", n.addr, "err", err)
				} else {
					r.log.Warn("shard connection failed", "node", n.addr, "err", err)
				}
			}
			n.dead.Store(true)
			s.wake()
			return
		}
		now := r.now()
		n.heard(now)
		switch m := msg.(type) {
		case *redis.Message:
			if m.Channel == n.probe {
				r.probeArrived(m.Payload, time.Now())
				continue
			}
			r.handle(m)
		case *redis.Subscription:
			s.subscription(n, m)
		}
	}
}

// subscription applies a confirmation, or an unsubscription the node made by itself (its
// slot moved away), to the channel's state.
func (s *sharded) subscription(n *shardNode, m *redis.Subscription) {
	ch, ok := strings.CutPrefix(m.Channel, s.r.channelPrefix)
	if !ok || m.Channel == n.probe {
		return
	}
	s.r.log.Debug("shard subscription answer", "node", n.addr, "kind", m.Kind, "channel", ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.chans[ch]
	switch m.Kind {
	case "ssubscribe":
		if c == nil || c.node != n.addr {
			return // dropped or moved meanwhile; its SUNSUBSCRIBE is on its way
		}
		if c.confirmed {
			// A second confirmation: go-redis reconnected and subscribed again by itself,
			// and events may have been lost in between.
			c.lost = true
		}
		c.confirmed = true
		if !isClosed(c.done) {
			close(c.done)
		}
		if c.lost {
			c.lost = false
			s.resync = append(s.resync, ch)
			s.wakeLocked()
		}
		s.r.metrics.shardSubs.Set(float64(s.confirmedLocked()))
	case "sunsubscribe":
		if c == nil || c.node != n.addr {
			return // one we asked for
		}
		// The node dropped it: its slot moved (a reshard) or the node lost it.
		s.loseLocked(c)
		s.refreshAsap = true
		s.wakeLocked()
		s.r.metrics.shardSubs.Set(float64(s.confirmedLocked()))
	}
}

// slotMoved handles a MOVED answer on n: the channels of slot placed there are placed again
// after a topology refresh.
func (s *sharded) slotMoved(n *shardNode, slot int) {
	s.mu.Lock()
	for ch, c := range s.chans {
		if c.node == n.addr && redisconn.Slot(s.r.channelPrefix+ch) == slot {
			s.loseLocked(c)
		}
	}
	s.refreshAsap = true
	s.mu.Unlock()
	s.wake()
}

func (s *sharded) confirmedLocked() int {
	n := 0
	for _, c := range s.chans {
		if c.confirmed {
			n++
		}
	}
	return n
}

// takeResync returns the channels to resync, and forgets them.
func (s *sharded) takeResync() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.resync
	s.resync = nil
	return out
}

// updateReady: ready once the cluster was read, while every connection hears its probes
// and every channel wanted for more than three probe intervals is confirmed.
func (s *sharded) updateReady(now time.Time) {
	grace := probeTimeouts * s.r.cfg.ProbeInterval
	s.mu.Lock()
	ready := !s.lastTopo.IsZero()
	for _, n := range s.nodes {
		if n.dead.Load() || s.silent(n) != "" {
			ready = false
		}
	}
	for _, c := range s.chans {
		if !c.confirmed && c.idleSince.IsZero() && now.Sub(c.since) > grace {
			ready = false
		}
	}
	s.mu.Unlock()
	s.ready.Store(ready)
}

// movedSlot reads the slot of a MOVED or ASK error.
func movedSlot(err error) (int, bool) {
	var re redis.Error
	if !errors.As(err, &re) {
		return 0, false
	}
	f := strings.Fields(re.Error())
	if len(f) < 2 || (f[0] != "MOVED" && f[0] != "ASK") {
		return 0, false
	}
	slot, e := strconv.Atoi(f[1])
	return slot, e == nil
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
