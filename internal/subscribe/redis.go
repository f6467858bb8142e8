package subscribe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/internal/backoff"
	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/store"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// Hub is what a broker feeds. *hub.Hub satisfies it.
type Hub interface {
	// Publish offers m to the channel's subscribers unless the hub has it or a newer one.
	Publish(m *hub.Message) int
	// Seed records that the store was asked for channel's newest message (m, maybe nil).
	Seed(channel string, m *hub.Message) int
	// Channels lists the channels that have subscribers.
	Channels() []string
}

var _ Hub = (*hub.Hub)(nil)

const (
	// dispatchers is the number of goroutines moving events from the mailbox to the hub
	// and the store; dispatchBatch is how many channels one takes at a time, stored in
	// one pipeline.
	dispatchers   = 4
	dispatchBatch = 64
	// resyncBatch is how many GETs (or write-backs) go in one resync pipeline.
	resyncBatch = 500
	// storeTimeout bounds one store pipeline.
	storeTimeout = 5 * time.Second
	// pruneInterval is how often lastSeen forgets the channels nobody here subscribes to
	// and whose event is stored: an entry of such a channel lives one to two intervals.
	pruneInterval = 10 * time.Second
	// probeTimeouts is how many probe intervals a published probe may take to come back
	// before the subscription is declared dead.
	probeTimeouts = 3
	// unprovenTimeouts is how many probe intervals the subscription may go without hearing
	// anything, while no probe could even be published (Redis unreachable), before it is
	// replaced and the instance is not ready.
	unprovenTimeouts = 5 * probeTimeouts
)

var (
	errProbeTimeout   = errors.New("liveness probe did not come back")
	errConfirmTimeout = errors.New("psubscribe was not confirmed")
	errUnsubscribed   = errors.New("subscription changed under the reader")
)

// Redis is the subscriber of a cluster of gateways: it subscribes to the config service's
// channels, feeds the hub, stores every event it receives as its channel's latest (so that
// whichever instance sees an event first stores it), and answers streams' lookups of a
// channel's latest. See the package documentation for the reconnect, resync and lost-data
// policies.
type Redis struct {
	// Set by NewRedis, then read-only.
	client        redis.UniversalClient
	store         *store.Redis
	hub           Hub
	cfg           Config
	log           *slog.Logger
	metrics       *metrics
	channelPrefix string    // the store's pub/sub prefix
	pattern       string    // the PSUBSCRIBE argument: channelPrefix, glob-escaped, + "*"
	probeChannel  string    // the Redis channel of this instance's probe
	noticeChannel string    // the store's stored notices (store.SaveNotify)
	epoch         time.Time // monotonic origin of lastHeard

	mailbox  *mailbox  // read loop -> dispatchers; safe for concurrent use
	lastSeen *lastSeen // safe for concurrent use
	seeder   *seeder   // streams -> store lookups; safe for concurrent use
	writer   *writer   // dispatchers -> store writes; safe for concurrent use

	// Readiness. Each subscription (session) has a generation number. liveGen is the
	// generation of the confirmed current subscription (0: none), set and cleared by the
	// read loop; syncedGen is the generation whose resync finished, set by that resync's
	// goroutine, which may outlive its subscription (a read in flight cannot be
	// interrupted), hence the generations. lastHeard (nanoseconds since epoch) is set by the
	// read loop whenever anything arrives on the subscription: the confirmation, an event,
	// any probe. The instance's own probe makes sure something arrives every interval.
	// unanswered (nanoseconds since epoch; 0: none) is when the oldest probe that was
	// published and has not been answered by anything arriving since was sent: set by the
	// probe loop, cleared by the read loop. Only a probe that was really published proves a
	// silent subscription dead; one that could not be published (its node failing) proves
	// nothing, and replacing a working subscription for it would lose events.
	sessions   atomic.Uint64
	liveGen    atomic.Uint64
	syncedGen  atomic.Uint64
	lastHeard  atomic.Int64
	unanswered atomic.Int64

	probeNow chan struct{} // read loop -> probe loop: probe at once (new subscription)
	running  atomic.Bool   // Run was called

	// cluster is set (at construction) when client is a Redis Cluster client: the
	// subscriber then picks the node of its subscription itself. subNode is that node's
	// address while a session holds one (nil otherwise), written by the session and read
	// by the probe loop.
	cluster *clusterView
	subNode atomic.Pointer[string]
	// sharded is set (at construction) in sharded pub/sub mode (Config.Sharded on a
	// cluster): it replaces the pattern subscription's sessions.
	sharded *sharded

	malformedLog *logLimiter
	storeLog     *logLimiter
	probeLog     *logLimiter

	// Reconnect backoff: full jitter between 0 and backoffMin doubled per failed attempt,
	// at most backoffMax. Fields, not constants, so tests can shorten them.
	backoffMin, backoffMax time.Duration
}

