package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/sse-gateway/sse-gateway/internal/redistest"
)

const testPrefix = "gw-test:"

// leakCheck fails t if goroutines started during the test outlive it (checked after every
// other cleanup). Only for tests that do not run in parallel.
func leakCheck(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

func testClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr: addr, DialTimeout: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond,
		WriteTimeout: 300 * time.Millisecond,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// revocations records what a RedisSource revoked.
type revocations struct {
	mu  sync.Mutex
	ids []string
}

func (r *revocations) add(ids []string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, ids...)
	return len(ids)
}

func (r *revocations) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.ids {
		if x == id {
			return true
		}
	}
	return false
}

// runSource runs a RedisSource over a fresh client until t ends.
func runSource(t *testing.T, addr string, store *Store, rev *revocations, cfg RedisSourceConfig) *RedisSource {
	t.Helper()
	return runSourceLog(t, addr, store, rev, cfg, nil)
}

// runSourceLog is runSource with the source's logger.
func runSourceLog(t *testing.T, addr string, store *Store, rev *revocations, cfg RedisSourceConfig, log *slog.Logger) *RedisSource {
	t.Helper()
	src := NewRedisSource(NewRedisKeys(testClient(t, addr), testPrefix), store, rev.add, cfg, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return within 5s of its context ending")
		}
	})
	return src
}

// waitLimit bounds every wait here: running out is a failure, never a measurement. What a
// wait tells apart is never a slower success: with ReloadInterval an hour, only the
// notification (or the re-subscription) under test can bring a change within it.
const waitLimit = 20 * time.Second

// commandCalls reads how many times Redis has run cmd (INFO commandstats): a record kept by
// the server, for negative checks that must know a moment has passed.
func commandCalls(t *testing.T, c *redis.Client, cmd string) int {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls="); ok {
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest+",", ',')])
			return n
		}
	}
	return 0
}

// recordLog is a slog handler keeping every message, for a test to wait on one.
type recordLog struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recordLog) Enabled(context.Context, slog.Level) bool { return true }
func (r *recordLog) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}
func (r *recordLog) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recordLog) WithGroup(string) slog.Handler      { return r }

func (r *recordLog) count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if strings.Contains(m, msg) {
			n++
		}
	}
	return n
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func authorizes(s *Store, secret, channel string) bool {
	_, err := s.Authorize(secret, []string{channel})
	return err == nil
}

func keyID(name, secret string) string {
	return Key{Name: name, Hash: HashKey(secret)}.ID()
}

func TestRedisKeysAdmin(t *testing.T) {
	leakCheck(t)
	srv := redistest.Start(t)
	c := testClient(t, srv.Addr())
	rk := NewRedisKeys(c, testPrefix)
	ctx := context.Background()

	secret, _, err := rk.Add(ctx, "prod", []string{"dvc_*", "x_*"}, false)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := c.HGetAll(ctx, testPrefix+"keys").Result()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(secret))
	var sk storedKey
	if err := json.Unmarshal([]byte(raw["prod"]), &sk); err != nil {
		t.Fatalf("stored value %q: %v", raw["prod"], err)
	}
	if sk.Hash != hex.EncodeToString(sum[:]) {
		t.Fatalf("stored hash %q, want the SHA-256 hex of the secret", sk.Hash)
	}
	if strings.Join(sk.Channels, ",") != "dvc_*,x_*" || sk.Created.IsZero() || time.Since(sk.Created) > time.Minute {
		t.Fatalf("stored %+v: wrong channels or created", sk)
	}
	for f, v := range raw {
		if strings.Contains(f+v, secret) {
			t.Fatalf("the secret is stored in Redis (field %q)", f)
		}
	}
	if _, ok := raw[metaField]; !ok {
		t.Fatalf("no %s field: %v", metaField, raw)
	}

	if _, _, err := rk.Add(ctx, "prod", []string{"*"}, false); !errors.Is(err, ErrKeyExists) {
		t.Fatalf("Add of an existing name = %v, want ErrKeyExists", err)
	}
	rotated, _, err := rk.Add(ctx, "prod", []string{"dvc_*"}, true)
	if err != nil || rotated == secret {
		t.Fatalf("rotate: %v (same secret: %v)", err, rotated == secret)
	}
	if _, _, err := rk.Add(ctx, "staging", []string{"stg_*"}, false); err != nil {
		t.Fatal(err)
	}
	list, err := rk.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "prod" || list[1].Name != "staging" ||
		strings.Join(list[0].Channels, ",") != "dvc_*" || list[0].Created.IsZero() {
		t.Fatalf("List = %+v", list)
	}

	if _, err := rk.Revoke(ctx, "prod"); err != nil {
		t.Fatal(err)
	}
	if _, err := rk.Revoke(ctx, "prod"); !errors.Is(err, ErrNoSuchKey) {
		t.Fatalf("second Revoke = %v, want ErrNoSuchKey", err)
	}
	if _, err := rk.Revoke(ctx, metaField); !errors.Is(err, ErrNoSuchKey) {
		t.Fatalf("Revoke(%s) = %v, want ErrNoSuchKey", metaField, err)
	}

	for _, tc := range []struct {
		name     string
		channels []string
	}{
		{"", []string{"*"}},
		{"_meta", []string{"*"}},
		{"has space", []string{"*"}},
		{strings.Repeat("n", 65), []string{"*"}},
		{"ok", nil},
		{"ok", []string{""}},
		{"ok", []string{"a,b"}},
		{"ok", []string{"a b"}},
	} {
		if _, _, err := rk.Add(ctx, tc.name, tc.channels, false); err == nil {
			t.Errorf("Add(%q, %q) accepted", tc.name, tc.channels)
		}
	}
}

