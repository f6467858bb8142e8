package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/internal/backoff"
)

// Defaults of the RedisSourceConfig fields left zero.
const (
	DefaultReloadInterval = 30 * time.Second
	DefaultPingInterval   = 5 * time.Second
	DefaultLoadTimeout    = 5 * time.Second
)

// RedisSourceConfig tunes a RedisSource. Zero values mean the documented defaults.
type RedisSourceConfig struct {
	// ReloadInterval is the period of the full reload that backs up the notifications
	// (default 30s).
	ReloadInterval time.Duration
	// PingInterval is how long the subscription may be quiet before it is pinged; after
	// three intervals without any reply it is re-established (default 5s).
	PingInterval time.Duration
	// LoadTimeout bounds one reload (default 5s).
	LoadTimeout time.Duration
}

// RedisSource keeps a Store's "redis" source equal to the keys in Redis. Create it with
// NewRedisSource and call Run.
type RedisSource struct {
	keys      *RedisKeys
	store     *Store
	onRevoked func(ids []string) (closed int)
	cfg       RedisSourceConfig
	log       *slog.Logger

	kick    chan struct{} // capacity 1: "reload soon"
	loaded  atomic.Bool
	reloads atomic.Uint64
	running atomic.Bool

	// Owned by the reload goroutine.
	current string // fingerprint of the keys last set ("" before the first), to log changes only
	missing bool   // the hash was found missing at the last reload
}

// NewRedisSource returns a source feeding store from keys. onRevoked, if not nil, is called
// with the IDs of keys a reload removed, rotated or narrowed, and returns how many streams it
// closed (stream.Server.CloseKeys). log may be nil.
func NewRedisSource(keys *RedisKeys, store *Store, onRevoked func(ids []string) (closed int), cfg RedisSourceConfig, log *slog.Logger) *RedisSource {
	if cfg.ReloadInterval <= 0 {
		cfg.ReloadInterval = DefaultReloadInterval
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.LoadTimeout <= 0 {
		cfg.LoadTimeout = DefaultLoadTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &RedisSource{keys: keys, store: store, onRevoked: onRevoked, cfg: cfg, log: log, kick: make(chan struct{}, 1)}
}

// Loaded reports whether the keys have been read from Redis at least once; until then the
// instance does not know them and should not be ready.
func (s *RedisSource) Loaded() bool { return s.loaded.Load() }

// Reloads reports how many reloads succeeded.
func (s *RedisSource) Reloads() uint64 { return s.reloads.Load() }

// Reload asks for a reload soon; it never blocks.
func (s *RedisSource) Reload() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run keeps the subscription to change notifications and reloads the keys until ctx is
// done, then returns nil once its goroutines have returned. It must be called once.
func (s *RedisSource) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("auth: RedisSource.Run called twice")
	}
	var wg sync.WaitGroup
	wg.Go(func() { s.reloadLoop(ctx) })
	defer wg.Wait()
	for attempt := 0; ; attempt++ {
		confirmed, err := s.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if confirmed {
			attempt = 0
		}
		delay := backoff.Jitter(100*time.Millisecond, 5*time.Second, attempt)
		s.log.Warn("redis keys: subscription lost, re-subscribing", "err", err, "delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

var errSilent = errors.New("no reply to pings")

// session runs one subscription until it fails or ctx is done; it reports whether Redis
// confirmed it. Every confirmation triggers a reload: notifications may have been missed
// while there was no subscription.
func (s *RedisSource) session(ctx context.Context) (confirmed bool, err error) {
	ps := s.keys.client.Subscribe(ctx, s.keys.channel)
	// Closing the PubSub is the only way to interrupt a blocked read.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer func() {
		stop()
		_ = ps.Close()
	}()
	heard := time.Now()
	for {
		msg, err := ps.ReceiveTimeout(ctx, s.cfg.PingInterval)
		if err != nil {
			if ctx.Err() != nil {
				return confirmed, ctx.Err()
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return confirmed, fmt.Errorf("receive: %w", err)
			}
			if time.Since(heard) > 3*s.cfg.PingInterval {
				return confirmed, errSilent
			}
			if err := ps.Ping(ctx); err != nil && ctx.Err() == nil {
				return confirmed, fmt.Errorf("ping: %w", err)
			}
			continue
		}
		heard = time.Now()
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				confirmed = true
				s.Reload()
			}
		case *redis.Message:
			s.log.Debug("redis keys: change announced", "key", m.Payload)
			s.Reload()
		}
	}
}

// reloadLoop does every reload, one at a time, so the store's source changes in order. A
// failed reload is retried after a second.
func (s *RedisSource) reloadLoop(ctx context.Context) {
	tick := time.NewTicker(s.cfg.ReloadInterval)
	defer tick.Stop()
	retry := time.NewTimer(0)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-tick.C:
		case <-retry.C:
		}
		if err := s.reload(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("redis keys: reload failed, keeping the current keys", "err", err)
			retry.Reset(time.Second)
		}
	}
}

func (s *RedisSource) reload(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, s.cfg.LoadTimeout)
	keys, present, bad, err := s.keys.Load(lctx)
	cancel()
	if err != nil {
		return err
	}
	for _, e := range bad {
		s.log.Error("redis keys: unreadable entry ignored", "err", e)
	}
	if !present && s.current != "" {
		if !s.missing {
			s.log.Error("redis keys: the keys hash is gone (Redis lost its data?); keeping the current keys until keys are added again",
				"hash", s.keys.hash)
		}
		s.missing = true
		s.reloads.Add(1)
		return nil
	}
	s.missing = false
	revoked := s.store.SetSource("redis", keys)
	s.loaded.Store(true)
	s.reloads.Add(1)
	if fp := fingerprint(keys); fp != s.current {
		s.current = fp
		s.log.Info("redis keys loaded", "keys", len(keys), "revoked", len(revoked))
	}
	if len(revoked) > 0 && s.onRevoked != nil {
		n := s.onRevoked(revoked)
		s.log.Info("redis keys: revoked", "keys", len(revoked), "streams_closed", n)
	}
	return nil
}

func fingerprint(keys []Key) string {
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		ids = append(ids, k.ID()+"="+strings.Join(k.Channels, ","))
	}
	slices.Sort(ids)
	return "keys:" + strings.Join(ids, ";")
}
