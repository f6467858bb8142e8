// Package quota limits how many streams one key may have open across a cluster of gateways
// sharing one Redis (--max-streams-per-key). *Quota satisfies stream.KeyQuota.
//
// # Design
//
// Each key name has one Redis hash, <KeyPrefix>quota:<name>. Each gateway instance owns one
// field of it, named after the instance plus a random suffix (so a restarted process never
// inherits the share of its predecessor), whose value is "<count>:<deadline>": how many
// streams of the key the instance holds, and until when (Redis server time, ms) that count
// is believed.
//
// Every change goes through a Lua script on that one hash, so it is atomic and Redis
// Cluster safe (one key per script), and all deadlines are compared with Redis's own clock
// (TIME), so clock skew between instances does not matter:
//
//   - Acquire reads every field, deletes fields whose deadline passed (an instance that
//     crashed or lost Redis for longer than TTL), sums the others with its own count, and
//     increments its own field only if the sum is below the limit. Because the check and the
//     increment are one script, concurrent Acquires on any number of instances can never
//     admit more than the limit between them.
//   - A release decrements the instance's field. Releases come from the stream closer, which
//     must never wait for Redis, so they are queued and sent in batches by Run.
//   - Run's heartbeat, every TTL/3, rewrites the instance's field of every key it holds with
//     its own absolute count and a fresh deadline. That keeps a live instance's share from
//     expiring, and repairs Redis whenever it is wrong: after a failed release, an Acquire
//     whose reply was lost, or Redis losing its data. The heartbeat takes the operations lock
//     exclusively while its script runs (Acquire and the release batches take it shared), so
//     the absolute value it writes is never raced by an increment or decrement in flight.
//   - Every write also sets the hash's TTL to at least TTL, so a key nobody holds streams of
//     any more disappears from Redis by itself.
//
// A crashed instance's share therefore stops counting at most TTL after its last heartbeat
// (30s by default). When Redis cannot be reached, Acquire returns an error and the stream
// server admits the stream anyway: a quota outage must not take streaming down.
package quota

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/internal/store"
)

// Defaults of the Config fields left zero.
const (
	DefaultKeyPrefix = store.DefaultKeyPrefix
	DefaultTTL       = 30 * time.Second
	DefaultTimeout   = time.Second
)

// Config tunes a Quota. Zero values mean the documented defaults, except Limit.
type Config struct {
	// Limit is the most streams one key name may have open across all instances (flag
	// --max-streams-per-key); it must be positive.
	Limit int
	// KeyPrefix is prepended to the Redis keys: a key name's hash is
	// KeyPrefix+"quota:"+name (default "sse-gateway:", flag --redis-key-prefix).
	KeyPrefix string
	// Instance names this instance's field in the hashes; a random suffix is always added
	// (default "gateway").
	Instance string
	// TTL is how long an instance's share counts without a heartbeat; the heartbeat runs
	// every TTL/3 (default 30s).
	TTL time.Duration
	// Timeout bounds every Redis call (default 1s).
	Timeout time.Duration
}

// Quota is the cluster-wide per-key stream limit. Create it with New and call Run.
type Quota struct {
	client redis.UniversalClient
	cfg    Config
	field  string
	log    *slog.Logger

	// ops is held shared by Acquire and the release batches for their Redis call, and
	// exclusively by the heartbeat, whose absolute writes must not race an increment.
	ops sync.RWMutex

	mu      sync.Mutex
	held    map[string]int // streams holding a lease per key name, as applied to Redis; guarded by mu
	pending map[string]int // releases not yet sent to Redis; guarded by mu

	wake    chan struct{} // capacity 1: "pending changed"
	running atomic.Bool
}

