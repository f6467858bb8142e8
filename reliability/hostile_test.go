package reliability

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// answer is a response read off a raw connection.
type answer struct {
	status int
	header http.Header
	body   string
	err    error
}

// rawRequest sends req byte for byte and reads the response head (and the body, unless it
// is a stream).
func rawRequest(addr, src, req string) answer {
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return answer{err: err}
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		return answer{err: err}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		a.body = string(b)
	}
	return a
}

// get is a GET of target (path and query, sent verbatim).
func get(addr, target string, headers ...string) string {
	h := ""
	for _, l := range headers {
		h += l + "\r\n"
	}
	return "GET " + target + " HTTP/1.1\r\nHost: " + addr + "\r\n" + h + "Connection: close\r\n\r\n"
}

// jsonError checks that a is status with the gateway's JSON error body {"error":"..."}.
func jsonError(t testing.TB, what string, a answer, statuses ...int) {
	t.Helper()
	if a.err != nil {
		t.Errorf("%s: no answer: %v", what, a.err)
		return
	}
	if !slices.Contains(statuses, a.status) {
		t.Errorf("%s: status %d, want one of %v (body %.200q)", what, a.status, statuses, a.body)
		return
	}
	var e struct{ Error string }
	if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") || json.Unmarshal([]byte(a.body), &e) != nil || e.Error == "" {
		t.Errorf("%s: %d answer is not a JSON error: Content-Type %q body %.200q", what, a.status, ct, a.body)
	}
}

// healthy checks that the gateway process is alive, live and ready.
func healthy(t testing.TB, g *gateway, after string) {
	t.Helper()
	for _, p := range []string{"/healthz", "/readyz"} {
		if s, body := httpGet(g.url(p)); s != http.StatusOK {
			t.Fatalf("after %s: %s answered %d %s", after, p, s, body)
		}
	}
}

