// Package stream is the SSE endpoint: it validates and authorises a stream request, writes
// the response headers, subscribes the stream to the hub and keeps it alive with heartbeats
// until the client leaves, the stream is too slow, its key is revoked or the instance drains.
//
// A stream is served on one of two paths:
//
//   - Taken over (plain HTTP/1.1, on Linux): once admitted, its connection is taken over
//     from net/http (takeover.go) and handed to the poller (poller_linux.go). It then has no
//     goroutine and no buffer of its own while idle: publishers write to it directly with
//     non-blocking writes (pollstream_linux.go, the per-stream state machine), and the
//     poller's epoll loop notices hang-ups and finishes writes a slow client could not take
//     at once, its sweeper writes heartbeats and enforces write deadlines and lifetimes as
//     they come due in a timing wheel (wheel_linux.go), and its closer carries out closes.
//   - The net/http path (HTTP/2, TLS, HTTP/1.0, other platforms): one goroutine per stream,
//     the handler's, does every write under a deadline (loop.go).
//
// Most stream requests never reach net/http: the listener's accepting goroutine opens a plain
// HTTP/1.1 GET that arrived whole with its connection itself (accept_linux.go, with the strict
// parser in plainget.go), and hands everything else to net/http (see Server.Listener).
//
// server.go admits streams (limits, quota, registry, drain, revocation); query.go, cors.go and
// clientip.go read the request; sockopt*.go tune sockets; httpserver.go holds the
// http.Server settings streams depend on.
//
// # Fast paths
//
// A delivery reads the clock once: the write's time (pollStream.Offer, loop.write) also
// dates the event-age metric (Server.wrote), where time.Since was a second read. In a CPU
// profile of a 1-channel fan-out to 5,000 streams the clock went from 5.1% of the gateway's
// CPU to 0-2% (loadtest/results/issue12/, docs/PERFORMANCE.md "Where a delivery's CPU goes");
// write(2) itself is 88-91%.
//
// A taken-over stream holds its socket as a bare descriptor, detached from the Go runtime
// (sockopt_linux.go: detach): no net.Conn, netFD, addresses or runtime poll descriptor per
// stream. An idle stream went from 3.00 to 1.19 KiB of RSS (1.31 to 0.90 KiB of Go heap and
// stacks; TestStreamMemory, 10,000 streams), from 3.23-3.35 to 1.89 KiB in make bench after
// a connect storm, and a connect from 0.84-0.95x to 0.75x the baseline's CPU
// (docs/PERFORMANCE.md); the response head goes out as the stream's first non-blocking frame.
//
// A plain stream request is accepted without net/http (accept_linux.go): a descriptor the
// runtime never registers, one read, a strict parse, no goroutine, no request or header map.
// In make bench's connect storm (15,000 streams) the gateway's CPU per accepted stream went
// from 75-80 to 37-44 µs, against the baseline's 80-153 (docs/PERFORMANCE.md).
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/sse-gateway/sse-gateway/internal/auth"
	"github.com/sse-gateway/sse-gateway/internal/httperr"
	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// Authorizer resolves a stream's key; *auth.Store satisfies it.
type Authorizer interface {
	Authorize(secret string, channels []string) (auth.Grant, error)
	// Permits reports whether a grant's secret is still configured and may still read
	// every one of channels.
	Permits(id string, channels []string) bool
}

// Seeder hands the hub the newest stored event of channels a stream subscribed to that the
// hub had not seen (after a restart, or on another instance), by calling the hub's Seed; the
// brokers in packages store and subscribe satisfy it.
type Seeder interface {
	// Seed asks for channels to be seeded and returns at once, without waiting for the
	// lookup: the stream is open already and gets the event when it arrives. A broker
	// keeps retrying a lookup that fails while the channel has subscribers.
	Seed(channels []string)
}

// KeyQuota limits streams per key across instances. Acquire reports whether one more
// stream of the key may open; the returned release must be called when it closes.
type KeyQuota interface {
	Acquire(ctx context.Context, keyName string) (release func(), ok bool, err error)
}