// NewRedis returns a subscriber reading through client (a *redis.Client or a
// *redis.ClusterClient) the channels of st, which it stores events in, feeding h. Its metrics
// are registered on reg (nil: not registered). It does nothing until Run.
func NewRedis(client redis.UniversalClient, st *store.Redis, h Hub, cfg Config, log *slog.Logger, reg prometheus.Registerer) *Redis {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "redis")
	r := &Redis{
		client:        client,
		store:         st,
		hub:           h,
		cfg:           cfg,
		log:           log,
		metrics:       newMetrics(reg),
		channelPrefix: st.ChannelPrefix(),
		pattern:       escapeGlob(st.ChannelPrefix()) + "*",
		probeChannel:  st.ChannelPrefix() + "_probe." + cfg.InstanceID,
		noticeChannel: st.NoticeChannel(),
		epoch:         time.Now(),
		mailbox:       newMailbox(),
		lastSeen:      newLastSeen(),
		probeNow:      make(chan struct{}, 1),
		malformedLog:  newLogLimiter(log, time.Second),
		storeLog:      newLogLimiter(log, time.Second),
		probeLog:      newLogLimiter(log, time.Second),
		backoffMin:    100 * time.Millisecond,
		// At most 2s: a Sentinel failover takes about that, and a subscriber that backed
		// off further would come back later than the publishers do.
		backoffMax: 2 * time.Second,
	}
	if cc, ok := client.(*redis.ClusterClient); ok {
		r.cluster = newClusterView(cc)
		if st.Sharded() {
			r.sharded = newSharded(r, r.cluster)
		}
	}
	r.seeder = newSeeder(r)
	spread := cfg.WriteBackSpread
	if r.cluster != nil {
		// On a Redis Cluster every instance writes at once, as before issue 12. In sharded
		// mode no instance hears stored notices. In classic mode each notice is a PUBLISH
		// the cluster bus carries to every node, which cost more than the writes it saved:
		// with 3 gateways on a 3+3 cluster, 10 bus messages (23.5 KB) per raw event instead
		// of 5 (12 KB) and more Redis and gateway CPU, for 1.3 script runs instead of 3
		// (go run ./loadtest/cmd/pubsubcmp, docs/PERFORMANCE.md "Sharded pub/sub").
		spread = 0
	}
	r.writer = newWriter(r, spread)
	return r
}

// escapeGlob quotes the characters PSUBSCRIBE patterns treat specially.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Ready reports whether the subscription is confirmed on a live connection, the resync
// after it is done, and it is not silent (see silent).
func (r *Redis) Ready() bool {
	if r.sharded != nil {
		return r.sharded.ready.Load()
	}
	live := r.liveGen.Load()
	if live == 0 || r.syncedGen.Load() != live {
		return false
	}
	return r.silent() == ""
}