// New returns a Quota on client. log may be nil.
func New(client redis.UniversalClient, cfg Config, log *slog.Logger) (*Quota, error) {
	if cfg.Limit <= 0 {
		return nil, fmt.Errorf("quota: --max-streams-per-key must be positive, got %d", cfg.Limit)
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = DefaultKeyPrefix
	}
	if cfg.Instance == "" {
		cfg.Instance = "gateway"
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var suffix [4]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return nil, fmt.Errorf("quota: %w", err)
	}
	return &Quota{
		client:  client,
		cfg:     cfg,
		field:   cfg.Instance + "/" + hex.EncodeToString(suffix[:]),
		log:     log,
		held:    make(map[string]int),
		pending: make(map[string]int),
		wake:    make(chan struct{}, 1),
	}, nil
}

// Field is this instance's field in the per-key hashes.
func (q *Quota) Field() string { return q.field }

func (q *Quota) redisKey(keyName string) string { return q.cfg.KeyPrefix + "quota:" + keyName }

func (q *Quota) ttlMillis() int64 { return q.cfg.TTL.Milliseconds() }

// acquireScript: KEYS[1] the key name's hash; ARGV field, limit, ttl ms. Returns 1 when the
// instance's count was incremented, 0 when the key is at its limit.
var acquireScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
local total, own = 0, 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local n, exp = string.match(all[i + 1], '^(%d+):(%d+)$')
  if all[i] == ARGV[1] then
    own = tonumber(n) or 0
  elseif n == nil or tonumber(exp) < now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    total = total + tonumber(n)
  end
end
if total + own >= tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:%d', own + 1, now + ttl))
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
`)

// luaWriteShare ends the scripts that change an instance's share: with its new count in the
// local n, it deletes the field when n is 0, or writes n with a fresh deadline (Redis clock)
// and makes sure the hash outlives it; it returns n.
const luaWriteShare = `
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:%d', n, now + ttl))
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return n
`

// releaseScript: KEYS[1] the key name's hash; ARGV field, how many, ttl ms. Returns the
// instance's remaining count.
var releaseScript = redis.NewScript(`
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then
  return 0
end
local n = (tonumber(string.match(v, '^(%d+):')) or 0) - tonumber(ARGV[2])
` + luaWriteShare)

// setScript: KEYS[1] the key name's hash; ARGV field, count, ttl ms. Writes the instance's
// absolute count with a fresh deadline (the heartbeat), or deletes its field when 0.
var setScript = redis.NewScript(`
local n = tonumber(ARGV[2])
` + luaWriteShare)

// countScript: KEYS[1] the key name's hash. Returns the sum of the live shares.
var countScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local total = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local n, exp = string.match(all[i + 1], '^(%d+):(%d+)$')
  if n ~= nil and tonumber(exp) >= now then
    total = total + tonumber(n)
  end
end
return total
`)

// Acquire reports whether one more stream of keyName may open, and if so takes a lease on
// it: release must be called exactly once when the stream closes (extra calls do nothing);
// it never blocks. On a Redis error nothing is held and the error is returned.
func (q *Quota) Acquire(ctx context.Context, keyName string) (release func(), ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, q.cfg.Timeout)
	defer cancel()
	q.ops.RLock()
	defer q.ops.RUnlock()
	n, err := acquireScript.Run(ctx, q.client, []string{q.redisKey(keyName)}, q.field, q.cfg.Limit, q.ttlMillis()).Int()
	if err != nil {
		// The script may have run and only its reply been lost; the next heartbeat writes
		// the true count either way.
		return nil, false, fmt.Errorf("quota: acquire %q: %w", keyName, err)
	}
	if n == 0 {
		return nil, false, nil
	}
	q.mu.Lock()
	q.held[keyName]++
	q.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { q.release(keyName) }) }, true, nil
}

// release queues one release of keyName for Run to send.
func (q *Quota) release(keyName string) {
	q.mu.Lock()
	q.pending[keyName]++
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Count reports how many streams of keyName are open across the live instances.
func (q *Quota) Count(ctx context.Context, keyName string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, q.cfg.Timeout)
	defer cancel()
	n, err := countScript.Run(ctx, q.client, []string{q.redisKey(keyName)}).Int()
	if err != nil {
		return 0, fmt.Errorf("quota: count %q: %w", keyName, err)
	}
	return n, nil
}

