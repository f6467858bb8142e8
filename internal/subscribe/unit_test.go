package subscribe

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

func TestMemory(t *testing.T) {
	t.Parallel()
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
	if got := h.messages("c", false); len(got) != 1 || got[0].Version != v1.Version() {
		t.Fatalf("hub got %v on c, want only v1", got)
	}
	m, err := b.Latest(ctx, "c")
	if err != nil || m != h.messages("c", false)[0] {
		t.Fatalf("Latest = %v, %v; want the message the hub got", m, err)
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
	waitFor(t, 5*time.Second, "ready while running", b.Ready)
	waitFor(t, 5*time.Second, "the latest event to expire", func() bool {
		m, _ := b.Latest(ctx, "c")
		return m == nil
	})
	waitFor(t, 5*time.Second, "expired events to be swept", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.latest) == 0
	})
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

func TestMailboxKeepsNewestPerChannel(t *testing.T) {
	t.Parallel()
	q := newMailbox()
	ev := func(ch string, lm int64) event {
		return event{channel: ch, payload: payload(t, "e", lm)}
	}
	for lm := int64(1); lm <= 100; lm++ {
		q.put(ev("a", lm))
	}
	q.put(ev("a", 50)) // older than pending: ignored
	q.put(ev("b", 7))
	batch := q.take(nil, 10)
	if len(batch) != 2 || batch[0].channel != "a" || batch[0].payload.LastModified != 100 || batch[1].channel != "b" {
		t.Fatalf("take = %+v, want a@100 then b@7", batch)
	}
	// While a is in flight a new event waits, and is handed out only after done.
	q.put(ev("a", 101))
	q.put(ev("c", 1))
	if got := q.take(nil, 10); len(got) != 1 || got[0].channel != "c" {
		t.Fatalf("take while a is in flight = %+v, want only c", got)
	}
	q.done(batch)
	if got := q.take(nil, 10); len(got) != 1 || got[0].channel != "a" || got[0].payload.LastModified != 101 {
		t.Fatalf("take after done = %+v, want a@101", got)
	}
	if n := q.len(); n != 2 { // a and c are in flight
		t.Fatalf("mailbox holds %d channels, want 2", n)
	}

	done := make(chan []event)
	go func() { done <- q.take(nil, 10) }()
	q.close()
	if got := <-done; got != nil {
		t.Fatalf("take after close = %+v, want nil", got)
	}
}

func TestMailboxBoundedByChannels(t *testing.T) {
	t.Parallel()
	q := newMailbox()
	for i := range 100000 {
		q.put(event{channel: fmt.Sprintf("c%d", i%10), payload: wire.Payload{ETag: "e", LastModified: int64(i), Raw: []byte("{}")}})
	}
	if n := q.len(); n != 10 {
		t.Fatalf("mailbox holds %d channels after 100000 events on 10, want 10", n)
	}
	batch := q.take(nil, 100)
	for _, ev := range batch {
		if ev.payload.LastModified < 100000-10 {
			t.Errorf("%s: got %d, want its newest", ev.channel, ev.payload.LastModified)
		}
	}
	q.done(batch)
	if n := q.len(); n != 0 {
		t.Fatalf("mailbox holds %d channels after dispatch, want 0", n)
	}
}

func TestKnownPrune(t *testing.T) {
	t.Parallel()
	k := newKnown()
	k.update("old", payload(t, "e", 1))
	k.update("kept", payload(t, "e", 1))
	since := time.Now().Add(time.Millisecond)
	for !time.Now().After(since) {
		time.Sleep(time.Millisecond)
	}
	k.update("fresh", payload(t, "e", 1))
	k.update("kept", payload(t, "e", 0)) // older: not recorded, but the channel counts as used
	k.prune([]string{"kept"}, since)
	if _, ok := k.get("old"); ok {
		t.Errorf("a channel without subscribers was kept")
	}
	if _, ok := k.get("fresh"); !ok {
		t.Errorf("a channel recorded after the snapshot was pruned")
	}
	if p, ok := k.get("kept"); !ok || p.LastModified != 1 {
		t.Errorf("kept = %v, %v; want lastModified 1", p.LastModified, ok)
	}
}

func TestStoredValueRoundTrip(t *testing.T) {
	t.Parallel()
	p := payload(t, `"x"`, 1700000000000)
	s := versionHeader(p.Version()) + string(p.Raw)
	got, err := decodeStored(s)
	if err != nil || got.Version() != p.Version() || string(got.Raw) != string(p.Raw) {
		t.Fatalf("decodeStored = %+v, %v; want %+v", got, err, p)
	}
	if h := versionHeader(hub.Version{Time: 1, Tie: 2}); h != "000000000000000000010000000002" || len(h) != versionLen {
		t.Fatalf("versionHeader = %q", h)
	}
	for _, bad := range []string{"", "123", strings.Repeat("x", 40), versionHeader(p.Version()) + "not json"} {
		if _, err := decodeStored(bad); err == nil {
			t.Errorf("decodeStored(%q) succeeded", bad)
		}
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	d := Config{}.withDefaults()
	if d.ChannelPrefix != "sse:" || d.KeyPrefix != "sse-gateway:" || d.LatestTTL != 168*time.Hour ||
		d.MaxPayload != wire.DefaultMaxPayload || d.ProbeInterval != 2*time.Second || len(d.InstanceID) != 16 {
		t.Fatalf("defaults = %+v", d)
	}
	if (Config{}).withDefaults().InstanceID == d.InstanceID {
		t.Errorf("instance ids are not random")
	}
	cases := []struct {
		cfg  Config
		flag string // "" = valid
	}{
		{Config{}, ""},
		{Config{LatestTTL: -1}, "--latest-ttl"},
		{Config{MaxPayload: -1}, "--max-payload"},
		{Config{ProbeInterval: time.Millisecond}, "--probe-interval"},
		{Config{ChannelPrefix: "a b"}, "--redis-channel-prefix"},
		{Config{KeyPrefix: "a\n"}, "--redis-key-prefix"},
	}
	for _, c := range cases {
		err := c.cfg.Validate()
		if (err == nil) != (c.flag == "") || (err != nil && !strings.Contains(err.Error(), c.flag)) {
			t.Errorf("Validate(%+v) = %v, want an error naming %q", c.cfg, err, c.flag)
		}
	}
	if got := escapeGlob(`a*b?[c]\`); got != `a\*b\?\[c\]\\` {
		t.Errorf("escapeGlob = %q", got)
	}
}