// Config tunes a Server. Zero values are the documented defaults.
type Config struct {
	// Heartbeat is the interval of ":" comment frames on an idle stream (default 15s).
	Heartbeat time.Duration
	// WriteTimeout closes a stream whose pending write has not completed in this time
	// (default 10s).
	WriteTimeout time.Duration
	// MaxChannels is the most channels one stream may ask for (default 10, at most 256).
	MaxChannels int
	// AllowedOrigins lists the CORS origins whose requests get credentials-enabled CORS
	// headers; "*" allows any origin (echoed, never a wildcard); empty allows none. The
	// opaque origin "null" (sandboxed frames, file: pages) is never allowed: any page can
	// send it.
	AllowedOrigins []string
	// MaxStreams caps this instance's open streams; over it requests get 503 (0: no cap).
	MaxStreams int
	// MaxStreamsPerIP caps streams per client address (an IPv6 /64 counts as one) on this
	// instance; 429 (0: no cap).
	MaxStreamsPerIP int
	// AcceptRate limits new streams per second on this instance; 429 (0: no limit).
	AcceptRate float64
	// MaxLifetime closes streams after 80-100% of this duration, so that long-lived
	// connections rebalance across instances (0: no limit).
	MaxLifetime time.Duration
	// RetryMin and RetryMax bound the jittered reconnection delay ("retry:") sent before the
	// gateway closes a stream on purpose (defaults 1s and 5s).
	RetryMin, RetryMax time.Duration
	// TrustedProxies are the peers whose X-Forwarded-For is believed for the client address.
	TrustedProxies []netip.Prefix
	// NoTakeover keeps every stream on the net/http path (one goroutine per stream).
	NoTakeover bool
	// NoReplay: a stream that opens without a Last-Event-ID header gets only what is
	// published after it subscribed, not each channel's newest event (the default, which
	// closes the race between an SDK fetching its config and opening its stream, and costs
	// one conditional CDN request per connect of an SDK that refetches on every event). A
	// stream with a Last-Event-ID is resumed either way.
	NoReplay bool
	// SendBuffer fixes each stream socket's kernel send buffer (SO_SNDBUF, which the kernel
	// doubles) in bytes, bounding what a client that stops reading can pin (default 64 KiB;
	// negative leaves the kernel's autotuning on).
	SendBuffer int
}

func (c *Config) setDefaults() {
	if c.Heartbeat <= 0 {
		c.Heartbeat = 15 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.MaxChannels <= 0 {
		c.MaxChannels = 10
	}
	c.MaxChannels = min(c.MaxChannels, maxChannelsLimit)
	if c.SendBuffer == 0 {
		c.SendBuffer = 64 << 10
	}
	if c.RetryMin <= 0 {
		c.RetryMin = time.Second
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(c.RetryMin, 5*time.Second)
	}
}

// Server serves GET /event-stream. Create it with New, run its background work with Run,
// and close every stream with Drain.
//
// Goroutines: ServeHTTP runs on net/http's handler goroutines; a stream on the net/http path
// keeps its handler goroutine (loop.go); a taken-over stream has none, and is written by the
// publisher offering it a message, and by the poller's goroutines that Run owns
// (poller_linux.go).
//
// Lock order on the delivery path: the hub's channel lock (held by a publisher for a whole
// fan-out), then a stream's mu, then the poller's locks. Server.mu is never held while a
// stream's lock is taken: Drain and CloseKeys copy the streams out first.
type Server struct {
	// Set by New, then read-only.
	cfg       Config
	hub       *hub.Hub
	auth      Authorizer
	seeder    Seeder
	quota     KeyQuota // nil: no per-key limit
	log       *slog.Logger
	metrics   *metrics
	poller    *poller // nil when streams cannot be taken over
	anyOrigin bool
	origins   map[string]bool
	limiter   *rate.Limiter // nil: no accept rate limit; safe for concurrent use

	nextID    atomic.Uint64 // the last stream id handed out
	draining  atomic.Bool   // set once, by Drain
	revokeGen atomic.Uint64 // bumped by CloseKeys
	quotaLog  atomic.Int64  // unix nanos of the last "quota unavailable" log line

	mu      sync.Mutex
	streams map[uint64]stream  // guarded by mu: admitted streams by id; nil until registered
	perIP   map[netip.Addr]int // guarded by mu: admitted streams per client address
	emptied chan struct{}      // guarded by mu: set by Drain, closed when streams empties
}

// start is where a stream starts: after floor, the version its Last-Event-ID names (zero:
// with each channel's newest), or, with now, at what is published after it subscribed.
type start struct {
	floor hub.Version
	now   bool
}

// stream is what the registry needs of an open stream, whichever path serves it.
type stream interface {
	base() *streamBase
	// close ends the stream; if retry > 0 it first asks the client to reconnect after retry.
	close(reason CloseReason, retry time.Duration)
}

// streamBase is the state every stream has, whatever path serves it. Its fields are set
// before the stream is registered and read-only after, except sub, which the stream's own
// lock guards.
type streamBase struct {
	id       uint64
	grant    auth.Grant
	ip       netip.Addr // the client's address as per-address limits count it (ClientAddr)
	protocol string
	sub      *hub.Subscription
	expires  time.Time // zero: no lifetime limit
	release  func()    // key quota release; nil when none
	gen      uint64    // revokeGen when the key was authorised
	channels []string  // what the stream subscribed to, for checks after a key change
}

func (b *streamBase) base() *streamBase { return b }

// New builds a Server. quota may be nil (no per-key limit).
func New(cfg Config, h *hub.Hub, a Authorizer, sd Seeder, quota KeyQuota, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	cfg.setDefaults()
	s := &Server{
		cfg:     cfg,
		hub:     h,
		auth:    a,
		seeder:  sd,
		quota:   quota,
		log:     log,
		metrics: newMetrics(reg),
		origins: make(map[string]bool),
		streams: make(map[uint64]stream),
		perIP:   make(map[netip.Addr]int),
	}
	for _, o := range cfg.AllowedOrigins {
		o = strings.TrimSpace(o)
		if o == "*" {
			s.anyOrigin = true
		} else if o != "" {
			s.origins[o] = true
		}
	}
	if cfg.AcceptRate > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(cfg.AcceptRate), max(1, int(cfg.AcceptRate)))
	}
	if !cfg.NoTakeover {
		p, err := newPoller(s)
		if err != nil {
			return nil, fmt.Errorf("stream: %w", err)
		}
		s.poller = p
	}
	return s, nil
}

