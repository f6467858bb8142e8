package auth

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestMatch(t *testing.T) {
	cases := []struct {
		pattern, name string
		want          bool
	}{
		{"*", "", true},
		{"*", "anything", true},
		{"", "", true},
		{"", "a", false},
		{"a", "", false},
		{"abc", "abc", true},
		{"abc", "abd", false},
		{"abc", "ab", false},
		{"ab", "abc", false},
		{"dvc_server_*", "dvc_server_123", true},
		{"dvc_server_*", "dvc_server_", true},
		{"dvc_server_*", "dvc_client_123", false},
		{"dvc_server_*", "xdvc_server_1", false},
		{"*_prod", "env_prod", true},
		{"*_prod", "env_prod_x", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "a__b__c", true},
		{"a*b*c", "a__c__b", false},
		{"a*b*c", "abcbc", true},
		{"a*b*c", "abcb", false},
		{"*a*", "bab", true},
		{"*a*", "bbb", false},
		{"**", "x", true},
		{"a**b", "ab", true},
		{"a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab", true},
		{"a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
		{"*ab", "aab", true},
		{"*aab", "aaab", true},
		{"dvc_*_prod", "dvc_server_prod", true},
		{"dvc_*_prod", "dvc__prod", true},
		{"dvc_*_prod", "dvc_prod", false},
		// No other metacharacters: these match only themselves.
		{"a?c", "abc", false},
		{"a?c", "a?c", true},
		{"[ab]", "a", false},
		{"[ab]", "[ab]", true},
		{"a.b", "aXb", false},
		{`a\*`, `a\xyz`, true},
		// Case matters.
		{"DVC_*", "dvc_x", false},
	}
	for _, c := range cases {
		if got := Match(c.pattern, c.name); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

func TestKeyAllows(t *testing.T) {
	k := Key{Name: "k", Channels: []string{"dvc_server_*", "exact"}}
	for name, want := range map[string]bool{"dvc_server_1": true, "exact": true, "exactly": false, "dvc_client_1": false} {
		if k.Allows(name) != want {
			t.Errorf("Allows(%q) = %v", name, !want)
		}
	}
	if (Key{Name: "none"}).Allows("x") {
		t.Error("a key without patterns allows nothing")
	}
}

func TestKeyIDNamesTheSecret(t *testing.T) {
	a := Key{Name: "prod", Hash: HashKey("one")}
	b := Key{Name: "prod", Hash: HashKey("two")}
	if a.ID() == b.ID() {
		t.Fatal("two secrets of one key share an ID")
	}
	if strings.Contains(a.ID(), "one") {
		t.Fatalf("ID %q shows the secret", a.ID())
	}
	if renamed := (Key{Name: "renamed", Hash: a.Hash}); renamed.ID() != a.ID() {
		t.Fatalf("renaming a key changed its secret's ID: %q vs %q", renamed.ID(), a.ID())
	}
}

func TestAuthorize(t *testing.T) {
	s := NewStore()
	if _, err := s.Authorize("anything", []string{"c"}); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("empty store: %v", err)
	}
	s.SetSource("file", []Key{
		{Name: "server", Hash: HashKey("s3cret"), Channels: []string{"dvc_server_*"}},
		{Name: "client", Hash: HashKey("c1ient"), Channels: []string{"dvc_client_*", "public"}},
	})
	if s.Len() != 2 {
		t.Fatalf("Len = %d", s.Len())
	}
	cases := []struct {
		secret   string
		channels []string
		err      error
		name     string
	}{
		{"s3cret", []string{"dvc_server_1"}, nil, "server"},
		{"s3cret", []string{"dvc_server_1", "dvc_server_2"}, nil, "server"},
		{"c1ient", []string{"public", "dvc_client_9"}, nil, "client"},
		{"s3cret", []string{"dvc_server_1", "dvc_client_1"}, ErrChannelNotAllowed, ""},
		{"c1ient", []string{"dvc_server_1"}, ErrChannelNotAllowed, ""},
		{"wrong", []string{"dvc_server_1"}, ErrUnknownKey, ""},
		{"", []string{"dvc_server_1"}, ErrUnknownKey, ""},
		{"S3CRET", []string{"dvc_server_1"}, ErrUnknownKey, ""},
		{"s3cret ", []string{"dvc_server_1"}, ErrUnknownKey, ""},
	}
	for _, c := range cases {
		g, err := s.Authorize(c.secret, c.channels)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("Authorize(%q, %v) err = %v, want %v", c.secret, c.channels, err, c.err)
			}
			if err != nil && strings.Contains(err.Error(), c.secret) && c.secret != "" {
				t.Errorf("error %q shows the secret", err)
			}
			continue
		}
		if err != nil || g.Name != c.name || g.ID != (Key{Name: c.name, Hash: HashKey(c.secret)}).ID() {
			t.Errorf("Authorize(%q, %v) = %+v, %v", c.secret, c.channels, g, err)
		}
	}
	// The 403 error names the channel that was refused (the stream's JSON error shows it).
	_, err := s.Authorize("s3cret", []string{"dvc_server_1", "dvc_client_7"})
	if err == nil || !strings.Contains(err.Error(), "dvc_client_7") {
		t.Fatalf("403 error %v does not name the channel", err)
	}
}

