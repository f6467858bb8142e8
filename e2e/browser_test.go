package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's chromium, installed by scripts/e2e-deps. Browser builds are never
// downloaded.
const chromiumPath = "/usr/bin/chromium"

// pageHTML opens a native EventSource with credentials and records what happens in window.__log.
const pageHTML = `<!doctype html>
<meta charset="utf-8">
<title>sse-gateway e2e</title>
<script>
window.__log = [];
const now = () => performance.timeOrigin + performance.now();
const es = new EventSource(%s, {withCredentials: true});
es.onopen = () => __log.push({kind: "open", t: now()});
es.onerror = () => __log.push({kind: "error", t: now(), readyState: es.readyState});
es.onmessage = (e) => __log.push({kind: "message", t: now(), id: e.lastEventId, data: e.data, type: e.type});
</script>
`

// pageEntry is one entry of window.__log.
type pageEntry struct {
	Kind       string  `json:"kind"`
	T          float64 `json:"t"`
	ID         string  `json:"id"`
	Data       string  `json:"data"`
	ReadyState int     `json:"readyState"`
}

// streamExchange is one /event-stream request the browser made, as Chromium's network layer saw it.
type streamExchange struct {
	isStream        bool
	requestHeaders  map[string]string // lower-case names
	status          int64
	responseHeaders map[string]string // lower-case names
}

// networkLog records the browser's requests through the DevTools protocol. A request's
// ExtraInfo event (with the headers actually sent, Last-Event-ID among them) may come before
// or after its requestWillBeSent, so every request is kept and filtered when read.
type networkLog struct {
	mu   sync.Mutex
	reqs map[network.RequestID]*streamExchange
	ids  []network.RequestID // in order of first sight
}

func (n *networkLog) get(id network.RequestID) *streamExchange {
	x, ok := n.reqs[id]
	if !ok {
		x = &streamExchange{requestHeaders: map[string]string{}, responseHeaders: map[string]string{}}
		n.reqs[id] = x
		n.ids = append(n.ids, id)
	}
	return x
}

func (n *networkLog) observe(ev any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch e := ev.(type) {
	case *network.EventRequestWillBeSent:
		x := n.get(e.RequestID)
		x.isStream = x.isStream || strings.Contains(e.Request.URL, "/event-stream")
		addHeaders(x.requestHeaders, e.Request.Headers)
	case *network.EventRequestWillBeSentExtraInfo:
		addHeaders(n.get(e.RequestID).requestHeaders, e.Headers)
	case *network.EventResponseReceived:
		x := n.get(e.RequestID)
		x.isStream = x.isStream || strings.Contains(e.Response.URL, "/event-stream")
		x.status = e.Response.Status
		addHeaders(x.responseHeaders, e.Response.Headers)
	}
}

func addHeaders(dst map[string]string, h network.Headers) {
	for k, v := range h {
		dst[strings.ToLower(k)] = fmt.Sprint(v)
	}
}

// exchanges returns copies of the /event-stream exchanges, oldest first.
func (n *networkLog) exchanges() []streamExchange {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]streamExchange, 0, len(n.ids))
	for _, id := range n.ids {
		if x := n.reqs[id]; x.isStream {
			c := *x
			c.requestHeaders, c.responseHeaders = maps.Clone(x.requestHeaders), maps.Clone(x.responseHeaders)
			out = append(out, c)
		}
	}
	return out
}

func (n *networkLog) String() string {
	var b strings.Builder
	for i, x := range n.exchanges() {
		fmt.Fprintf(&b, "\n  #%d status %d request %v response %v", i+1, x.status, x.requestHeaders, x.responseHeaders)
	}
	return b.String()
}

