package stream

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/gwtest"
	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

func lastEventID(id string) http.Header { return http.Header{"Last-Event-Id": {id}} }

// TestLatestOnConnect: a fresh stream gets its channel's newest event at once (from the
// store when this instance has not seen the channel); Last-Event-ID equal to or newer than
// it gets nothing until something newer; older gets the newest at once.
func TestLatestOnConnect(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := startEnv(t, m, Config{Heartbeat: time.Hour})
			// Published while nobody on this instance listened: only the store has it.
			v1 := e.publish("dvc_server_1", 1700000000000, "")
			if e.hub.Latest("dvc_server_1") != nil {
				t.Fatal("precondition: the hub should not hold an unsubscribed channel")
			}

			fresh := e.connect(e.url(secretAll, "dvc_server_1"), nil)
			checkEvent(t, fresh.waitEvents(1)[0], v1)

			garbage := e.connect(e.url(secretAll, "dvc_server_1"), lastEventID("not-an-id"))
			checkEvent(t, garbage.waitEvents(1)[0], v1)

			same := e.connect(e.url(secretAll, "dvc_server_1"), lastEventID(v1.ID))
			ahead := e.connect(e.url(secretAll, "dvc_server_1"), lastEventID(wire.EventID(hub.Version{Time: 1700000000500})))

			v2 := e.publish("dvc_server_1", 1700000000100, "")
			// "same" held v1: its first event is v2, never v1.
			if evs := same.waitEvents(1); evs[0].ID != v2.ID {
				t.Fatalf("Last-Event-ID equal to the latest: first event %s, want %s", evs[0].ID, v2.ID)
			}
			older := e.connect(e.url(secretAll, "dvc_server_1"), lastEventID(v1.ID))
			checkEvent(t, older.waitEvents(1)[0], v2)

			// "ahead" saw 1700000000500 elsewhere: nothing up to it, then the newer one.
			v3 := e.publish("dvc_server_1", 1700000000900, "")
			if evs := ahead.waitEvents(1); evs[0].ID != v3.ID {
				t.Fatalf("client ahead of the hub: first event %s, want %s", evs[0].ID, v3.ID)
			}
			fresh.waitID(v3.ID)
			if ids := fresh.ids(); len(ids) != 3 || ids[0] != v1.ID || ids[1] != v2.ID || ids[2] != v3.ID {
				t.Fatalf("fresh client ids %v", ids)
			}

			// With several channels one id cannot name a version of each: every channel's
			// newest is sent.
			other := e.publish("dvc_server_2", 5, "")
			multi := e.connect(e.url(secretAll, "dvc_server_1", "dvc_server_2"), lastEventID(v3.ID))
			evs := multi.waitEvents(2)
			got := map[string]bool{evs[0].ID: true, evs[1].ID: true}
			if !got[v3.ID] || !got[other.ID] {
				t.Fatalf("multi-channel connect got %v, want %s and %s", evs, v3.ID, other.ID)
			}
		})
	}
}

func TestEventEnvelopeAndChannels(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := startEnv(t, m, Config{})
			s := e.connect(e.url(secretAll, "a", "b", "c"), nil)
			other := e.connect(e.url(secretAll, "z"), nil)
			var want []*hub.Message
			for i, ch := range []string{"a", "b", "c", "a"} {
				// One at a time: a stream keeps only the newest pending event per channel.
				want = append(want, e.publish(ch, int64(100+i), `,"type":"refetchConfig","sentAtNs":123`))
				s.waitID(want[i].ID)
			}
			evs := s.waitEvents(len(want))
			for i, ev := range evs {
				checkEvent(t, ev, want[i])
				var env struct{ Data string }
				_ = json.Unmarshal([]byte(ev.Data), &env)
				var inner map[string]any
				if err := json.Unmarshal([]byte(env.Data), &inner); err != nil || inner["sentAtNs"] != float64(123) || inner["type"] != "refetchConfig" {
					t.Fatalf("inner payload %q: %v", env.Data, err)
				}
			}
			z := e.publish("z", 1, "")
			other.waitID(z.ID)
			if ids := other.ids(); len(ids) != 1 {
				t.Fatalf("stream on z got %v", ids)
			}
			if ids := s.ids(); len(ids) != len(want) {
				t.Fatalf("stream on a,b,c got %d events, want %d", len(ids), len(want))
			}
		})
	}
}

func TestStoreFailureStillStreams(t *testing.T) {
	e := startEnv(t, modes[0], Config{})
	e.store.mu.Lock()
	e.store.err = errors.New("redis down")
	e.store.mu.Unlock()
	s := e.connect(e.url(secretAll, "c"), nil)
	m := e.publish("c", 7, "")
	if evs := s.waitEvents(1); evs[0].ID != m.ID {
		t.Fatalf("first event %v", evs[0])
	}
}