func TestSetSourceRevocation(t *testing.T) {
	s := NewStore()
	prod := Key{Name: "prod", Hash: HashKey("p1"), Channels: []string{"*"}}
	dev := Key{Name: "dev", Hash: HashKey("d1"), Channels: []string{"dev_*"}}
	if r := s.SetSource("file", []Key{prod, dev}); len(r) != 0 {
		t.Fatalf("first load revoked %v", r)
	}
	// Same keys again: nothing revoked.
	if r := s.SetSource("file", []Key{dev, prod}); len(r) != 0 {
		t.Fatalf("reload revoked %v", r)
	}
	// Narrowing channels keeps the key (same secret, same ID), but its streams must be
	// checked again: the ID is reported, and Permits decides per stream.
	if r := s.SetSource("file", []Key{prod, {Name: "dev", Hash: dev.Hash, Channels: []string{"dev_a"}}}); !slices.Equal(r, []string{dev.ID()}) {
		t.Fatalf("narrowing reported %v, want [%s] to recheck", r, dev.ID())
	}
	if !s.Permits(dev.ID(), []string{"dev_a"}) || s.Permits(dev.ID(), []string{"dev_b"}) {
		t.Fatal("after narrowing, Permits must allow dev_a and refuse dev_b")
	}
	if _, err := s.Authorize("d1", []string{"dev_b"}); !errors.Is(err, ErrChannelNotAllowed) {
		t.Fatalf("narrowed key still allows dev_b: %v", err)
	}
	// Removal.
	if r := s.SetSource("file", []Key{prod}); !slices.Equal(r, []string{dev.ID()}) {
		t.Fatalf("removing dev revoked %v, want [%s]", r, dev.ID())
	}
	if _, err := s.Authorize("d1", []string{"dev_a"}); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("removed key still authorises: %v", err)
	}
	// Rotation: same name, new secret: the old secret's ID is revoked; the new one works.
	g, _ := s.Authorize("p1", []string{"x"})
	prod2 := Key{Name: "prod", Hash: HashKey("p2"), Channels: []string{"*"}}
	if r := s.SetSource("file", []Key{prod2}); !slices.Equal(r, []string{g.ID}) {
		t.Fatalf("rotation revoked %v, want [%s]", r, g.ID)
	}
	if _, err := s.Authorize("p1", []string{"x"}); !errors.Is(err, ErrUnknownKey) {
		t.Fatal("old secret still works after rotation")
	}
	if g2, err := s.Authorize("p2", []string{"x"}); err != nil || g2.ID == g.ID || g2.Name != "prod" {
		t.Fatalf("new secret: %+v %v", g2, err)
	}

	// Sources are independent: emptying one source does not revoke another's keys, and
	// the revoked list is sorted.
	gen := Key{Name: "default", Hash: HashKey("g"), Channels: []string{"*"}}
	s.SetSource("generated", []Key{gen})
	a := Key{Name: "a", Hash: HashKey("a"), Channels: []string{"*"}}
	b := Key{Name: "b", Hash: HashKey("b"), Channels: []string{"*"}}
	s.SetSource("file", []Key{prod2, b, a})
	r := s.SetSource("file", nil)
	want := []string{a.ID(), b.ID(), prod2.ID()}
	slices.Sort(want)
	if !slices.Equal(r, want) {
		t.Fatalf("emptying file revoked %v, want %v", r, want)
	}
	if _, err := s.Authorize("g", []string{"x"}); err != nil {
		t.Fatalf("generated key lost: %v", err)
	}
}

