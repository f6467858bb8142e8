package auth

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

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