// Run does the background work of taken-over streams (hang-up detection, finishing slow
// writes, heartbeats, write deadlines, lifetimes) until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	if s.poller == nil {
		<-ctx.Done()
		return nil
	}
	return s.poller.run(ctx)
}

// OpenStreams reports how many streams are open (admitted and not yet forgotten).
func (s *Server) OpenStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// ServeHTTP serves one stream request that came through net/http (see accept.go for those
// that do not).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if r.Method == http.MethodOptions {
			s.preflight(w, r)
			return
		}
		w.Header().Set("Allow", "GET, HEAD, OPTIONS")
		s.refuse(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	s.setCORS(w.Header(), r)
	b, channels, from, no := s.admitStream(r.Context(), r.URL.RawQuery, r.Header.Values("Last-Event-ID"), s.ClientAddr(r))
	if no != nil {
		if no.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(no.retryAfter))
		}
		s.refuse(w, no.status, no.msg)
		return
	}
	if r.Method == http.MethodHead {
		s.metrics.opened.Inc()
		s.writeHeaders(w, r)
		s.unadmit(b)
		return
	}
	if s.poller != nil && r.ProtoMajor == 1 && r.ProtoMinor == 1 && r.TLS == nil {
		s.serveTakeover(w, r, b, channels, from)
		return
	}
	s.serveLoop(w, r, b, channels, from)
}

// refusal is why a stream request gets an error instead of a stream.
type refusal struct {
	status     int
	msg        string
	retryAfter int // seconds, for Retry-After; 0: none
}