// Changes reach a running source through the notification (the periodic reload is an hour
// away), and a rotated or revoked key's ID is handed to onRevoked.
func TestRedisSourceFollowsNotifications(t *testing.T) {
	leakCheck(t)
	srv := redistest.Start(t)
	rk := NewRedisKeys(testClient(t, srv.Addr()), testPrefix)
	store := NewStore()
	rev := &revocations{}
	src := runSource(t, srv.Addr(), store, rev, RedisSourceConfig{ReloadInterval: time.Hour})
	waitUntil(t, waitLimit, "the first load", src.Loaded)
	ctx := context.Background()

	secret, notified, err := rk.Add(ctx, "prod", []string{"dvc_*"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if notified != 1 {
		t.Fatalf("Add notified %d gateways, want 1", notified)
	}
	took := waitUntil(t, waitLimit, "the added key to authorize", func() bool { return authorizes(store, secret, "dvc_a") })
	t.Logf("added key usable after %v", took)
	if authorizes(store, secret, "other") {
		t.Fatal("key authorizes a channel outside its patterns")
	}

	rotated, _, err := rk.Add(ctx, "prod", []string{"dvc_*"}, true)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, waitLimit, "the rotation", func() bool { return authorizes(store, rotated, "dvc_a") })
	if authorizes(store, secret, "dvc_a") {
		t.Fatal("the old secret still authorizes after rotation")
	}
	if !rev.has(keyID("prod", secret)) {
		t.Fatal("rotation did not revoke the old secret's ID")
	}

	if _, err := rk.Revoke(ctx, "prod"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, waitLimit, "the revocation", func() bool { return rev.has(keyID("prod", rotated)) })
	if authorizes(store, rotated, "dvc_a") {
		t.Fatal("a revoked key still authorizes")
	}
}

// A change nobody announced is picked up by the periodic reload.
func TestRedisSourcePeriodicReload(t *testing.T) {
	leakCheck(t)
	srv := redistest.Start(t)
	c := testClient(t, srv.Addr())
	store := NewStore()
	src := runSource(t, srv.Addr(), store, &revocations{}, RedisSourceConfig{ReloadInterval: 200 * time.Millisecond})
	waitUntil(t, waitLimit, "the first load", src.Loaded)
	sum := sha256.Sum256([]byte("s3cret"))
	v, _ := json.Marshal(storedKey{Hash: hex.EncodeToString(sum[:]), Channels: []string{"*"}, Created: time.Now()})
	if err := c.HSet(context.Background(), testPrefix+"keys", "quiet", v).Err(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, waitLimit, "the periodic reload", func() bool { return authorizes(store, "s3cret", "x") })
}

// When the subscription is re-established, the source reloads: changes whose notification
// it missed while it had no subscription are picked up.
func TestRedisSourceReloadsOnResubscribe(t *testing.T) {
	leakCheck(t)
	srv := redistest.Start(t)
	c := testClient(t, srv.Addr())
	store := NewStore()
	src := runSource(t, srv.Addr(), store, &revocations{}, RedisSourceConfig{ReloadInterval: time.Hour, PingInterval: 50 * time.Millisecond})
	waitUntil(t, waitLimit, "the first load", src.Loaded)
	ctx := context.Background()
	sum := sha256.Sum256([]byte("missed"))
	v, _ := json.Marshal(storedKey{Hash: hex.EncodeToString(sum[:]), Channels: []string{"*"}, Created: time.Now()})
	reads := commandCalls(t, c, "hgetall")
	pings := commandCalls(t, c, "ping")
	if err := c.HSet(ctx, testPrefix+"keys", "missed", v).Err(); err != nil { // no PUBLISH
		t.Fatal(err)
	}
	// The source pings its quiet subscription every PingInterval: two pings after the
	// change prove its loop ran past it, and Redis saw no reload (HGETALL) meanwhile.
	waitUntil(t, waitLimit, "two pings of the subscription after the change", func() bool { return commandCalls(t, c, "ping") >= pings+2 })
	if n := commandCalls(t, c, "hgetall"); n != reads || authorizes(store, "missed", "x") {
		t.Fatalf("an unannounced change was loaded (%d reloads) without a reconnect or a periodic reload", n-reads)
	}
	if err := c.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, waitLimit, "the reload after re-subscribing", func() bool { return authorizes(store, "missed", "x") })
}