// TestHostileInput is scenario 7 at binary level: oversized, malformed and wrong-typed
// payloads (through the publish API and straight into Redis), 10,000 channels, a 1 MB URL,
// CR/LF in every field, unknown v, and slowloris clients get a clear JSON error, are counted,
// or are cut off, and leave the gateway healthy; nothing anyone sends adds a line or an
// event to a stream.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	r := startRedis(t)
	g := startGateway(t, "hostile", r.URL())
	cs := newClients(t)
	const ch = "hostile"
	watcher := cs.start(clientConfig{channels: ch, target: fixed(g.Addr), record: true, bufSize: 256 << 10})
	waitOpen(t, 10*time.Second, []*sseClient{watcher})
	base := time.Now().UnixMilli()

	// Slowloris runs alongside everything else: it takes the read-header timeout (5s).
	var slowloris sync.WaitGroup
	slowloris.Add(1)
	var cuts []time.Duration
	var slowErr error
	go func() {
		defer slowloris.Done()
		cuts, slowErr = slowlorisRun(g.Addr, 50)
	}()

	t.Run("publish-api", func(t *testing.T) {
		// The default --max-payload is 64 KiB: exactly that is accepted, one byte more is not.
		if st, body := g.publishAPI(ch, sized(`"limit"`, base-2, 64<<10)); st != http.StatusAccepted {
			t.Errorf("POST /v1/publish with a payload of exactly 64 KiB: %d %s, want 202", st, body)
		}
		st, body := g.publishAPI(ch, sized(`"limit+1"`, base-1, 64<<10+1))
		jsonError(t, "POST /v1/publish with a payload of 64 KiB + 1", answer{status: st, header: jsonHeader, body: body}, http.StatusRequestEntityTooLarge)
		big := payload(`"big"`, base, 64<<10, false)
		st, body = g.publishAPI(ch, big)
		jsonError(t, "POST /v1/publish with a 64 KiB+ payload", answer{status: st, header: jsonHeader, body: body}, http.StatusRequestEntityTooLarge)
		huge := `{"channel":"hostile","data":{"etag":"\"h\"","lastModified":1,"pad":"` + strings.Repeat("y", 10<<20) + `"}}`
		st, body = g.post("/v1/publish", []byte(huge))
		jsonError(t, "POST /v1/publish with a 10 MiB body", answer{status: st, header: jsonHeader, body: body}, http.StatusRequestEntityTooLarge)
		for _, bad := range []string{
			`not json`, `{"channel":"hostile"}`, `{"channel":"hostile","data":"str"}`,
			`{"channel":"hostile","data":{"etag":5,"lastModified":1}}`,
			`{"channel":"hostile","data":{"etag":"\"x\"","lastModified":"1"}}`,
			`{"channel":"hostile","data":{"etag":"\"x\"","lastModified":-1}}`,
			`{"channel":"hostile","data":{"etag":"\"x\"","lastModified":1,"type":7}}`,
			`{"channel":"hostile\r\nx","data":{"etag":"\"x\"","lastModified":1}}`,
			`{"channel":"_probe.x","data":{"etag":"\"x\"","lastModified":1}}`,
			`{"channel":"hostile","data":{"etag":"\"x\"","lastModified":1}} trailing`,
		} {
			st, body := g.post("/v1/publish", []byte(bad))
			jsonError(t, "POST /v1/publish "+truncate(bad, 60), answer{status: st, header: jsonHeader, body: body}, http.StatusBadRequest)
		}
		req, _ := http.NewRequest(http.MethodPost, g.url("/v1/publish"), strings.NewReader(`{"channel":"hostile","data":{"etag":"\"x\"","lastModified":1}}`))
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		jsonError(t, "POST /v1/publish without the admin token", answer{status: resp.StatusCode, header: resp.Header, body: string(b)}, http.StatusUnauthorized)
		healthy(t, g, "hostile publish requests")
	})

	t.Run("redis-malformed", func(t *testing.T) {
		before := g.metrics().get("sse_gateway_events_malformed_total")
		deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
		bad := []string{
			payload(`"big"`, base, 64<<10, false), // too large
			"not json", "", "null", "[1,2]", `"str"`, "\xff\xfe{}", deep,
			`{"etag":5,"lastModified":1}`, `{"etag":"","lastModified":1}`, `{"ETAG":"\"x\"","lastModified":1}`,
			`{"etag":"\"x\"","lastModified":"12"}`, `{"etag":"\"x\"","lastModified":-1}`,
			`{"etag":"\"x\"","lastModified":1.5}`, `{"etag":"\"x\"","lastModified":1e3}`,
			`{"etag":"\"x\"","lastModified":99999999999999999999999}`, `{"etag":"\"x\"","lastModified":1,"type":7}`,
			`{"etag":"\"x\"","lastModified":1`, `{"etag":"\"x\"","etag":5,"lastModified":1}`,
		}
		for _, b := range bad {
			r.publishRaw(ch, b)
		}
		// A valid payload on a channel no stream could ever subscribe to.
		ctx := t.Context()
		if err := r.Client.Publish(ctx, "sse:bad channel!", payload(`"x"`, base, 0, false)).Err(); err != nil {
			t.Fatal(err)
		}
		want := before + float64(len(bad)+1)
		var got float64
		waitFor(t, 10*time.Second, func() string {
			return fmt.Sprintf("events_malformed_total went from %v to %v, want %v (+%d)", before, got, want, len(bad)+1)
		}, func() bool { got = g.metrics().get("sse_gateway_events_malformed_total"); return got == want })
		healthy(t, g, "malformed events from Redis")
		etag := `"valid-after-malformed"`
		r.publishRaw(ch, payload(etag, base+1, 0, false))
		waitHave(t, 10*time.Second, []*sseClient{watcher}, ch, versionOf(etag, base+1))
		if evs := watcher.snapshot(); len(evs) != 2 || evs[0].v != versionOf(`"limit"`, base-2) {
			t.Errorf("the stream received %d events, want only the 64 KiB one published through the API and the valid one after the malformed ones: %s", len(evs), watcher.describe())
		}
	})

	t.Run("query", func(t *testing.T) {
		many := make([]string, 10000)
		for i := range many {
			many[i] = "c" + strconv.Itoa(i)
		}
		// 3,000 channels: a query over its 8 KiB limit, within the 32 KiB of headers a
		// stream request may have (beyond those net/http answers 431 itself).
		a := rawRequest(g.Addr, "", get(g.Addr, streamPath(strings.Join(many[:3000], ","))))
		jsonError(t, "3,000 channels", a, http.StatusRequestURITooLong)
		t.Logf("3,000 channels: %d %s", a.status, strings.TrimSpace(a.body))
		jsonError(t, "11 channels (over --max-channels 10)", rawRequest(g.Addr, "", get(g.Addr, streamPath(strings.Join(many[:11], ",")))), http.StatusBadRequest)
		jsonError(t, "20 KB URL", rawRequest(g.Addr, "", get(g.Addr, streamPath(ch)+"&pad="+strings.Repeat("p", 20<<10))), http.StatusRequestURITooLong)
		// Over the 32 KiB a stream request may send, net/http refuses it before buffering it.
		// (The server may reset the connection before the client has sent it all.)
		if a := rawRequest(g.Addr, "", get(g.Addr, streamPath(ch)+"&pad="+strings.Repeat("p", 1<<20))); a.err == nil && a.status != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("1 MB URL: %d %q, want net/http's 431", a.status, a.body)
		}
		for _, q := range []string{"v=2", "v=1.3", "v=", "v=1.2&v=1.2", "v=%00", "v=1.2%0D%0A"} {
			jsonError(t, "unknown v: "+q, rawRequest(g.Addr, "", get(g.Addr, "/event-stream?"+q+"&channels="+ch+"&key="+testKey)), http.StatusBadRequest)
		}
		for _, q := range []string{
			"channels=" + ch + "%0D%0Aevent:%20evil&key=" + testKey,
			"channels=" + ch + "%0Adata:x&key=" + testKey,
			"channels=" + ch + "%0D&key=" + testKey,
			"channels=" + ch + "&key=" + testKey + "%0D%0AX-Injected:%201",
			"channels=" + ch + "&key=" + url.QueryEscape(testKey+"\r\n"),
			"channels=_probe.x&key=" + testKey,
		} {
			jsonError(t, "CR/LF or a reserved name in the query: "+q, rawRequest(g.Addr, "", get(g.Addr, "/event-stream?v=1.2&"+q)), http.StatusBadRequest, http.StatusUnauthorized)
		}
		// A bare CR or another control character in a header value: net/http refuses the
		// request before the gateway sees it (with its own plain-text 400, not the
		// gateway's JSON error).
		for _, h := range []string{"Last-Event-ID: 1\rX-Injected: 1", "Last-Event-ID: \x01\x02"} {
			if a := rawRequest(g.Addr, "", get(g.Addr, streamPath(ch), h)); a.err == nil && a.status != http.StatusBadRequest {
				t.Errorf("a request with a control character in a header (%q) got %d, want net/http's 400", h, a.status)
			}
		}
		// Garbage Last-Event-IDs are treated as a fresh stream: it gets the newest event.
		for _, id := range []string{"99999999999999999999999-00000000", "-1-00000000", "1-zzzzzzzz", "1-0000000g", strings.Repeat("9", 4000)} {
			c := cs.start(clientConfig{channels: ch, lastID: id, target: fixed(g.Addr), record: true})
			waitHave(t, 10*time.Second, []*sseClient{c}, ch, versionOf(`"valid-after-malformed"`, base+1))
		}
		healthy(t, g, "hostile queries")
	})

	t.Run("crlf-in-payload", func(t *testing.T) {
		before := len(watcher.snapshot())
		evil := "\r\n\r\nid: 666\nevent: evil\ndata: injected\r\rretry: 1\n\n"
		inner := map[string]any{"etag": `"crlf` + evil + `"`, "lastModified": base + 10, "type": "refetchConfig" + evil, "extra": evil, "u": "\u2028\u2029\u0000"}
		data, _ := json.Marshal(inner)
		if st, body := g.publishAPI(ch, string(data)); st != http.StatusAccepted {
			t.Fatalf("POST /v1/publish with CR/LF in every field: %d %s", st, body)
		}
		// Waited for: the next publish would otherwise replace it before fan-out (newest-only).
		waitHave(t, 10*time.Second, []*sseClient{watcher}, ch, versionOf(`"crlf`+evil+`"`, base+10))
		// Straight into Redis, with raw CR/LF between the JSON tokens too.
		raw := strings.ReplaceAll(string(func() []byte {
			inner["lastModified"] = base + 11
			b, _ := json.Marshal(inner)
			return b
		}()), ",", ",\r\n\r\n")
		r.publishRaw(ch, raw)
		want := versionOf(`"crlf`+evil+`"`, base+11)
		waitHave(t, 10*time.Second, []*sseClient{watcher}, ch, want)
		evs := watcher.snapshot()[before:]
		if len(evs) != 2 {
			t.Errorf("two publishes with CR/LF in every field produced %d events, want 2: %s", len(evs), watcher.describe())
		}
		for _, e := range evs {
			if !slices.Equal(e.fields, []string{"id", "event", "data"}) {
				t.Errorf("an event's frame has the lines %q, want exactly id, event, data: a CR/LF got through (data %.300q)", e.fields, e.data)
			}
			var env struct{ Data string }
			if json.Unmarshal([]byte(e.data), &env) != nil || !strings.Contains(env.Data, `id: 666`) {
				t.Errorf("the event's data does not carry the published fields verbatim: %.300q", e.data)
			}
		}
		watcher.mu.Lock()
		retries := len(watcher.retries)
		watcher.mu.Unlock()
		if retries != 0 {
			t.Errorf("a published retry: line reached the client")
		}
		healthy(t, g, "CR/LF payloads")
	})

	t.Run("pipelined-and-oversized-headers", func(t *testing.T) {
		m0 := g.metrics()
		// A second request pipelined behind the stream request, in the same write: an SSE
		// client never does that (request smuggling, or a confused proxy).
		req := get(g.Addr, streamPath(ch)) + get(g.Addr, "/metrics")
		req = strings.Replace(req, "Connection: close\r\n", "", 1)
		jsonError(t, "a request pipelined behind a stream request", rawRequest(g.Addr, "", req), http.StatusBadRequest)
		// A GET with a body.
		body := "GET " + streamPath(ch) + " HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
		if a := rawRequest(g.Addr, "", body); a.err != nil || a.status != http.StatusBadRequest {
			t.Errorf("a stream request with a body: %d %v, want 400", a.status, a.err)
		}
		// 3 MB of headers, over the 32 KiB a stream request may send: refused by net/http.
		huge := get(g.Addr, streamPath(ch), "X-Big: "+strings.Repeat("h", 3<<20))
		if a := rawRequest(g.Addr, "", huge); a.err == nil && a.status < 400 {
			t.Errorf("a request with 3 MB of headers got %d", a.status)
		}
		jsonError(t, "POST /event-stream", rawRequest(g.Addr, "", "POST "+streamPath(ch)+" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), http.StatusMethodNotAllowed)
		healthy(t, g, "pipelined requests and oversized headers")
		// None of those became a stream: the stream accounting still adds up.
		m1 := g.metrics()
		opened := m1.get("sse_gateway_stream_opens_total", `result="ok"`) - m0.get("sse_gateway_stream_opens_total", `result="ok"`)
		closed := m1.get("sse_gateway_stream_closes_total") - m0.get("sse_gateway_stream_closes_total")
		nowOpen := m1.get("sse_gateway_streams_open") - m0.get("sse_gateway_streams_open")
		if opened != closed+nowOpen {
			t.Errorf("requests refused with 400 changed stream_opens_total{result=\"ok\"} by %v but stream_closes_total by %v and streams_open by %v: refused requests are counted as opened streams", opened, closed, nowOpen)
		}
	})

	slowloris.Wait()
	t.Run("slowloris", func(t *testing.T) {
		if slowErr != nil {
			t.Fatal(slowErr)
		}
		slices.Sort(cuts)
		t.Logf("%d slowloris connections (one header byte every 500ms, never finishing) were cut after %v to %v (--read-header-timeout default 5s); streams kept working meanwhile",
			len(cuts), cuts[0].Round(time.Millisecond), cuts[len(cuts)-1].Round(time.Millisecond))
		healthy(t, g, "slowloris")
	})
	if !watcher.isOpen() {
		t.Errorf("the watching stream did not survive the hostile input: %s", watcher.describe())
	}
}

// sized is a valid payload of exactly n bytes.
func sized(etag string, lm int64, n int) string {
	head := `{"etag":` + strconv.Quote(etag) + `,"lastModified":` + itoa(lm) + `,"pad":"`
	return head + strings.Repeat("z", n-len(head)-2) + `"}`
}

var jsonHeader = http.Header{"Content-Type": {"application/json"}}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// slowlorisRun opens n connections that send a request line and then one header byte
// every 500ms, never finishing their headers, and returns how long each stayed open. It
// fails if one is still open after 30s.
func slowlorisRun(addr string, n int) ([]time.Duration, error) {
	type res struct {
		d   time.Duration
		err error
	}
	out := make(chan res, n)
	for i := range n {
		go func() {
			d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source(i))}}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				out <- res{err: err}
				return
			}
			defer c.Close()
			start := time.Now()
			if _, err := io.WriteString(c, "GET "+streamPath("hostile")+" HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
				out <- res{err: err}
				return
			}
			cut := make(chan struct{})
			go func() {
				_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
				_, _ = io.Copy(io.Discard, c)
				close(cut)
			}()
			tick := time.NewTicker(500 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-cut:
					d := time.Since(start)
					if d >= 30*time.Second {
						out <- res{err: fmt.Errorf("a slowloris connection was still open after %v", d)}
						return
					}
					out <- res{d: d}
					return
				case <-tick.C:
					_, _ = c.Write([]byte("a"))
				}
			}
		}()
	}
	var cuts []time.Duration
	var firstErr error
	for range n {
		r := <-out
		if r.err != nil && firstErr == nil {
			firstErr = r.err
		}
		if r.err == nil {
			cuts = append(cuts, r.d)
		}
	}
	return cuts, firstErr
}

