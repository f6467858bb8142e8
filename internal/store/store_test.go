package store

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// fakeHub records what Memory hands it.
type fakeHub struct {
	mu    sync.Mutex
	msgs  map[string][]*hub.Message
	seeds map[string]*hub.Message // the last Seed of each channel
}

func (h *fakeHub) Seed(channel string, m *hub.Message) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seeds == nil {
		h.seeds = map[string]*hub.Message{}
	}
	h.seeds[channel] = m
	return 0
}

// latest seeds channel from b and returns what b handed the hub for it.
func (h *fakeHub) latest(b *Memory, channel string) *hub.Message {
	b.Seed([]string{channel})
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seeds[channel]
}

func (h *fakeHub) Publish(m *hub.Message) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.msgs == nil {
		h.msgs = map[string][]*hub.Message{}
	}
	h.msgs[m.Channel] = append(h.msgs[m.Channel], m)
	return 1
}

func (h *fakeHub) messages(channel string) []*hub.Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*hub.Message(nil), h.msgs[channel]...)
}

// payload builds a valid payload.
func payload(t *testing.T, etag string, lastModified int64) wire.Payload {
	t.Helper()
	p, err := wire.ParsePayload([]byte(fmt.Sprintf(`{"etag":%q,"lastModified":%d,"type":"refetchConfig"}`, etag, lastModified)), 0)
	if err != nil {
		t.Fatalf("payload: %v", err)
	}
	return p
}

// Memory stores the newest event per channel for LatestTTL, exactly, on synctest's clock.
func TestMemory(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) { testMemory(t) })
}

func testMemory(t *testing.T) {
	h := &fakeHub{}
	b := NewMemory(h, Config{LatestTTL: 200 * time.Millisecond})
	ctx := context.Background()
	v1, v0 := payload(t, "v1", 100), payload(t, "v0", 50)
	steps := []struct {
		name    string
		channel string
		p       wire.Payload
		want    bool
		err     error
	}{
		{"first", "c", v1, true, nil},
		{"redelivery", "c", v1, false, nil},
		{"older", "c", v0, false, nil},
		{"same lastModified, another etag", "c", payload(t, "v1-other", 100), false, ErrConflict},
		{"other channel", "d", v0, true, nil},
		{"reserved channel", "_probe.x", v1, false, ErrChannel},
		{"empty payload", "c", wire.Payload{}, false, ErrPayload},
	}
	for _, s := range steps {
		ok, err := b.Publish(ctx, s.channel, s.p)
		if ok != s.want || err != s.err {
			t.Fatalf("%s: Publish = %v, %v; want %v, %v", s.name, ok, err, s.want, s.err)
		}
	}
	if got := h.messages("c"); len(got) != 1 || got[0].Version != v1.Version() {
		t.Fatalf("hub got %v on c, want only v1", got)
	}
	m := h.latest(b, "c")
	if m != h.messages("c")[0] {
		t.Fatalf("Seed handed the hub %v; want the message the hub got", m)
	}
	if want := wire.Encode("c", v1, m.Received); string(m.Frame) != string(want) {
		t.Errorf("frame %q, want %q", m.Frame, want)
	}

	if b.Ready() {
		t.Errorf("ready before Run")
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.Run(rctx) }()
	synctest.Wait()
	if !b.Ready() {
		t.Fatal("not ready while running")
	}
	time.Sleep(200*time.Millisecond - 1)
	if m := h.latest(b, "c"); m == nil {
		t.Fatal("the latest event expired before its TTL")
	}
	time.Sleep(time.Nanosecond)
	synctest.Wait() // the sweep, due now too
	if m := h.latest(b, "c"); m != nil {
		t.Fatal("the latest event outlived its TTL")
	}
	b.mu.Lock()
	kept := len(b.latest)
	b.mu.Unlock()
	if kept != 0 {
		t.Fatalf("%d expired events not swept at the TTL", kept)
	}
	// An expired latest no longer blocks an older version.
	mustOK := func(ok bool, err error) {
		t.Helper()
		if !ok || err != nil {
			t.Fatalf("Publish after expiry = %v, %v; want true", ok, err)
		}
	}
	mustOK(b.Publish(ctx, "c", v0))
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if b.Ready() {
		t.Errorf("ready after Run returned")
	}
}

func TestStoredValueRoundTrip(t *testing.T) {
	t.Parallel()
	p := payload(t, `"x"`, 1700000000000)
	s := versionHeader(p.Version()) + string(p.Raw)
	got, err := decode(s)
	if err != nil || got.Version() != p.Version() || string(got.Raw) != string(p.Raw) {
		t.Fatalf("decode = %+v, %v; want %+v", got, err, p)
	}
	if h := versionHeader(hub.Version{Time: 1, Tie: 2}); h != "000000000000000000010000000002" || len(h) != versionLen {
		t.Fatalf("versionHeader = %q", h)
	}
	for _, bad := range []string{"", "123", strings.Repeat("x", 40), versionHeader(p.Version()) + "not json"} {
		if _, err := decode(bad); err == nil {
			t.Errorf("decode(%q) succeeded", bad)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	d := Config{}.withDefaults()
	if d.ChannelPrefix != "sse:" || d.KeyPrefix != "sse-gateway:" || d.LatestTTL != 168*time.Hour {
		t.Fatalf("defaults = %+v", d)
	}
}

// TestParseNotice: a stored notice names the channel and the version stored, and anything
// else is not one.
func TestParseNotice(t *testing.T) {
	v := hub.Version{Time: 1700000000123, Tie: 4294967295}
	ch, got, ok := ParseNotice(notice("env-1", v))
	if !ok || ch != "env-1" || got != v {
		t.Fatalf("ParseNotice(notice) = %q, %v, %v; want env-1, %v", ch, got, ok, v)
	}
	for _, bad := range []string{"", "123", versionHeader(v), versionHeader(v) + "_reserved", "x" + notice("c", v)[1:], versionHeader(v) + "a b"} {
		if _, _, ok := ParseNotice(bad); ok {
			t.Errorf("ParseNotice(%q) accepted", bad)
		}
	}
}

// TestVersionHeader: the fixed-width header the script compares, as fmt would print it.
func TestVersionHeader(t *testing.T) {
	for _, v := range []hub.Version{{}, {Time: 1, Tie: 2}, {Time: 1700000000123, Tie: 4294967295}, {Time: 1<<63 - 1, Tie: 1}} {
		if got, want := versionHeader(v), fmt.Sprintf("%020d%010d", uint64(v.Time), v.Tie); got != want {
			t.Errorf("versionHeader(%v) = %q, want %q", v, got, want)
		}
	}
}
