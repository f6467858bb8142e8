package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/internal/redistest"
)

// keysCmd runs `sse-gateway keys args...` in process and returns its exit code and output.
func keysCmd(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = runKeys(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// The whole life of a key kept in Redis, through the CLI and a running gateway: added keys
// work as soon as the notification arrives (the periodic reload is 30 s away; how long it
// took is logged), only hashes are stored, rotation and revocation close the key's open
// streams at once.
func TestKeysInRedis(t *testing.T) {
	srv := redistest.Start(t)
	redisArgs := []string{"--redis-url", srv.URL(), "--redis-key-prefix", "t:"}
	g := startGateway(t, append([]string{"--keys-redis"}, redisArgs...)...)
	c := newClient(t)
	g.waitReady(c)

	code, secret, stderr := keysCmd(append([]string{"add", "--name", "prod", "--channels", "dvc_*, x_*"}, redisArgs...)...)
	secret = strings.TrimSpace(secret)
	if code != 0 || secret == "" || strings.ContainsAny(secret, " \n") {
		t.Fatalf("keys add: exit %d, stdout %q, stderr %q", code, secret, stderr)
	}
	if !strings.Contains(stderr, "1 gateway(s) notified") || strings.Contains(stderr, secret) {
		t.Fatalf("keys add stderr %q: want the notification count and never the key", stderr)
	}
	var s1 *sseStream
	took := waitFor(t, waitLimit, "the new key to open a stream", func() bool {
		s, resp := openStream(t, c, g.streamURL(secret, "dvc_a"))
		if s == nil {
			resp.Body.Close()
			return false
		}
		s1 = s
		return true
	})
	t.Logf("new key usable after %v", took)
	if _, resp := openStream(t, c, g.streamURL(secret, "other")); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("channel outside the key's patterns: %s, want 403", resp.Status)
	}

	// At rest: the SHA-256 of the key, never the key.
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	stored, err := rdb.HGetAll(context.Background(), "t:keys").Result()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(secret))
	if !strings.Contains(stored["prod"], hex.EncodeToString(sum[:])) {
		t.Fatalf("stored %q lacks the key's SHA-256", stored["prod"])
	}
	for f, v := range stored {
		if strings.Contains(f+v, secret) {
			t.Fatalf("the key itself is stored in Redis (field %q)", f)
		}
	}

	if code, _, stderr := keysCmd(append([]string{"add", "--name", "prod", "--channels", "*"}, redisArgs...)...); code != 1 || !strings.Contains(stderr, "exists") {
		t.Fatalf("keys add of an existing name: exit %d, %q; want 1 and 'exists'", code, stderr)
	}
	if code, _, _ := keysCmd(append([]string{"add", "--name", "staging", "--channels", "stg_*"}, redisArgs...)...); code != 0 {
		t.Fatal("keys add staging failed")
	}
	code, list, _ := keysCmd(append([]string{"list"}, redisArgs...)...)
	if code != 0 || !strings.Contains(list, "prod") || !strings.Contains(list, "dvc_*,x_*") ||
		!strings.Contains(list, "staging") || !strings.Contains(list, time.Now().UTC().Format("2006-01-02")) {
		t.Fatalf("keys list: exit %d:\n%s", code, list)
	}
	if strings.Contains(list, secret) || strings.Contains(list, hex.EncodeToString(sum[:])[:16]) || strings.Contains(list, "_meta") {
		t.Fatalf("keys list shows a secret, a hash or internals:\n%s", list)
	}

	// Rotation: the old secret's stream closes at once, the old secret is refused, the new
	// one works.
	code, rotated, _ := keysCmd(append([]string{"add", "--name", "prod", "--channels", "dvc_*", "--rotate"}, redisArgs...)...)
	rotated = strings.TrimSpace(rotated)
	if code != 0 || rotated == "" || rotated == secret {
		t.Fatalf("keys add --rotate: exit %d", code)
	}
	if !s1.closedWithin(waitLimit) {
		t.Fatal("the rotated key's stream stayed open")
	}
	if _, resp := openStream(t, c, g.streamURL(secret, "dvc_a")); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("old secret after rotation: %s, want 401", resp.Status)
	}
	s2 := mustOpen(t, c, g.streamURL(rotated, "dvc_a"))

	// Revocation, with the Redis URL from the environment.
	t.Setenv("SSE_GATEWAY_REDIS_URL", srv.URL())
	t.Setenv("SSE_GATEWAY_REDIS_KEY_PREFIX", "t:")
	if code, _, stderr := keysCmd("revoke", "--name", "prod"); code != 0 {
		t.Fatalf("keys revoke: exit %d: %s", code, stderr)
	}
	if !s2.closedWithin(waitLimit) {
		t.Fatal("the revoked key's stream stayed open")
	}
	if _, resp := openStream(t, c, g.streamURL(rotated, "dvc_a")); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("revoked key: %s, want 401", resp.Status)
	}
	if code, _, _ := keysCmd("revoke", "--name", "prod"); code != 1 {
		t.Fatalf("revoking a missing key: exit %d, want 1", code)
	}
	if code, list, _ := keysCmd("list"); code != 0 || strings.Contains(list, "prod") || !strings.Contains(list, "staging") {
		t.Fatalf("keys list after revoke: exit %d:\n%s", code, list)
	}
}

func TestKeysUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"add", "--name", "x", "--channels", "*"}, // no --redis-url
		{"add", "--redis-url", "redis://127.0.0.1:1", "--channels", "*"},
		{"add", "--redis-url", "redis://127.0.0.1:1", "--name", "bad name", "--channels", "*"},
		{"add", "--redis-url", "redis://127.0.0.1:1", "--name", "x"},
		{"add", "--redis-url", "redis://127.0.0.1:1", "--name", "x", "--channels", "a b"},
		{"revoke", "--redis-url", "redis://127.0.0.1:1"},
		{"list", "--redis-url", "not-a-url"},
		{"list", "--redis-url", "redis://127.0.0.1:1", "extra"},
	} {
		if code, stdout, _ := keysCmd(args...); code != 2 || stdout != "" {
			t.Errorf("keys %q: exit %d, stdout %q; want 2 and nothing on stdout", args, code, stdout)
		}
	}
	// Redis unreachable: a runtime failure, not a usage error.
	if code, _, _ := keysCmd("list", "--redis-url", "redis://127.0.0.1:1", "--timeout", "500ms"); code != 1 {
		t.Errorf("keys list against no Redis: exit %d, want 1", code)
	}
}