func TestSetSourceSameSecretInTwoSources(t *testing.T) {
	s := NewStore()
	s.SetSource("file", []Key{{Name: "k", Hash: HashKey("x"), Channels: []string{"a_*"}}})
	s.SetSource("redis", []Key{{Name: "k", Hash: HashKey("x"), Channels: []string{"b_*"}}})
	if _, err := s.Authorize("x", []string{"a_1", "b_1"}); err != nil {
		t.Fatalf("the same secret in two sources must allow the union: %v", err)
	}
	id := Key{Hash: HashKey("x")}.ID()
	if r := s.SetSource("file", nil); !slices.Equal(r, []string{id}) {
		t.Fatalf("the secret lost the file's channels: reported %v, want [%s] to recheck", r, id)
	}
	if !s.Permits(id, []string{"b_1"}) || s.Permits(id, []string{"a_1"}) {
		t.Fatal("secret still held by redis: Permits must allow b_1 and refuse a_1")
	}
	if _, err := s.Authorize("x", []string{"a_1"}); !errors.Is(err, ErrChannelNotAllowed) {
		t.Fatalf("channels of the removed source still allowed: %v", err)
	}
}

// TestRevocationReachesStreamsOfARenamedSecret: a stream is revoked by the Grant.ID it was
// opened with. When the same secret is held by two sources under different names and both
// drop it, the ID reported must be the one the stream holds, or the stream stays open on a
// secret no source has any more.
func TestRevocationReachesStreamsOfARenamedSecret(t *testing.T) {
	s := NewStore()
	s.SetSource("file", []Key{{Name: "old-name", Hash: HashKey("x"), Channels: []string{"*"}}})
	g, err := s.Authorize("x", []string{"c"})
	if err != nil {
		t.Fatal(err)
	}
	s.SetSource("redis", []Key{{Name: "new-name", Hash: HashKey("x"), Channels: []string{"*"}}})
	var revoked []string
	revoked = append(revoked, s.SetSource("file", nil)...)
	revoked = append(revoked, s.SetSource("redis", nil)...)
	if _, err := s.Authorize("x", []string{"c"}); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("secret still valid: %v", err)
	}
	if !slices.Contains(revoked, g.ID) {
		t.Fatalf("the secret is gone from every source, but revoked %v never names the stream's grant %q", revoked, g.ID)
	}
}

func TestStoreConcurrentReadsAndWrites(t *testing.T) {
	s := NewStore()
	k := Key{Name: "k", Hash: HashKey("k"), Channels: []string{"*"}}
	s.SetSource("file", []Key{k})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.Authorize("k", []string{"c"}); err != nil {
					t.Error(err)
					return
				}
				_ = s.Len()
			}
		})
	}
	for i := range 500 {
		s.SetSource("other", []Key{{Name: "o", Hash: HashKey(string(rune(i))), Channels: []string{"*"}}})
	}
	close(stop)
	wg.Wait()
}