// TestStreamLimits is the last item of scenario 7: over --max-streams-per-key (counted
// across instances in Redis) and over --max-streams-per-ip (per instance), a stream gets 429
// with a Retry-After and a JSON error, and the slot is given back when a stream closes.
func TestStreamLimits(t *testing.T) {
	t.Parallel()
	r := startRedis(t)
	a := startGateway(t, "limits-a", r.URL(), "--max-streams-per-key", "3")
	b := startGateway(t, "limits-b", r.URL(), "--max-streams-per-key", "3")
	c := startGateway(t, "limits-ip", r.URL(), "--max-streams-per-ip", "2")
	const ch = "limits"
	over := func(g *gateway, src, what string) {
		t.Helper()
		ans := rawRequest(g.Addr, src, get(g.Addr, streamPath(ch)))
		jsonError(t, what, ans, http.StatusTooManyRequests)
		if ra, err := strconv.Atoi(ans.header.Get("Retry-After")); err != nil || ra <= 0 {
			t.Errorf("%s: Retry-After %q, want a positive number of seconds", what, ans.header.Get("Retry-After"))
		}
	}

	held := newClients(t)
	waitOpen(t, 10*time.Second, []*sseClient{
		held.start(clientConfig{channels: ch, source: "127.0.0.31", target: fixed(a.Addr)}),
		held.start(clientConfig{channels: ch, source: "127.0.0.32", target: fixed(a.Addr)}),
		held.start(clientConfig{channels: ch, source: "127.0.0.33", target: fixed(b.Addr)}),
	})
	over(a, "127.0.0.34", "a 4th stream of a key limited to 3, on the instance holding 2")
	over(b, "127.0.0.34", "a 4th stream of a key limited to 3, on the instance holding 1")
	held.stop()
	// The slots come back, on any instance.
	after := newClients(t)
	waitOpen(t, 20*time.Second, []*sseClient{
		after.start(clientConfig{channels: ch, source: "127.0.0.35", target: fixed(b.Addr), reconnect: true}),
		after.start(clientConfig{channels: ch, source: "127.0.0.36", target: fixed(b.Addr), reconnect: true}),
		after.start(clientConfig{channels: ch, source: "127.0.0.37", target: fixed(b.Addr), reconnect: true}),
	})

	perIP := newClients(t)
	waitOpen(t, 10*time.Second, []*sseClient{
		perIP.start(clientConfig{channels: ch, source: "127.0.0.40", target: fixed(c.Addr)}),
		perIP.start(clientConfig{channels: ch, source: "127.0.0.40", target: fixed(c.Addr)}),
	})
	over(c, "127.0.0.40", "a 3rd stream from one address limited to 2")
	other := perIP.start(clientConfig{channels: ch, source: "127.0.0.41", target: fixed(c.Addr)})
	waitOpen(t, 10*time.Second, []*sseClient{other})
	for _, g := range []*gateway{a, b, c} {
		healthy(t, g, "limits")
	}
}