// TestBrowserEventSource opens a page in headless Chromium, from an origin other than the
// gateway's, whose native EventSource(url, {withCredentials: true}) must pass CORS, receive
// published events, and after the gateway is killed and restarted reconnect by itself with
// Last-Event-ID and receive the event published while the gateway was down.
func TestBrowserEventSource(t *testing.T) {
	const (
		key    = "e2e-key-browser"
		client = "chromium EventSource"
	)
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s: %v: %s", chromiumPath, err, depsHint)
	}
	channel := devcycleChannel("dvc_client", t.Name())
	rs := startRedis(t)
	gw := startGateway(t, gatewayConfig{RedisURL: rs.URL(), KeysFile: writeKeysFile(t, key, "dvc_client_*")})
	streamURL := gw.streamURL(channel, key) // http://127.0.0.1:<port>

	// The page lives on http://localhost:<other port>: another host and port, so another origin.
	urlJSON, _ := json.Marshal(streamURL)
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, pageHTML, urlJSON)
	}))
	t.Cleanup(page.Close)
	pageURL := strings.Replace(page.URL, "127.0.0.1", "localhost", 1)
	pageOrigin := pageURL

	browserLog := newLogBuffer()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.CombinedOutput(&lineWriter{fn: browserLog.add}),
	)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
		if t.Failed() || os.Getenv("E2E_LOGS") != "" {
			t.Logf("chromium output (last 30 lines):\n%s", browserLog.tail(30))
		}
	})

	netLog := &networkLog{reqs: map[network.RequestID]*streamExchange{}}
	if err := chromedp.Listen(ctx, netLog.observe); err != nil {
		t.Fatalf("%s: starting %s: %v", client, chromiumPath, err)
	}
	// chromedp enables the Network domain on the tab itself.
	if err := chromedp.Do(ctx, chromedp.Navigate(pageURL)); err != nil {
		t.Fatalf("%s: starting %s and opening %s: %v", client, chromiumPath, pageURL, err)
	}

	readLog := func() []pageEntry {
		entries, err := chromedp.Run(ctx, chromedp.Evaluate[[]pageEntry](`window.__log || []`))
		if err != nil {
			t.Fatalf("%s: reading the page's log: %v", client, err)
		}
		return entries
	}
	describe := func() string {
		b, _ := json.Marshal(readLog())
		return fmt.Sprintf("page log %s; /event-stream requests:%s", b, netLog)
	}
	// waitEntry waits for an entry at index >= from matching match and returns its index.
	waitEntry := func(timeout time.Duration, from int, expected string, match func(pageEntry) bool) (pageEntry, int) {
		t.Helper()
		var found pageEntry
		var idx int
		waitFor(t, timeout, func() string { return client + ": expected " + expected + "; " + describe() }, func() bool {
			entries := readLog()
			for i := from; i < len(entries); i++ {
				if match(entries[i]) {
					found, idx = entries[i], i
					return true
				}
			}
			return false
		})
		return found, idx
	}

	_, at := waitEntry(10*time.Second, 0, "the EventSource to open (CORS with credentials accepted)", func(e pageEntry) bool { return e.Kind == "open" })
	x := netLog.exchanges()
	if len(x) == 0 {
		t.Fatalf("%s: DevTools saw no /event-stream request", client)
	}
	first := x[0]
	if first.status != 200 || first.responseHeaders["access-control-allow-origin"] != pageOrigin ||
		first.responseHeaders["access-control-allow-credentials"] != "true" {
		t.Fatalf("%s: want 200 with Access-Control-Allow-Origin %q and Access-Control-Allow-Credentials true; got %d %v",
			client, pageOrigin, first.status, first.responseHeaders)
	}
	if o := first.requestHeaders["origin"]; o != pageOrigin {
		t.Fatalf("%s: the request's Origin is %q, want %q (the page must be cross-origin)", client, o, pageOrigin)
	}

	version := versions("browser")
	tm := &timings{name: client}
	var lastID string
	for i := 1; i <= flips; i++ {
		v := version(i)
		lm := v.LastModified.UnixMilli()
		start := rs.publish(t, channel, v.Etag, lm)
		lastID = eventID(lm, v.Etag)
		var e pageEntry
		e, at = waitEntry(updateBudget, at, "message id "+lastID+" after PUBLISH", func(e pageEntry) bool {
			return e.Kind == "message" && e.ID == lastID
		})
		if msg := checkEventData(e.Data, channel, v.Etag, lm); msg != "" {
			t.Fatalf("%s: event %s: %s", client, lastID, msg)
		}
		tm.add(time.UnixMicro(int64(e.T * 1000)).Sub(start))
	}
	tm.report(t)

	// Kill the gateway; publish while it is down (stored in Redis by the CLI); restart it on the
	// same address. The browser must reconnect on its own and resume from Last-Event-ID.
	before := len(netLog.exchanges())
	gw.kill()
	_, at = waitEntry(5*time.Second, at, "an error event after the gateway was killed", func(e pageEntry) bool { return e.Kind == "error" })
	away := version(flips + 1)
	awayLM := away.LastModified.UnixMilli()
	gw.publishOffline(channel, away.Etag, awayLM)
	gw.restart()
	awayID := eventID(awayLM, away.Etag)
	e, _ := waitEntry(15*time.Second, at, "after the restart, a reconnect and message id "+awayID+" (published while the gateway was down)",
		func(e pageEntry) bool { return e.Kind == "message" && e.ID == awayID })
	if msg := checkEventData(e.Data, channel, away.Etag, awayLM); msg != "" {
		t.Fatalf("%s: event %s: %s", client, awayID, msg)
	}
	var resumed *streamExchange
	for _, x := range netLog.exchanges()[before:] {
		if x.status == 200 {
			resumed = &x
			break
		}
	}
	if resumed == nil {
		t.Fatalf("%s: no successful reconnect request recorded; requests:%s", client, netLog)
	}
	if got := resumed.requestHeaders["last-event-id"]; got != lastID {
		t.Fatalf("%s: reconnect sent Last-Event-ID %q, want %q (the last id it received); request headers %v",
			client, got, lastID, resumed.requestHeaders)
	}
	if n := countMessages(readLog(), lastID); n != 1 {
		t.Fatalf("%s: event %s arrived %d times; after a resume with Last-Event-ID it must not be replayed; %s", client, lastID, n, describe())
	}

	// Drain (SIGTERM) with a version published during it: the gateway ends the stream with a
	// retry: and a cut; the browser reconnects by itself to the restarted gateway and ends at
	// that version, and its new connection carries the next one.
	_, at = waitEntry(5*time.Second, 0, "message id "+awayID, func(e pageEntry) bool { return e.Kind == "message" && e.ID == awayID })
	drained := version(flips + 2)
	gw.drainPublishing(rs, channel, drained)
	drainedID := eventID(drained.LastModified.UnixMilli(), drained.Etag)
	fault, failed := waitEntry(10*time.Second, at, "an error event on the drain", func(e pageEntry) bool { return e.Kind == "error" })
	back, _ := waitEntry(20*time.Second, failed, "the EventSource open again after the drain", func(e pageEntry) bool { return e.Kind == "open" })
	logReconnect(t, client, time.Duration((back.T-fault.T)*float64(time.Millisecond)))
	_, at = waitEntry(20*time.Second, at, "message id "+drainedID+" (published during the drain)",
		func(e pageEntry) bool { return e.Kind == "message" && e.ID == drainedID })
	next := version(flips + 3)
	rs.publish(t, channel, next.Etag, next.LastModified.UnixMilli())
	nextID := eventID(next.LastModified.UnixMilli(), next.Etag)
	waitEntry(updateBudget, at, "message id "+nextID+" over the reconnected stream",
		func(e pageEntry) bool { return e.Kind == "message" && e.ID == nextID })
}

func countMessages(entries []pageEntry, id string) int {
	n := 0
	for _, e := range entries {
		if e.Kind == "message" && e.ID == id {
			n++
		}
	}
	return n
}