// silent says why the subscription is to be taken for dead, or "": a published probe has
// not come back for probeTimeouts intervals, or nothing at all arrived for unprovenTimeouts
// intervals (no probe could be published meanwhile).
func (r *Redis) silent() string {
	now := r.now()
	if u := r.unanswered.Load(); u != 0 && time.Duration(now-u) > probeTimeouts*r.cfg.ProbeInterval {
		return fmt.Sprintf("a probe published %v ago has not come back", time.Duration(now-u).Round(time.Millisecond))
	}
	if since := time.Duration(now - r.lastHeard.Load()); since > unprovenTimeouts*r.cfg.ProbeInterval {
		return fmt.Sprintf("nothing arrived for %v and no probe could be published", since.Round(time.Millisecond))
	}
	return ""
}

// now is the time since epoch, on the monotonic clock.
func (r *Redis) now() int64 { return int64(time.Since(r.epoch)) }

// markHeard records that something arrived on the subscription: every probe published
// before now is answered. (Stored before the check, as probeSent stores before its own:
// whichever runs second sees the other's write.)
func (r *Redis) markHeard() {
	now := r.now()
	r.lastHeard.Store(now)
	if u := r.unanswered.Load(); u != 0 && u <= now {
		r.unanswered.CompareAndSwap(u, 0)
	}
}

// probeSent records a probe published at sent (time since epoch): it is unanswered unless
// something arrived since.
func (r *Redis) probeSent(sent int64) {
	if r.unanswered.CompareAndSwap(0, sent) && r.lastHeard.Load() >= sent {
		r.unanswered.CompareAndSwap(sent, 0)
	}
}

// Run subscribes and keeps the subscription alive until ctx is done, re-subscribing (with
// backoff and jitter) after any error, and then returns nil. Every goroutine it starts has
// returned when it returns. It must be called once.
func (r *Redis) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("subscribe: Run called twice")
	}
	var wg sync.WaitGroup
	for range dispatchers {
		wg.Go(func() { r.dispatch(ctx) })
	}
	wg.Go(func() { r.probeLoop(ctx) })
	wg.Go(func() { r.seeder.run(ctx) })
	wg.Go(func() { r.writer.run(ctx) })
	defer func() {
		r.mailbox.close()
		wg.Wait()
		if r.cluster != nil {
			r.cluster.close()
		}
	}()

	if r.sharded != nil {
		r.sharded.run(ctx)
		return nil
	}
	avoid := "" // the cluster node the last session failed on
	for attempt := 0; ; attempt++ {
		wasReady, node, err := r.session(ctx, &wg, avoid)
		avoid = node
		if ctx.Err() != nil {
			return nil
		}
		if r.cluster != nil {
			r.cluster.suspect(node)
		}
		if wasReady {
			attempt = 0
		}
		delay := backoff.Jitter(r.backoffMin, r.backoffMax, attempt)
		r.log.Warn("redis subscription down, re-subscribing", "err", err, "node", node, "attempt", attempt+1, "delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		r.metrics.reconnects.Inc()
	}
}

