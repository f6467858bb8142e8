package auth

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/internal/backoff"
)

// Keys in Redis
//
// The keys managed with `sse-gateway keys` live in one Redis hash, <prefix>keys: the field
// is the key's name, the value {"hash":"<hex SHA-256 of the secret>","channels":[...],
// "created":"<RFC 3339>"}. The secret itself is never stored. Every change is made by a Lua
// script that also PUBLISHes the key's name on <prefix>keys:changed, so the change and its
// notification are one atomic step.
//
// Every gateway running with --keys-redis subscribes to that channel and reloads the whole
// hash when a notification arrives (within milliseconds), whenever its subscription is
// (re)established (a notification may have been missed while it was down), and every
// ReloadInterval as a safety net. A reload that finds a key gone or rotated closes the
// streams opened with it.
//
// The hash also holds a field "_meta", which no key removal deletes, so the hash only
// disappears when Redis lost its data (a restart without persistence, a flush). A reload
// that finds no hash at all keeps the keys it has rather than revoking every key of the
// cluster: an empty Redis must not lock every SDK out. Run Redis with persistence when keys
// live in it.

// Errors of the Redis key administration.
var (
	// ErrKeyExists: Add without rotate found a key of that name.
	ErrKeyExists = errors.New("a key with this name exists (use --rotate to replace its secret)")
	// ErrNoSuchKey: Revoke found no key of that name.
	ErrNoSuchKey = errors.New("no key with this name")
)

// metaField is the hash field that marks the hash as intact; key names cannot start with '_'.
const metaField = "_meta"

// RedisKeys reads and changes the keys kept in Redis.
type RedisKeys struct {
	client  redis.UniversalClient
	hash    string // <prefix>keys
	channel string // <prefix>keys:changed
}

// NewRedisKeys returns the keys kept under keyPrefix (flag --redis-key-prefix) in client.
func NewRedisKeys(client redis.UniversalClient, keyPrefix string) *RedisKeys {
	return &RedisKeys{client: client, hash: keyPrefix + "keys", channel: keyPrefix + "keys:changed"}
}

// Hash is the Redis hash holding the keys.
func (r *RedisKeys) Hash() string { return r.hash }

// Channel is the pub/sub channel on which changes are announced.
func (r *RedisKeys) Channel() string { return r.channel }

// KeyInfo describes a key kept in Redis, without its hash.
type KeyInfo struct {
	Name     string
	Channels []string
	Created  time.Time
}

// storedKey is the JSON value of a key's field.
type storedKey struct {
	Hash     string    `json:"hash"`
	Channels []string  `json:"channels"`
	Created  time.Time `json:"created"`
}