// Held reports how many streams of keyName this instance holds leases for, releases not yet
// sent included.
func (q *Quota) Held(keyName string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.held[keyName] - q.pending[keyName]
}

// Run sends queued releases and runs the heartbeat until ctx is done; then it sends what is
// left and removes this instance's share from every key, so that it stops counting at once
// rather than after TTL. It must be called once.
func (q *Quota) Run(ctx context.Context) error {
	if !q.running.CompareAndSwap(false, true) {
		return errors.New("quota: Run called twice")
	}
	beat := time.NewTicker(q.cfg.TTL / 3)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			q.shutdown()
			return nil
		case <-q.wake:
			q.flush(ctx)
		case <-beat.C:
			q.heartbeat(ctx)
		}
	}
}

// flush sends the queued releases in one pipeline. A release that fails is not retried:
// the stream is gone, so the local count drops anyway and the heartbeat corrects Redis.
func (q *Quota) flush(ctx context.Context) {
	q.ops.RLock()
	defer q.ops.RUnlock()
	q.mu.Lock()
	batch := q.pending
	q.pending = make(map[string]int)
	q.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, q.cfg.Timeout)
	defer cancel()
	// Eval, not EvalSha, in pipelines: a NOSCRIPT (Redis restarted) cannot be retried there.
	_, err := q.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for k, n := range batch {
			releaseScript.Eval(ctx, p, []string{q.redisKey(k)}, q.field, n, q.ttlMillis())
		}
		return nil
	})
	if err != nil {
		q.log.Debug("quota: release failed; the heartbeat will correct it", "err", err)
	}
	q.mu.Lock()
	for k, n := range batch {
		q.held[k] -= n
	}
	q.mu.Unlock()
}

// heartbeat writes this instance's absolute count of every key it holds (folding in the
// queued releases) with a fresh deadline, and forgets keys it holds none of once Redis has
// their field deleted.
func (q *Quota) heartbeat(ctx context.Context) {
	q.ops.Lock()
	defer q.ops.Unlock()
	q.mu.Lock()
	counts := make(map[string]int, len(q.held))
	for k, n := range q.pending {
		q.held[k] -= n
	}
	clear(q.pending)
	for k, n := range q.held {
		counts[k] = max(n, 0)
	}
	q.mu.Unlock()
	if len(counts) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, q.cfg.Timeout)
	defer cancel()
	_, err := q.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for k, n := range counts {
			setScript.Eval(ctx, p, []string{q.redisKey(k)}, q.field, n, q.ttlMillis())
		}
		return nil
	})
	if err != nil {
		q.log.Warn("quota: heartbeat failed; this instance's share expires if it keeps failing", "err", err)
		return
	}
	q.mu.Lock()
	for k, n := range counts {
		if n == 0 && q.held[k] == 0 {
			delete(q.held, k)
		}
	}
	q.mu.Unlock()
}

// shutdown removes this instance's field from every key it touched.
func (q *Quota) shutdown() {
	q.ops.Lock()
	defer q.ops.Unlock()
	q.mu.Lock()
	keys := make([]string, 0, len(q.held)+len(q.pending))
	for k := range q.held {
		keys = append(keys, k)
	}
	for k := range q.pending {
		if _, ok := q.held[k]; !ok {
			keys = append(keys, k)
		}
	}
	q.mu.Unlock()
	if len(keys) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), q.cfg.Timeout)
	defer cancel()
	_, err := q.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.HDel(ctx, q.redisKey(k), q.field)
		}
		return nil
	})
	if err != nil {
		q.log.Warn("quota: removing this instance's share failed; it expires by itself", "err", err, "ttl", q.cfg.TTL)
	}
}