// session runs one subscription on its own connection until it fails, its probe stops
// coming back, or ctx is done. It reports whether the subscription became ready, and on a
// cluster the node it was on (for the next session to avoid). Its resync goroutine is added
// to wg: it may outlive the session by a read timeout.
func (r *Redis) session(ctx context.Context, wg *sync.WaitGroup, avoid string) (wasReady bool, node string, err error) {
	gen := r.sessions.Add(1)
	ps, node, err := r.psubscribe(ctx, avoid)
	if err != nil {
		return false, node, err
	}
	r.subNode.Store(&node)
	defer r.subNode.Store(nil)
	// Closing the PubSub is the only way to interrupt a blocked read on ctx done.
	stopClose := context.AfterFunc(ctx, func() { _ = ps.Close() })
	sctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		stopClose()
		_ = ps.Close()
		wasReady = r.syncedGen.Load() == gen
		r.liveGen.Store(0)
		r.metrics.connected.Set(0)
	}()

	start := time.Now()
	timeout := probeTimeouts * r.cfg.ProbeInterval
	confirmed := false
	for {
		msg, err := ps.ReceiveTimeout(sctx, r.cfg.ProbeInterval)
		if err != nil {
			if ctx.Err() != nil {
				return false, node, ctx.Err()
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return false, node, fmt.Errorf("receive: %w", err)
			}
		}
		if msg != nil {
			// Bytes are arriving, so the connection is alive even if our probe is late: it
			// may be queued behind a burst of events, and re-subscribing would lose them.
			r.markHeard()
		}
		switch m := msg.(type) {
		case *redis.Message:
			r.handle(m)
		case *redis.Subscription:
			if m.Kind != "psubscribe" || m.Channel != r.pattern || confirmed {
				// Only a reconnect inside go-redis could do this, and it may have lost
				// events: start over with a resync.
				return false, node, fmt.Errorf("%w: %s %s", errUnsubscribed, m.Kind, m.Channel)
			}
			confirmed = true
			r.markHeard()
			r.liveGen.Store(gen)
			r.metrics.connected.Set(1)
			r.log.Info("redis subscription live", "pattern", r.pattern, "node", node)
			select {
			case r.probeNow <- struct{}{}:
			default:
			}
			wg.Go(func() { r.resyncLoop(sctx, r.hub.Channels(), func() { r.syncedGen.Store(gen) }) })
		}
		switch {
		case !confirmed && time.Since(start) > timeout:
			return false, node, fmt.Errorf("%w within %v", errConfirmTimeout, timeout)
		case confirmed:
			if why := r.silent(); why != "" {
				r.log.Warn("redis subscription silent; re-subscribing", "why", why,
					"probe_channel", r.probeChannel, "node", node)
				return false, node, fmt.Errorf("%w: %s", errProbeTimeout, why)
			}
		}
	}
}

// psubscribe starts the pattern subscription of a session. On a cluster it first asks the
// cluster which masters are healthy and picks one (avoiding avoid, the node the last session
// failed on), and returns its address.
func (r *Redis) psubscribe(ctx context.Context, avoid string) (*redis.PubSub, string, error) {
	if r.cluster == nil {
		return r.client.PSubscribe(ctx, r.pattern), "", nil
	}
	if err := r.cluster.refresh(ctx); err != nil {
		return nil, "", err
	}
	addr, ok := r.cluster.pickMaster(avoid)
	if !ok {
		return nil, "", errors.New("cluster: no healthy master serves slots")
	}
	return r.cluster.client(addr).PSubscribe(ctx, r.pattern), addr, nil
}

// handle validates one message from the subscription and puts it in the mailbox. It runs on
// the read loop, so it never blocks.
func (r *Redis) handle(m *redis.Message) {
	now := time.Now()
	name, ok := strings.CutPrefix(m.Channel, r.channelPrefix)
	if !ok {
		return
	}
	if strings.HasPrefix(name, "_") {
		// Reserved: probes (ours or another instance's) and stored notices. Never
		// forwarded to the hub.
		switch m.Channel {
		case r.probeChannel:
			r.probeArrived(m.Payload, now)
		case r.noticeChannel:
			if ch, v, ok := store.ParseNotice(m.Payload); ok {
				r.writer.stored(ch, v)
				r.catchUp(ch, v)
			}
		}
		return
	}
	r.metrics.received.Inc()
	if !wire.ValidChannel(name) {
		r.metrics.rejected[MalformedChannel].Inc()
		r.malformedLog.Log(slog.LevelWarn, "ignoring event on an invalid channel name",
			"channel", truncate(name, wire.MaxChannelLen))
		return
	}
	p, stored, err := wire.ParseReceived([]byte(m.Payload), r.cfg.MaxPayload)
	if err == nil {
		err = p.CheckClock(now, r.cfg.MaxClockSkew)
	}
	if err != nil {
		r.metrics.rejected[malformedReason(err)].Inc()
		r.malformedLog.Log(slog.LevelWarn, "ignoring malformed event", "channel", name, "err", err)
		return
	}
	if r.mailbox.put(event{channel: name, payload: p, received: now, stored: stored}) {
		r.metrics.superseded.Inc()
	}
}