func TestStoreAskedOncePerChannel(t *testing.T) {
	e := startEnv(t, modes[0], Config{})
	a := e.connect(e.url(secretAll, "c"), nil)
	// The first stream asks the store after its headers went out; the next ones are to find
	// the channel seeded, so they connect once its handler has finished (with the lookup).
	eventually(t, "the first stream handed over", func() bool { return gwtest.Goroutines("stream.(*poller).takeOver(", "") == 0 })
	e.connect(e.url(secretAll, "c"), nil)
	e.connect(e.url(secretAll, "c"), nil)
	m := e.publish("c", 7, "")
	a.waitID(m.ID)
	e.store.mu.Lock()
	calls := e.store.calls
	e.store.mu.Unlock()
	if calls != 1 {
		t.Fatalf("store asked %d times for one channel", calls)
	}
}

func TestHeartbeats(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := startEnv(t, m, Config{Heartbeat: 100 * time.Millisecond})
			s := e.connect(e.url(secretAll, "c"), nil)
			eventually(t, "4 heartbeats", func() bool {
				_, comments, _ := s.snapshot()
				return comments >= 4
			})
			if evs, _, _ := s.snapshot(); len(evs) != 0 {
				t.Fatalf("heartbeats parsed as events: %v", evs)
			}
			if e.counter(e.srv.metrics.frames, frameHeartbeat) < 3 {
				t.Fatalf("heartbeat frames counted: %v", e.counter(e.srv.metrics.frames, frameHeartbeat))
			}
			// Events still flow between heartbeats.
			msg := e.publish("c", 1, "")
			s.waitID(msg.ID)
		})
	}
}

// TestOrderingRacingPublishers: two publishers race on one channel; every stream sees
// strictly increasing versions and ends on the newest.
func TestOrderingRacingPublishers(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := startEnv(t, m, Config{})
			clients := make([]*sseClient, 4)
			for i := range clients {
				clients[i] = e.connect(e.url(secretAll, "c"), nil)
			}
			const per = 300
			var wg sync.WaitGroup
			for p := range 2 {
				wg.Go(func() {
					for i := range per {
						e.publish("c", int64(1000+2*i+p), "")
					}
				})
			}
			wg.Wait()
			newest := e.hub.Latest("c")
			if newest.Version.Time != 1000+2*per-1 {
				t.Fatalf("newest %v", newest.Version)
			}
			for i, c := range clients {
				c.waitID(newest.ID)
				var prev hub.Version
				for _, id := range c.ids() {
					v, ok := wire.ParseEventID(id)
					if !ok || !prev.Less(v) {
						t.Fatalf("client %d: %s after %v", i, id, prev)
					}
					prev = v
				}
			}
		})
	}
}

// TestHangupNoticed: a client that goes away is noticed without any write (the heartbeat is
// an hour away), and the stream is forgotten.
func TestHangupNoticed(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := startEnv(t, m, Config{Heartbeat: time.Hour})
			s := e.connect(e.url(secretAll, "c"), nil)
			keep := e.connect(e.url(secretAll, "c"), nil)
			eventually(t, "two streams", func() bool { return e.srv.OpenStreams() == 2 })
			s.close()
			eventually(t, "the hang-up to be noticed", func() bool { return e.srv.OpenStreams() == 1 })
			e.waitCloses(1)
			if got := e.counter(e.srv.metrics.closes, CloseClient); got != 1 {
				t.Fatalf("closes{client} = %v", got)
			}
			proto := protoHTTP1
			if m.h2 {
				proto = protoH2
			}
			if got := testutilGauge(e, "all", proto); got != 1 {
				t.Fatalf("streams_open{all,%s} = %v", proto, got)
			}
			msg := e.publish("c", 1, "")
			keep.waitID(msg.ID)
		})
	}
}

// TestHangupRawTCP: a takeover stream whose TCP peer closes (FIN) or resets (RST) is
// forgotten without a heartbeat.
func TestHangupRawTCP(t *testing.T) {
	e := startEnv(t, modes[0], Config{Heartbeat: time.Hour})
	for _, rst := range []bool{false, true} {
		c := e.dialRaw(nil)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: gw\r\n\r\n", e.streamPath(secretAll, "c"))
		if status, _ := c.head(t); status != "HTTP/1.1 200 OK" {
			t.Fatal(status)
		}
		eventually(t, "the stream to open", func() bool { return e.srv.OpenStreams() == 1 })
		if rst {
			_ = c.Conn.(interface{ SetLinger(int) error }).SetLinger(0)
		}
		c.Close()
		eventually(t, fmt.Sprintf("hang-up (rst=%v) to be noticed", rst), func() bool { return e.srv.OpenStreams() == 0 })
	}
}

// TestClientSendingDataIsCut: an SSE client sends nothing after its request; one that keeps
// sending is cut off rather than buffered.
func TestClientSendingDataIsCut(t *testing.T) {
	e := startEnv(t, modes[0], Config{Heartbeat: time.Hour})
	c := e.dialRaw(nil)
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: gw\r\n\r\n", e.streamPath(secretAll, "c"))
	c.head(t)
	eventually(t, "the stream to open", func() bool { return e.srv.OpenStreams() == 1 })
	junk := make([]byte, 4096)
	for i := 0; i < 64 && e.srv.OpenStreams() == 1; i++ {
		if _, err := c.Write(junk); err != nil {
			break
		}
	}
	eventually(t, "the chatty client to be cut", func() bool { return e.srv.OpenStreams() == 0 })
}

