package reliability

import (
	"net/http"
	"testing"
	"time"
)

// TestReplayOnConnect (issue 10, item 13): by default a fresh stream first gets its
// channel's newest event, which closes the race between an SDK fetching its config and
// opening its stream (and costs an SDK that refetches on every event, the Python server SDK,
// one conditional CDN request per connect). With --replay-on-connect=false a fresh stream
// gets only what is published after it opened, while a stream that resumes with a
// Last-Event-ID still gets what it missed.
func TestReplayOnConnect(t *testing.T) {
	t.Parallel()
	r := startRedis(t)
	for _, tc := range []struct {
		name  string
		flags []string
		fresh string // the etag of a fresh stream's first event
	}{
		{"default", nil, `"r1"`},
		{"off", []string{"--replay-on-connect=false"}, `"r2"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ch := "replay-" + tc.name
			g := startGateway(t, "replay-"+tc.name, r.URL(), tc.flags...)
			base := time.Now().UnixMilli()
			publish := func(etag string, lm int64) version {
				if s, body := g.publishAPI(ch, payload(etag, lm, 0, false)); s != http.StatusAccepted {
					t.Fatalf("publish %s: %d %s", etag, s, body)
				}
				return versionOf(etag, lm)
			}
			cs := newClients(t)
			// A stream open before the first publish: once it has the event, so has the
			// gateway, and the fresh stream below opens after it (an event still on its way
			// to the gateway when a stream opens is news to that stream, replay or not).
			watcher := cs.start(clientConfig{channels: ch, source: source(2), target: fixed(g.Addr)})
			waitOpen(t, 10*time.Second, []*sseClient{watcher})
			v1 := publish(`"r1"`, base)
			waitHave(t, 10*time.Second, []*sseClient{watcher}, ch, v1)
			fresh := cs.start(clientConfig{channels: ch, source: source(0), target: fixed(g.Addr)})
			resuming := cs.start(clientConfig{channels: ch, source: source(1), target: fixed(g.Addr), lastID: versionOf(`"r0"`, base-1).String()})
			waitOpen(t, 10*time.Second, []*sseClient{fresh, resuming})
			waitHave(t, 10*time.Second, []*sseClient{resuming}, ch, v1)
			v2 := publish(`"r2"`, base+1)
			waitHave(t, 10*time.Second, []*sseClient{fresh, resuming}, ch, v2)
			want := map[string]version{`"r1"`: v1, `"r2"`: v2}[tc.fresh]
			if evs := fresh.snapshot(); evs[0].v != want {
				t.Errorf("a fresh stream's first event is %s, want %s (%s)", evs[0].v, want, tc.fresh)
			}
			if evs := resuming.snapshot(); evs[0].v != v1 {
				t.Errorf("a resuming stream's first event is %s, want the one it missed, %s", evs[0].v, v1)
			}
		})
	}
}