// catchUp has the seeder look channel up in the store when a stored notice names a version
// newer than any this instance holds for it. Raw PUBLISHes are written back after a delay of
// up to WriteBackSpread, so an instance whose subscription was down when one was published
// can resync from the store before any instance has written it; the notice, heard on the new
// subscription, is what tells it the store now holds an event it missed. An instance that
// received the event has it in lastSeen (or in its mailbox: then the lookup is one wasted
// read, and the hub drops the second copy of the version), so it asks nothing. It runs on the
// read loop: the seeder queues and never blocks.
func (r *Redis) catchUp(channel string, v hub.Version) {
	if seen, ok := r.lastSeen.get(channel); ok && !seen.Version().Less(v) {
		return
	}
	r.seeder.add([]string{channel})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func (r *Redis) probeArrived(payload string, now time.Time) {
	sent, err := strconv.ParseInt(payload, 10, 64)
	if err != nil {
		return
	}
	if rtt := now.UnixNano() - sent; rtt >= 0 {
		r.metrics.probeRTT.Observe(time.Duration(rtt).Seconds())
	}
}

// probeLoop publishes this instance's probe every ProbeInterval while the subscription is
// live, and prunes lastSeen every pruneInterval.
func (r *Redis) probeLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.ProbeInterval)
	defer t.Stop()
	lastPrune := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.probeNow:
		}
		if r.liveGen.Load() != 0 {
			r.probe(ctx)
		}
		if time.Since(lastPrune) >= pruneInterval {
			r.lastSeen.prune(r.hub.Channels(), r.writer.pending, lastPrune)
			lastPrune = time.Now()
		}
	}
}

// probe publishes this instance's probe. On a cluster it goes through a healthy master
// other than the subscription's node, so that it must cross the cluster bus to come back: a
// subscription on a node that left the cluster (or was cut off from it, or froze) then hears
// nothing and is replaced. A node that fails the publish is suspected, and the probe tried
// once more through another.
func (r *Redis) probe(ctx context.Context) {
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		via, addr := redis.Cmdable(r.client), ""
		if r.cluster != nil {
			sub := ""
			if p := r.subNode.Load(); p != nil {
				sub = *p
			}
			if a, ok := r.cluster.pickMaster(sub); ok && a != sub {
				via, addr = r.cluster.client(a), a
			}
		}
		sent := r.now()
		pctx, cancel := context.WithTimeout(ctx, r.cfg.ProbeInterval)
		err = via.Publish(pctx, r.probeChannel, strconv.FormatInt(time.Now().UnixNano(), 10)).Err()
		cancel()
		if err == nil {
			r.probeSent(sent)
			return
		}
		if r.cluster == nil || ctx.Err() != nil {
			break
		}
		r.cluster.suspect(addr)
	}
	if ctx.Err() == nil {
		r.probeLog.Log(slog.LevelWarn, "publishing the redis liveness probe failed", "err", err)
	}
}