// admitStream validates, authorises and admits a stream request, whichever way it came (net/http
// or the plain accept path): query is its raw query, lastID its Last-Event-ID values, ip
// what per-address limits count it as (ClientAddr). An admitted stream must be opened, or
// unadmitted.
func (s *Server) admitStream(ctx context.Context, query string, lastID []string, ip netip.Addr) (*streamBase, []string, start, *refusal) {
	var from start
	if s.draining.Load() {
		return nil, nil, from, &refusal{http.StatusServiceUnavailable, "instance is draining", 1}
	}
	req, err := parseQuery(query, s.cfg.MaxChannels)
	if err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, ErrQueryTooLong) {
			status = http.StatusRequestURITooLong
		}
		return nil, nil, from, &refusal{status: status, msg: err.Error()}
	}
	// Read before authorising: a revocation that lands while this request is being
	// authorised then shows as a newer generation at register, which checks again.
	gen := s.revokeGen.Load()
	grant, err := s.auth.Authorize(req.key, req.channels)
	switch {
	case errors.Is(err, auth.ErrUnknownKey):
		return nil, nil, from, &refusal{status: http.StatusUnauthorized, msg: "unknown key"}
	case err != nil:
		return nil, nil, from, &refusal{status: http.StatusForbidden, msg: err.Error()}
	}
	b := &streamBase{id: s.nextID.Add(1), grant: grant, ip: ip, gen: gen, channels: req.channels}
	if status, msg, retry := s.admit(b); status != 0 {
		return nil, nil, from, &refusal{status, msg, retry}
	}
	if s.quota != nil {
		release, ok, err := s.quota.Acquire(ctx, grant.Name)
		if err != nil {
			// A quota store outage must not take streaming down: admit, and log at most
			// once a second however many streams arrive.
			now, last := time.Now().UnixNano(), s.quotaLog.Load()
			if now-last > int64(time.Second) && s.quotaLog.CompareAndSwap(last, now) {
				s.log.Warn("key quota unavailable; admitting streams", "key", grant.Name, "err", err)
			}
		} else if !ok {
			s.unadmit(b)
			return nil, nil, from, &refusal{http.StatusTooManyRequests, "too many streams for this key", 5 + rand.IntN(10)}
		}
		b.release = release
	}
	if s.revokeGen.Load() != gen && !s.auth.Permits(grant.ID, req.channels) {
		// The key was revoked or narrowed while this request was being admitted: answer as
		// a request with that key now would be answered. (register checks once more, for a
		// revocation landing between here and there.)
		s.unadmit(b)
		return nil, nil, from, &refusal{status: http.StatusUnauthorized, msg: "unknown key"}
	}
	if s.cfg.MaxLifetime > 0 {
		f := 0.8 + 0.2*rand.Float64()
		b.expires = time.Now().Add(time.Duration(f * float64(s.cfg.MaxLifetime)))
	}
	switch {
	case len(lastID) == 0 && s.cfg.NoReplay:
		// A fresh connect, and the operator chose not to replay (see Config.NoReplay).
		from.now = true
	case len(req.channels) == 1 && len(lastID) > 0:
		// With one channel, Last-Event-ID says exactly which version the client holds. With
		// several it cannot (one id for many channels), so each channel's newest is sent
		// (the Node and JS SDKs skip an ETag they hold; the Python one refetches, which the
		// CDN answers 304).
		if v, ok := wire.ParseEventID(lastID[0]); ok {
			from.floor = v
		}
	}
	return b, req.channels, from, nil
}

