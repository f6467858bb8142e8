package reliability

import (
	"strings"
	"testing"
	"time"
)

// TestResumeByVersion is scenario 1: a fresh stream gets its channel's newest event at once;
// Last-Event-ID older than the newest gets the newest at once; equal (or newer) gets nothing
// until something newer is published; and after the gateway is SIGKILLed and started again,
// all of that still holds, from what Redis stored.
//
// "Gets nothing" is checked without waiting for silence: events of one channel arrive in
// version order on a stream, so if the first event a stream receives is the next publish,
// nothing came before it.
func TestResumeByVersion(t *testing.T) {
	t.Parallel()
	r := startRedis(t)
	g := startGateway(t, "resume", r.URL())
	cs := newClients(t)
	const ch, other = "resume-1", "resume-2"
	base := time.Now().UnixMilli()
	ver := func(i int64) (string, version) {
		etag := `"r` + itoa(i) + `"`
		return etag, versionOf(etag, base+i)
	}
	publish := func(channel string, i int64) version {
		t.Helper()
		etag, v := ver(i)
		if out := publishCLI(t, r.URL(), channel, etag, base+i); !strings.HasPrefix(out, "published") {
			t.Fatalf("publish %s v%d: %s", channel, i, out)
		}
		return v
	}
	client := func(channels, lastID string) *sseClient {
		return cs.start(clientConfig{channels: channels, lastID: lastID, target: fixed(g.Addr), source: source(len(cs.list))})
	}
	firstIs := func(c *sseClient, want version, why string) {
		t.Helper()
		waitHave(t, 10*time.Second, []*sseClient{c}, ch, want)
		evs := c.snapshot()
		if evs[0].v != want {
			t.Errorf("%s: first event was %s, want %s (%s)", why, evs[0].id, want, c.describe())
		}
	}

	v1 := publish(ch, 1)
	publish(other, 1)
	fresh := client(ch, "")
	firstIs(fresh, v1, "fresh stream")

	v2 := publish(ch, 2)
	waitHave(t, 10*time.Second, []*sseClient{fresh}, ch, v2)
	older := client(ch, v1.String())
	firstIs(older, v2, "Last-Event-ID older than the newest")
	equal := client(ch, v2.String())
	future := client(ch, version{lm: base + 1000}.String())
	waitOpen(t, 10*time.Second, []*sseClient{equal, future})
	v3 := publish(ch, 3)
	firstIs(equal, v3, "Last-Event-ID equal to the newest: nothing until v3")
	v1001 := publish(ch, 1001)
	firstIs(future, v1001, "Last-Event-ID newer than anything published: nothing until a newer version")
	for _, c := range []*sseClient{fresh, older, equal} {
		waitHave(t, 10*time.Second, []*sseClient{c}, ch, v1001)
		assertIncreasing(t, c, ch)
	}

	// kill -9 and start again on the same address: the new process knows nothing but
	// what Redis stored.
	g.kill()
	g.start()
	g.waitReady(30 * time.Second)
	start := time.Now()
	resumed := client(ch, v2.String())
	firstIs(resumed, v1001, "after a gateway restart, Last-Event-ID older than the newest")
	t.Logf("after kill -9 and restart, a stream resuming from an old id got the newest event %v after connecting", time.Since(start).Round(time.Millisecond))
	fresh2 := client(ch, "")
	firstIs(fresh2, v1001, "after a gateway restart, a fresh stream")
	both := client(ch+","+other, "")
	_, otherV1 := ver(1)
	waitHave(t, 10*time.Second, []*sseClient{both}, other, otherV1)
	waitHave(t, 10*time.Second, []*sseClient{both}, ch, v1001)
	current := client(ch, v1001.String())
	waitOpen(t, 10*time.Second, []*sseClient{current})
	v1002 := publish(ch, 1002)
	firstIs(current, v1002, "after a gateway restart, Last-Event-ID equal to the newest: nothing until v1002")
}

// assertIncreasing checks that a client's versions of channel only ever went up.
func assertIncreasing(t testing.TB, c *sseClient, channel string) {
	t.Helper()
	var last version
	var seq []string
	for _, e := range c.snapshot() {
		if e.channel != channel {
			continue
		}
		seq = append(seq, e.id)
		if !last.less(e.v) {
			t.Errorf("client %d received %s after %s on %s: versions went backwards or repeated; sequence %v", c.n, e.id, last, channel, seq)
			return
		}
		last = e.v
	}
}