// dispatch moves events from the mailbox to the hub, and queues them to be stored as their
// channels' newest (set-if-newer) by the writer, unless they came marked as stored. It returns when the mailbox is closed.
//
// An event is recorded in lastSeen before the hub gets it: a stream subscribing to its
// channel at that moment either is in the hub in time to be offered it, or finds it in
// lastSeen when it is seeded (the store may not have it yet; see seedHub).
func (r *Redis) dispatch(ctx context.Context) {
	var batch []event
	for {
		batch = r.mailbox.take(batch[:0], dispatchBatch)
		if batch == nil {
			return
		}
		for _, ev := range batch {
			v := ev.payload.Version()
			if seen, ok := r.lastSeen.get(ev.channel); ok && seen.Version().Time == v.Time && seen.Version().Tie != v.Tie {
				// Same lastModified, another config: it cannot be ordered (see
				// store.ErrConflict), so it is not delivered.
				r.metrics.rejected[MalformedConflict].Inc()
				r.malformedLog.Log(slog.LevelWarn, "ignoring an event with the lastModified of another config of its channel",
					"channel", ev.channel, "id", ev.payload.ID(), "etag", ev.payload.ETag, "newest_etag", seen.ETag)
				continue
			}
			r.lastSeen.update(ev.channel, ev.payload)
			r.hub.Publish(wire.NewMessage(ev.channel, ev.payload, ev.received))
			if ev.stored {
				r.writer.stored(ev.channel, v)
			} else if !r.writer.mark(ev.channel, ev.payload) {
				r.metrics.writeBackDropped.Inc()
			}
		}
		r.mailbox.done(batch)
		clear(batch) // drop the payloads until the next take
	}
}

// Seed queues channels a stream subscribed to, that the hub had not seen, to be seeded with
// their stored newest event; it does not wait (see seeder).
func (r *Redis) Seed(channels []string) { r.seeder.add(channels) }

// resyncLoop resynchronises channels with the store (every channel of the hub for a new
// pattern subscription; the channels whose shard subscription was lost and is back, in
// sharded mode), calling firstPass (if set) after the first pass. Channels whose store lookup
// failed (on a cluster: the slots of a node that just failed) are retried, with backoff and
// a topology refresh, until they are done or ctx ends; the subscription is not torn down for
// them, as it works.
func (r *Redis) resyncLoop(ctx context.Context, pending []string, firstPass func()) {
	for attempt := 0; ; attempt++ {
		failed, err := r.resync(ctx, pending)
		if attempt == 0 && firstPass != nil {
			firstPass()
		}
		r.metrics.resyncPending.Set(float64(len(failed)))
		if len(failed) == 0 || ctx.Err() != nil {
			return
		}
		delay := backoff.Jitter(r.backoffMin, r.backoffMax, attempt)
		r.storeLog.Log(slog.LevelWarn, "redis resync: some channels could not be read; retrying them",
			"channels", len(failed), "err", err, "delay", delay)
		if r.cluster != nil {
			_ = r.cluster.refresh(ctx)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		pending = failed
	}
}

// resync seeds the hub with the stored latest event of each of chans, and writes back those
// the store lost or holds older (see the package documentation). It returns the channels it
// could not read or write back, with the first such error.
func (r *Redis) resync(ctx context.Context, chans []string) (failed []string, firstErr error) {
	snapshot := time.Now()
	var writeBack []store.Entry
	seeded := 0
	for start := 0; start < len(chans); start += resyncBatch {
		part := chans[start:min(start+resyncBatch, len(chans))]
		got := r.store.GetMany(ctx, part)
		now := time.Now()
		for i, ch := range part {
			stored := got[i]
			if err := r.usable(ch, stored); err != nil {
				failed = append(failed, ch)
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			p, found := r.seedHub(ch, stored, now)
			if found {
				seeded++
				if !stored.Found || stored.Payload.Version().Less(p.Version()) {
					writeBack = append(writeBack, store.Entry{Channel: ch, Payload: p})
				}
			}
		}
	}
	written := 0
	for start := 0; start < len(writeBack); start += resyncBatch {
		part := writeBack[start:min(start+resyncBatch, len(writeBack))]
		n, errs := r.store.Save(ctx, part, store.SavePublish)
		written += n
		for i, err := range errs {
			if err != nil {
				failed = append(failed, part[i].Channel)
				if firstErr == nil {
					firstErr = fmt.Errorf("write back: %w", err)
				}
			}
		}
	}
	r.lastSeen.prune(r.hub.Channels(), r.writer.pending, snapshot)
	r.log.Info("redis resync done", "channels", len(chans), "seeded", seeded, "written_back", written, "failed", len(failed))
	return failed, firstErr
}