// admit applies the instance-local limits and registers the stream's address. A refusal
// comes with the Retry-After seconds to send: jittered where many clients are refused at
// once, so they do not come back in one burst.
func (s *Server) admit(b *streamBase) (status int, msg string, retryAfter int) {
	if s.limiter != nil && !s.limiter.Allow() {
		return http.StatusTooManyRequests, "too many new streams, retry later", 1 + rand.IntN(5)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.MaxStreams > 0 && len(s.streams) >= s.cfg.MaxStreams {
		return http.StatusServiceUnavailable, "instance at its stream limit", 1 + rand.IntN(5)
	}
	if s.cfg.MaxStreamsPerIP > 0 && s.perIP[b.ip] >= s.cfg.MaxStreamsPerIP {
		return http.StatusTooManyRequests, "too many streams from this address", 5 + rand.IntN(10)
	}
	s.perIP[b.ip]++
	s.streams[b.id] = nil // reserved; set by register
	return 0, "", 0
}

// unadmit undoes admit for a stream that never opened.
func (s *Server) unadmit(b *streamBase) {
	s.mu.Lock()
	s.dropLocked(b)
	s.mu.Unlock()
	if b.release != nil {
		b.release()
	}
}

// dropLocked removes an admitted stream from the registry, and tells a waiting Drain when
// it was the last.
func (s *Server) dropLocked(b *streamBase) {
	delete(s.streams, b.id)
	if s.perIP[b.ip] <= 1 {
		delete(s.perIP, b.ip)
	} else {
		s.perIP[b.ip]--
	}
	if s.emptied != nil && len(s.streams) == 0 {
		close(s.emptied)
		s.emptied = nil
	}
}

// register records an opened stream, so that Drain and CloseKeys can reach it. A key
// revoked between the stream's authorisation and here closes it at once: CloseKeys could not
// see it yet.
func (s *Server) register(st stream) {
	b := st.base()
	s.mu.Lock()
	s.streams[b.id] = st
	s.mu.Unlock()
	// Counted here, once the stream exists: a request refused or abandoned before its
	// headers went out is not an opened stream.
	s.metrics.opened.Inc()
	s.metrics.open.WithLabelValues(b.grant.Name, b.protocol).Inc()
	if s.revokeGen.Load() != b.gen && !s.auth.Permits(b.grant.ID, b.channels) {
		st.close(CloseRevoked, 0)
	}
}

// forget removes a closed stream from the registry and the hub. It is called exactly once
// per opened stream.
func (s *Server) forget(b *streamBase, sub *hub.Subscription, reason CloseReason) {
	s.hub.Unsubscribe(sub)
	s.mu.Lock()
	s.dropLocked(b)
	s.mu.Unlock()
	if b.release != nil {
		b.release()
	}
	s.metrics.open.WithLabelValues(b.grant.Name, b.protocol).Dec()
	s.metrics.closed[reason].Inc()
}

// subscribe registers the stream in the hub (from its floor, or from now) and returns the
// call that asks for the channels the hub has not seen to be seeded from the store (in one
// lookup), so that a fresh stream gets each channel's newest event at once; the caller makes
// it once the stream is open.
func (s *Server) subscribe(sink hub.Sink, channels []string, from start) (*hub.Subscription, func()) {
	var sub *hub.Subscription
	var unseeded []int
	if from.now {
		sub, unseeded = s.hub.SubscribeFromNow(sink, channels)
	} else {
		sub, unseeded = s.hub.Subscribe(sink, channels, from.floor)
	}
	seed := func() {
		if len(unseeded) == 0 {
			return
		}
		names := make([]string, len(unseeded))
		for i, idx := range unseeded {
			names[i] = channels[idx]
		}
		s.seeder.Seed(names)
	}
	return sub, seed
}

// Drain closes every open stream, spread evenly over window in random order, each with a
// jittered "retry:" so that clients reconnect (to another instance) gradually rather than
// in one burst. New streams are refused with 503 from the moment Drain is called. It then
// waits until every stream has had its goodbye (at most the write timeout for a client
// that does not read) and is gone, or ctx ends.
func (s *Server) Drain(ctx context.Context, window time.Duration) {
	s.closeSpread(ctx, window)
	s.mu.Lock()
	if len(s.streams) == 0 {
		s.mu.Unlock()
		return
	}
	if s.emptied == nil {
		s.emptied = make(chan struct{})
	}
	emptied := s.emptied
	s.mu.Unlock()
	select {
	case <-emptied:
	case <-ctx.Done():
	}
}

// closeSpread is Drain's schedule: every stream closed, evenly over window.
func (s *Server) closeSpread(ctx context.Context, window time.Duration) {
	s.draining.Store(true)
	s.mu.Lock()
	all := make([]stream, 0, len(s.streams))
	for _, st := range s.streams {
		if st != nil {
			all = append(all, st)
		}
	}
	s.mu.Unlock()
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i, st := range all {
		at := start.Add(time.Duration(float64(window) * float64(i) / float64(len(all))))
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				for _, rest := range all[i:] {
					rest.close(CloseDrain, s.retryJitter())
				}
				return
			}
		}
		st.close(CloseDrain, s.retryJitter())
	}
}

// Draining reports whether Drain has been called.
func (s *Server) Draining() bool { return s.draining.Load() }

// CloseKeys checks again the streams opened with any of the given key IDs (see
// auth.Key.ID), whose key was removed, rotated or had its channel patterns changed, and
// closes those the key no longer permits.
func (s *Server) CloseKeys(ids []string) int {
	if len(ids) == 0 {
		return 0
	}
	s.revokeGen.Add(1)
	gone := make(map[string]bool, len(ids))
	for _, id := range ids {
		gone[id] = true
	}
	s.mu.Lock()
	var victims []stream
	for _, st := range s.streams {
		if st == nil {
			continue
		}
		if b := st.base(); gone[b.grant.ID] && !s.auth.Permits(b.grant.ID, b.channels) {
			victims = append(victims, st)
		}
	}
	s.mu.Unlock()
	for _, st := range victims {
		st.close(CloseRevoked, 0)
	}
	return len(victims)
}

func (s *Server) retryJitter() time.Duration {
	span := s.cfg.RetryMax - s.cfg.RetryMin
	if span <= 0 {
		return s.cfg.RetryMin
	}
	return s.cfg.RetryMin + rand.N(span)
}

func (s *Server) writeHeaders(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	if r.ProtoMajor == 1 {
		h.Set("Connection", "keep-alive")
	}
	w.WriteHeader(http.StatusOK)
}

// refuse answers a request that will not become a stream with a JSON error.
func (s *Server) refuse(w http.ResponseWriter, status int, msg string) {
	s.metrics.refused(status)
	httperr.Write(w, status, msg)
}