func TestLifetime(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			const lifetime = 300 * time.Millisecond
			e := startEnv(t, m, Config{MaxLifetime: lifetime, Heartbeat: 50 * time.Millisecond,
				RetryMin: 1500 * time.Millisecond, RetryMax: 2500 * time.Millisecond})
			asked := time.Now()
			s := e.connect(e.url(secretAll, "c"), nil)
			if err := s.waitEnd(); err == io.EOF || err == nil {
				t.Fatalf("stream ended cleanly, want the response cut after retry: so the client reconnects")
			}
			// The gateway's clock starts after the request was sent, so this bound is exact;
			// the upper end of the window is TestLifetimeWindow's.
			s.mu.Lock()
			lived := s.endedAt.Sub(asked)
			s.mu.Unlock()
			if lived < lifetime*8/10 {
				t.Fatalf("stream ended %v after it was requested, before 80%% of its %v lifetime", lived, lifetime)
			}
			_, _, retries := s.snapshot()
			checkRetries(t, retries, 1500, 2500)
			eventually(t, "the close to be counted", func() bool { return e.counter(e.srv.metrics.closes, CloseLifetime) == 1 })
		})
	}
}

// TestLifetimeWindow: each stream's lifetime is drawn from 80-100% of MaxLifetime, so that
// streams opened together do not all end together. Read from the streams' deadlines, with a
// lifetime of an hour so that scheduling delays (milliseconds) cannot blur the window.
func TestLifetimeWindow(t *testing.T) {
	const lifetime, n = time.Hour, 40
	e := startEnv(t, modes[0], Config{MaxLifetime: lifetime, Heartbeat: time.Hour})
	var fractions []float64
	for i := range n {
		before := time.Now()
		e.connect(e.url(secretAll, "c"), nil)
		after := time.Now()
		eventually(t, "the stream registered", func() bool { return e.registered() == i+1 })
		var expires time.Time
		e.srv.mu.Lock()
		for _, st := range e.srv.streams {
			if b := st.base(); b.id == uint64(i+1) {
				expires = b.expires
			}
		}
		e.srv.mu.Unlock()
		// The deadline was set between before and after: exact bounds of the fraction.
		lo, hi := float64(expires.Sub(after))/float64(lifetime), float64(expires.Sub(before))/float64(lifetime)
		if expires.IsZero() || hi < 0.8 || lo > 1 {
			t.Fatalf("stream %d expires %v after it was opened (%.4f-%.4f of MaxLifetime %v), want 80-100%%", i+1, expires.Sub(before), lo, hi, lifetime)
		}
		fractions = append(fractions, (lo+hi)/2)
	}
	// Jittered over the whole window: with 40 uniform draws, none below 0.85 or none above
	// 0.95 happens with probability 0.75^40 (1e-5) each.
	if lo, hi := slices.Min(fractions), slices.Max(fractions); lo > 0.85 || hi < 0.95 {
		t.Fatalf("%d lifetimes span %.3f-%.3f of MaxLifetime, want jitter over 0.8-1.0", n, lo, hi)
	}
}

func checkRetries(t testing.TB, retries []string, lo, hi int) {
	t.Helper()
	if len(retries) != 1 {
		t.Fatalf("retry fields %v, want exactly one", retries)
	}
	var ms int
	if _, err := fmt.Sscan(retries[0], &ms); err != nil || ms < lo || ms > hi {
		t.Fatalf("retry %q not within [%d, %d] ms", retries[0], lo, hi)
	}
}

// TestNoReplayOnConnect (--replay-on-connect=false): a fresh stream gets only what is
// published after it opened, whether the hub or the store held the newest event; a stream
// with a Last-Event-ID is still resumed (it may have missed an invalidation), and a
// single-channel stream whose id is current gets nothing it holds.
func TestNoReplayOnConnect(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := startEnv(t, m, Config{Heartbeat: time.Hour, NoReplay: true})
			v1 := e.publish("dvc_server_1", 1700000000000, "") // only in the store
			fromStore := e.connect(e.url(secretAll, "dvc_server_1"), nil)
			fromHub := e.connect(e.url(secretAll, "dvc_server_1"), nil) // the hub holds v1 by now, or soon
			old := e.connect(e.url(secretAll, "dvc_server_1"), lastEventID("1600000000000-00000000"))
			checkEvent(t, old.waitEvents(1)[0], v1)
			v2 := e.publish("dvc_server_1", 1700000000100, "")
			for name, c := range map[string]*sseClient{"fresh (seeded from the store)": fromStore, "fresh": fromHub} {
				if evs := c.waitEvents(1); evs[0].ID != v2.ID {
					t.Fatalf("%s stream: first event %s, want %s (published after it opened)", name, evs[0].ID, v2.ID)
				}
			}
			resumed := e.connect(e.url(secretAll, "dvc_server_1"), lastEventID(v1.ID))
			checkEvent(t, resumed.waitEvents(1)[0], v2)
		})
	}
}