// Redis coming back empty (no persistence) must not revoke every key; keys added after it
// are loaded, and from then on the hash is the truth again.
func TestRedisSourceSurvivesDataLoss(t *testing.T) {
	leakCheck(t)
	srv := redistest.Start(t)
	store := NewStore()
	rev := &revocations{}
	src := runSource(t, srv.Addr(), store, rev, RedisSourceConfig{ReloadInterval: time.Hour, PingInterval: 200 * time.Millisecond})
	waitUntil(t, waitLimit, "the first load", src.Loaded)
	rk := NewRedisKeys(testClient(t, srv.Addr()), testPrefix)
	ctx := context.Background()
	old, _, err := rk.Add(ctx, "old", []string{"*"}, false)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, waitLimit, "the key", func() bool { return authorizes(store, old, "x") })

	before := src.Reloads()
	srv.Kill()
	srv.Restart() // empty
	waitUntil(t, waitLimit, "a reload after Redis came back", func() bool { return src.Reloads() > before })
	if !authorizes(store, old, "x") {
		t.Fatal("Redis losing its data revoked the keys")
	}

	fresh, _, err := rk.Add(ctx, "fresh", []string{"*"}, false)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, waitLimit, "the key added after the loss", func() bool { return authorizes(store, fresh, "x") })
	if authorizes(store, old, "x") || !rev.has(keyID("old", old)) {
		t.Fatal("a key missing from a present hash was not revoked")
	}
}

// One unreadable entry is skipped; the others still load.
func TestRedisSourceSkipsBadEntries(t *testing.T) {
	leakCheck(t)
	srv := redistest.Start(t)
	c := testClient(t, srv.Addr())
	rk := NewRedisKeys(c, testPrefix)
	ctx := context.Background()
	good, _, err := rk.Add(ctx, "good", []string{"*"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.HSet(ctx, testPrefix+"keys", "bad", `{"hash":"zz","channels":["*"]}`, "worse", "not json").Err(); err != nil {
		t.Fatal(err)
	}
	keys, present, bad, err := rk.Load(ctx)
	if err != nil || !present || len(keys) != 1 || keys[0].Name != "good" || len(bad) != 2 {
		t.Fatalf("Load = %v keys, present %v, %d bad, err %v", keys, present, len(bad), err)
	}
	store := NewStore()
	src := runSource(t, srv.Addr(), store, &revocations{}, RedisSourceConfig{})
	waitUntil(t, waitLimit, "the first load", src.Loaded)
	if !authorizes(store, good, "x") {
		t.Fatal("a good key was not loaded next to bad entries")
	}
}

// Until Redis answers once, the source is not loaded (the gateway is not ready).
func TestRedisSourceNotLoadedWithoutRedis(t *testing.T) {
	leakCheck(t)
	srv := redistest.Start(t)
	srv.Kill()
	store := NewStore()
	log := &recordLog{}
	src := runSourceLog(t, srv.Addr(), store, &revocations{}, RedisSourceConfig{ReloadInterval: time.Hour}, slog.New(log))
	// Three failed subscription attempts: the source has tried Redis, and must not be loaded.
	waitUntil(t, waitLimit, "three failed subscription attempts", func() bool { return log.count("subscription lost") >= 3 })
	if src.Loaded() {
		t.Fatal("Loaded without Redis")
	}
	srv.Restart()
	waitUntil(t, waitLimit, "the first load once Redis is up", src.Loaded)
}
