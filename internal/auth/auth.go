package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
)

// Errors returned by Store.Authorize.
var (
	// ErrUnknownKey: no configured key matches (401).
	ErrUnknownKey = errors.New("unknown key")
	// ErrChannelNotAllowed: the key exists but may not read one of the channels (403).
	ErrChannelNotAllowed = errors.New("channel not allowed for this key")
)

// Key is one configured subscribe key, without its secret.
type Key struct {
	// Name labels the key in logs and metrics.
	Name string
	// Hash is the SHA-256 of the secret.
	Hash [32]byte
	// Channels are the patterns the key may subscribe to; '*' matches any run of characters.
	Channels []string
}

// ID names one secret (a prefix of its hash, never the secret): rotating a key's secret
// revokes the streams opened with the old one, while renaming a key or moving it between
// sources does not.
func (k Key) ID() string { return hex.EncodeToString(k.Hash[:12]) }

// Allows reports whether the key may subscribe to channel.
func (k Key) Allows(channel string) bool {
	for _, p := range k.Channels {
		if Match(p, channel) {
			return true
		}
	}
	return false
}

// Grant is what a successful Authorize hands the stream.
type Grant struct {
	// Name is the key's name (a metric label).
	Name string
	// ID identifies the key's secret, for revocation.
	ID string
}

// HashKey is the at-rest form of a secret.
func HashKey(secret string) [32]byte { return sha256.Sum256([]byte(secret)) }

// Generate returns a new random secret: 32 bytes, URL-safe base64, safe in a query string.
func Generate() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// Store holds the keys of every source (the keys file, Redis, a generated key). Lookups
// are lock-free reads of an immutable snapshot; sources replace their part as a whole.
type Store struct {
	mu      sync.Mutex // serialises writers
	sources map[string][]Key
	snap    atomic.Pointer[map[[32]byte]Key]
	byID    atomic.Pointer[map[string]Key] // the same keys by Key.ID
}

// NewStore returns an empty Store: every key is unknown until a source is set.
func NewStore() *Store {
	s := &Store{sources: make(map[string][]Key)}
	empty := map[[32]byte]Key{}
	s.snap.Store(&empty)
	return s
}

// SetSource replaces the keys that came from source and returns the IDs of keys that no
// source holds any more, or whose channel patterns changed: their open streams must be
// checked again with Permits (and closed where it says no).
func (s *Store) SetSource(source string, keys []Key) (revoked []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sources[source] = append([]Key(nil), keys...)
	next := make(map[[32]byte]Key)
	names := make([]string, 0, len(s.sources))
	for name := range s.sources {
		names = append(names, name)
	}
	sort.Strings(names) // a secret held by two sources gets the same name on every reload
	for _, src := range names {
		for _, k := range s.sources[src] {
			if prev, ok := next[k.Hash]; ok {
				// The same secret in two sources: allow the union of their channels.
				k.Channels = append(append([]string(nil), prev.Channels...), k.Channels...)
			}
			next[k.Hash] = k
		}
	}
	for h, k := range *s.snap.Load() {
		if now, ok := next[h]; !ok || !slices.Equal(now.Channels, k.Channels) {
			revoked = append(revoked, k.ID())
		}
	}
	sort.Strings(revoked)
	byID := make(map[string]Key, len(next))
	for _, k := range next {
		byID[k.ID()] = k
	}
	s.snap.Store(&next)
	s.byID.Store(&byID)
	return revoked
}

// Permits reports whether the secret with this ID (see Key.ID) is still configured and may
// still read every one of channels: what an open stream checks after a key change.
func (s *Store) Permits(id string, channels []string) bool {
	m := s.byID.Load()
	if m == nil {
		return false
	}
	k, ok := (*m)[id]
	if !ok {
		return false
	}
	for _, ch := range channels {
		if !k.Allows(ch) {
			return false
		}
	}
	return true
}

// Len reports how many distinct keys are configured.
func (s *Store) Len() int { return len(*s.snap.Load()) }

// Authorize checks that secret is a configured key allowed to read every channel.
func (s *Store) Authorize(secret string, channels []string) (Grant, error) {
	k, ok := (*s.snap.Load())[HashKey(secret)]
	if !ok {
		return Grant{}, ErrUnknownKey
	}
	for _, ch := range channels {
		if !k.Allows(ch) {
			return Grant{}, fmt.Errorf("%w: %q", ErrChannelNotAllowed, ch)
		}
	}
	return Grant{Name: k.Name, ID: k.ID()}, nil
}

// Match reports whether name matches pattern, where '*' matches any run of characters
// (including none) and every other character matches itself. Unlike path.Match there are no
// other metacharacters, so channel names need no escaping.
func Match(pattern, name string) bool {
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