func TestGenerate(t *testing.T) {
	a, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Generate()
	if a == b {
		t.Fatal("two generated keys are equal")
	}
	raw, err := base64.RawURLEncoding.DecodeString(a)
	if err != nil || len(raw) != 32 {
		t.Fatalf("key %q: %d bytes, %v", a, len(raw), err)
	}
	if strings.ContainsAny(a, "+/=%&? ") {
		t.Fatalf("key %q is not query-safe", a)
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadFile(t *testing.T) {
	p := writeFile(t, `{"keys":[
		{"name":"prod","key":"prod-secret-1","channels":["dvc_server_*","dvc_client_*"]},
		{"name":"dev","key":"dev-secret-2","channels":["dev_*"]}]}`)
	keys, err := LoadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].Name != "prod" || keys[0].Hash != HashKey("prod-secret-1") ||
		!slices.Equal(keys[0].Channels, []string{"dvc_server_*", "dvc_client_*"}) || keys[1].Name != "dev" {
		t.Fatalf("keys %+v", keys)
	}
	s := NewStore()
	s.SetSource("file", keys)
	if g, err := s.Authorize("dev-secret-2", []string{"dev_x"}); err != nil || g.Name != "dev" {
		t.Fatalf("loaded key: %+v %v", g, err)
	}
	empty, err := LoadFile(writeFile(t, `{"keys":[]}`))
	if err != nil || len(empty) != 0 {
		t.Fatalf("empty list: %v %v", empty, err)
	}
}

func TestLoadFileErrorsNeverShowTheSecret(t *testing.T) {
	const secret = "TOPSECRET-4f9a2c"
	cases := []struct {
		name    string
		content string
		want    string // a fragment the error must contain
	}{
		{"not json", `keys: [` + secret + `]`, "keys file"},
		{"truncated", `{"keys":[{"name":"a","key":"` + secret + `"`, "keys file"},
		{"missing comma", `{"keys":[{"name":"a","key":"` + secret + `" "channels":["*"]}]}`, "keys file"},
		{"unknown field", `{"keys":[{"name":"a","key":"` + secret + `","channels":["*"],"chanels":["x"]}]}`, "chanels"},
		{"unknown top field", `{"keys":[],"secret":"` + secret + `"}`, "keys file"},
		{"key not a string", `{"keys":[{"name":"a","key":["` + secret + `"],"channels":["*"]}]}`, "keys file"},
		{"numeric key", `{"keys":[{"name":"a","key":4242424242424242,"channels":["*"]}]}`, "keys file"},
		{"channels not a list", `{"keys":[{"name":"a","key":"` + secret + `","channels":"*"}]}`, "keys file"},
		{"no name", `{"keys":[{"name":" ","key":"` + secret + `","channels":["*"]}]}`, "entry 0"},
		{"duplicate name", `{"keys":[{"name":"a","key":"x1","channels":["*"]},{"name":"a","key":"` + secret + `","channels":["*"]}]}`, `"a"`},
		{"empty secret", `{"keys":[{"name":"a","key":"","channels":["*"]}]}`, `"a"`},
		{"no channels", `{"keys":[{"name":"a","key":"` + secret + `","channels":[]}]}`, `"a"`},
		{"missing channels", `{"keys":[{"name":"a","key":"` + secret + `"}]}`, `"a"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			keys, err := LoadFile(writeFile(t, c.content))
			if err == nil {
				t.Fatalf("loaded %+v", keys)
			}
			msg := err.Error()
			if strings.Contains(msg, secret) || strings.Contains(msg, "TOPSECRET") || strings.Contains(msg, "4242424242") {
				t.Fatalf("error shows the secret: %s", msg)
			}
			if !strings.Contains(msg, c.want) {
				t.Fatalf("error %q does not contain %q", msg, c.want)
			}
		})
	}
	if _, err := LoadFile(filepath.Join(t.TempDir(), "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestLoadFileTooLarge(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.json")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	// A sparse file larger than the limit: refused without being read.
	if err := f.Truncate(maxKeysFile + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := LoadFile(p); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized keys file: %v", err)
	}
}

// A FileSource reload revokes what the file no longer holds, and a rejected file keeps the
// current keys.
func TestFileSourceReload(t *testing.T) {
	p := writeFile(t, `{"keys":[{"name":"a","key":"sa","channels":["*"]},{"name":"b","key":"sb","channels":["*"]}]}`)
	store := NewStore()
	var revoked []string
	src := NewFileSource(p, store, func(ids []string) int { revoked = append(revoked, ids...); return len(ids) }, nil)
	if err := src.Load(); err != nil || store.Len() != 2 {
		t.Fatalf("Load = %v with %d keys, want 2 keys", err, store.Len())
	}
	if err := os.WriteFile(p, []byte(`{"keys":[{"name":"a","key":"sa","channels":["*"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	src.Reload()
	if store.Len() != 1 || len(revoked) != 1 || revoked[0] != (Key{Hash: HashKey("sb")}).ID() {
		t.Fatalf("after reload: %d keys, revoked %v; want 1 key and b revoked", store.Len(), revoked)
	}
	if err := os.WriteFile(p, []byte(`{"keys":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	src.Reload()
	if _, err := store.Authorize("sa", []string{"x"}); err != nil || len(revoked) != 1 {
		t.Fatalf("a rejected file changed the keys: %v, revoked %v", err, revoked)
	}
	if err := NewFileSource(filepath.Join(t.TempDir(), "missing.json"), store, nil, nil).Load(); err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
}