// ValidKeyName reports whether name may name a key kept in Redis: 1 to 64 characters of
// [A-Za-z0-9_.-], starting with a letter or digit (it is a metric label and a log field).
func ValidKeyName(name string) bool {
	if name == "" || len(name) > 64 || !alnum(name[0]) {
		return false
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !alnum(c) && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// ValidPattern reports whether p is a channel pattern: 1 to 200 characters of channel
// name characters ([A-Za-z0-9_.:-]) and '*'.
func ValidPattern(p string) bool {
	if p == "" || len(p) > 200 {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; !alnum(c) && !strings.ContainsRune("_.:-*", rune(c)) {
			return false
		}
	}
	return true
}

func alnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// addScript: KEYS[1] the hash; ARGV name, value, rotate ("1"), channel. Returns -1 when the
// name exists and rotate is not set, else the number of gateways notified.
var addScript = redis.NewScript(`
if ARGV[3] ~= '1' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return -1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], '_meta', '{"format":1}')
return redis.call('PUBLISH', ARGV[4], ARGV[1])
`)

// revokeScript: KEYS[1] the hash; ARGV name, channel. Returns -1 when there is no such key,
// else the number of gateways notified.
var revokeScript = redis.NewScript(`
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return -1
end
return redis.call('PUBLISH', ARGV[2], ARGV[1])
`)

// Add generates a secret for a new key (or, with rotate, a new secret for a key that may
// exist, which revokes the old one), stores its hash and announces the change. It returns
// the secret, which is not kept anywhere, and how many gateways were notified.
func (r *RedisKeys) Add(ctx context.Context, name string, channels []string, rotate bool) (secret string, notified int64, err error) {
	if !ValidKeyName(name) {
		return "", 0, fmt.Errorf("key name %q: use 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit", name)
	}
	if len(channels) == 0 {
		return "", 0, errors.New("a key needs at least one channel pattern")
	}
	for _, p := range channels {
		if !ValidPattern(p) {
			return "", 0, fmt.Errorf("channel pattern %q: use channel name characters (A-Z a-z 0-9 _ . : -) and *", p)
		}
	}
	secret, err = Generate()
	if err != nil {
		return "", 0, err
	}
	h := HashKey(secret)
	value, err := json.Marshal(storedKey{Hash: hex.EncodeToString(h[:]), Channels: channels, Created: time.Now().UTC().Truncate(time.Second)})
	if err != nil {
		return "", 0, err
	}
	flag := "0"
	if rotate {
		flag = "1"
	}
	n, err := addScript.Run(ctx, r.client, []string{r.hash}, name, value, flag, r.channel).Int64()
	if err != nil {
		return "", 0, fmt.Errorf("store key %q: %w", name, err)
	}
	if n < 0 {
		return "", 0, fmt.Errorf("key %q: %w", name, ErrKeyExists)
	}
	return secret, n, nil
}

// Revoke removes a key and announces it; gateways close its streams. It returns how many
// gateways were notified.
func (r *RedisKeys) Revoke(ctx context.Context, name string) (notified int64, err error) {
	if strings.HasPrefix(name, "_") {
		return 0, fmt.Errorf("key %q: %w", name, ErrNoSuchKey)
	}
	n, err := revokeScript.Run(ctx, r.client, []string{r.hash}, name, r.channel).Int64()
	if err != nil {
		return 0, fmt.Errorf("revoke key %q: %w", name, err)
	}
	if n < 0 {
		return 0, fmt.Errorf("key %q: %w", name, ErrNoSuchKey)
	}
	return n, nil
}

// List returns the keys sorted by name, without their hashes. Entries that cannot be read
// are listed with no channels.
func (r *RedisKeys) List(ctx context.Context) ([]KeyInfo, error) {
	all, err := r.client.HGetAll(ctx, r.hash).Result()
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	out := make([]KeyInfo, 0, len(all))
	for name, v := range all {
		if strings.HasPrefix(name, "_") {
			continue
		}
		var sk storedKey
		_ = json.Unmarshal([]byte(v), &sk)
		out = append(out, KeyInfo{Name: name, Channels: sk.Channels, Created: sk.Created})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Load reads every key. present is false when the hash does not exist at all (nothing was
// ever added, or Redis lost its data). An entry that cannot be read is left out and
// reported in bad, so that one broken entry does not lock every other key out.
func (r *RedisKeys) Load(ctx context.Context) (keys []Key, present bool, bad []error, err error) {
	all, err := r.client.HGetAll(ctx, r.hash).Result()
	if err != nil {
		return nil, false, nil, fmt.Errorf("load keys: %w", err)
	}
	for name, v := range all {
		if strings.HasPrefix(name, "_") {
			continue
		}
		k, err := parseStored(name, v)
		if err != nil {
			bad = append(bad, err)
			continue
		}
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Name < keys[j].Name })
	return keys, len(all) > 0, bad, nil
}

func parseStored(name, v string) (Key, error) {
	var sk storedKey
	if err := json.Unmarshal([]byte(v), &sk); err != nil {
		return Key{}, fmt.Errorf("key %q: %w", name, err)
	}
	h, err := hex.DecodeString(sk.Hash)
	if err != nil || len(h) != 32 {
		return Key{}, fmt.Errorf("key %q: hash is not 64 hex digits", name)
	}
	if len(sk.Channels) == 0 {
		return Key{}, fmt.Errorf("key %q: no channel patterns", name)
	}
	k := Key{Name: name, Channels: sk.Channels}
	copy(k.Hash[:], h)
	return k, nil
}

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
	onRevoked func(ids []string)
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
// with the IDs of keys a reload removed or rotated (stream.Server.CloseKeys). log may be nil.
func NewRedisSource(keys *RedisKeys, store *Store, onRevoked func(ids []string), cfg RedisSourceConfig, log *slog.Logger) *RedisSource {
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
		s.onRevoked(revoked)
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
