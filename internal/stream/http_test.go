package stream

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// headerMap turns raw header lines into canonical name -> values.
func headerMap(t testing.TB, lines []string) http.Header {
	t.Helper()
	h := http.Header{}
	for _, l := range lines {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			t.Fatalf("bad header line %q", l)
		}
		h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	return h
}

// TestStreamHeadersHTTP1 checks the bytes an HTTP/1.1 client gets, on the taken-over path
// (written by the gateway itself) and on the net/http path.
func TestStreamHeadersHTTP1(t *testing.T) {
	for _, m := range modes[:2] {
		t.Run(m.name, func(t *testing.T) {
			e := startEnv(t, m, Config{AllowedOrigins: []string{"https://app.example"}})
			c := e.dialRaw(nil)
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: gw\r\nOrigin: https://app.example\r\nAccept: text/event-stream\r\n\r\n",
				e.streamPath(secretAll, "dvc_server_1"))
			status, lines := c.head(t)
			if status != "HTTP/1.1 200 OK" {
				t.Fatalf("status line %q", status)
			}
			h := headerMap(t, lines)
			want := map[string]string{
				"Content-Type":                     "text/event-stream",
				"Cache-Control":                    "no-cache",
				"X-Accel-Buffering":                "no",
				"Connection":                       "keep-alive",
				"Transfer-Encoding":                "chunked",
				"Access-Control-Allow-Origin":      "https://app.example",
				"Access-Control-Allow-Credentials": "true",
				"Vary":                             "Origin",
			}
			for k, v := range want {
				if got := h.Values(k); len(got) != 1 || got[0] != v {
					t.Errorf("%s: %q, want exactly %q (headers %q)", k, got, v, lines)
				}
			}
			if h.Get("Content-Length") != "" {
				t.Errorf("Content-Length on a stream: %q", h.Get("Content-Length"))
			}
			// The body is chunked and starts at once with a heartbeat (headers are flushed
			// before any event exists).
			cr := httputil.NewChunkedReader(c.br)
			buf := make([]byte, 3)
			if _, err := io.ReadFull(cr, buf); err != nil || string(buf) != ":\n\n" {
				t.Fatalf("first bytes %q, %v", buf, err)
			}
			// An event arrives as valid chunked data.
			msg := e.publish("dvc_server_1", 1700000000000, "")
			frame := make([]byte, len(msg.Frame))
			if _, err := io.ReadFull(cr, frame); err != nil || string(frame) != string(msg.Frame) {
				t.Fatalf("event bytes %q, %v; want %q", frame, err, msg.Frame)
			}
		})
	}
}

func TestStreamHeadersHTTP2(t *testing.T) {
	e := startEnv(t, mode{name: "h2", h2: true}, Config{AllowedOrigins: []string{"*"}})
	c := e.connect(e.url(secretAll, "c"), http.Header{"Origin": {"https://any.example"}})
	r := c.resp
	if r.ProtoMajor != 2 {
		t.Fatalf("protocol %s, want HTTP/2", r.Proto)
	}
	for k, v := range map[string]string{
		"Content-Type":                     "text/event-stream",
		"Cache-Control":                    "no-cache",
		"X-Accel-Buffering":                "no",
		"Access-Control-Allow-Origin":      "https://any.example",
		"Access-Control-Allow-Credentials": "true",
	} {
		if got := r.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if got := r.Header.Get("Connection"); got != "" {
		t.Errorf("Connection header on HTTP/2: %q", got)
	}
}

func TestCORS(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := startEnv(t, m, Config{AllowedOrigins: []string{" https://a.example ", "https://b.example"}})
			for _, c := range []struct {
				origin string
				allow  bool
			}{
				{"https://a.example", true},
				{"https://b.example", true},
				{"https://evil.example", false},
				{"https://a.example.evil", false},
				{"null", false},
				{"", false},
			} {
				hdr := http.Header{}
				if c.origin != "" {
					hdr.Set("Origin", c.origin)
				}
				s := e.connect(e.url(secretAll, "c"), hdr)
				got := s.resp.Header.Get("Access-Control-Allow-Origin")
				cred := s.resp.Header.Get("Access-Control-Allow-Credentials")
				if c.allow && (got != c.origin || cred != "true") {
					t.Errorf("origin %q: ACAO %q ACAC %q", c.origin, got, cred)
				}
				if !c.allow && (got != "" || cred != "") {
					t.Errorf("origin %q not allowed but got ACAO %q ACAC %q", c.origin, got, cred)
				}
				if got == "*" {
					t.Errorf("wildcard origin")
				}
				s.close()
			}
			// Errors carry CORS headers too, so a browser SDK can read why it was refused.
			req, _ := http.NewRequest(http.MethodGet, e.url("wrong-key", "c"), nil)
			req.Header.Set("Origin", "https://a.example")
			res, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 401 || res.Header.Get("Access-Control-Allow-Origin") != "https://a.example" {
				t.Errorf("401 CORS: %d %q", res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"))
			}
			// Preflight.
			for origin, allowed := range map[string]bool{"https://b.example": true, "https://evil.example": false} {
				req, _ := http.NewRequest(http.MethodOptions, e.url(secretAll, "c"), nil)
				req.Header.Set("Origin", origin)
				req.Header.Set("Access-Control-Request-Method", "GET")
				req.Header.Set("Access-Control-Request-Headers", "last-event-id")
				res, err := e.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				res.Body.Close()
				if res.StatusCode != http.StatusNoContent {
					t.Errorf("preflight status %d", res.StatusCode)
				}
				acao := res.Header.Get("Access-Control-Allow-Origin")
				if allowed != (acao == origin) || allowed != strings.Contains(res.Header.Get("Access-Control-Allow-Headers"), "Last-Event-ID") {
					t.Errorf("preflight from %q: %v", origin, res.Header)
				}
			}
		})
	}
}

// "*" echoes any origin but the opaque "null" (which any sandboxed page can send); no
// allowed origins means none, not all.
func TestCORSWildcardAndNone(t *testing.T) {
	for _, tc := range []struct {
		allowed []string
		origin  string
		want    string
	}{
		{[]string{"*"}, "https://whatever.example", "https://whatever.example"},
		{[]string{"*"}, "null", ""},
		{[]string{"https://a.example", "null"}, "null", ""},
		{nil, "https://whatever.example", ""},
		{[]string{""}, "https://whatever.example", ""},
	} {
		e := startEnv(t, modes[0], Config{AllowedOrigins: tc.allowed})
		s := e.connect(e.url(secretAll, "c"), http.Header{"Origin": {tc.origin}})
		if got := s.resp.Header.Get("Access-Control-Allow-Origin"); got != tc.want {
			t.Errorf("allowed %q, Origin %q: Access-Control-Allow-Origin %q, want %q", tc.allowed, tc.origin, got, tc.want)
		}
		s.close()
	}
}

// expectError asserts a JSON error answer.
func expectError(t testing.TB, res *http.Response, status int, fragment string) {
	t.Helper()
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", res.StatusCode, status, body)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q for %d", ct, status)
	}
	var out struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Error == "" {
		t.Fatalf("body %q is not {\"error\":...}: %v", body, err)
	}
	if !strings.Contains(out.Error, fragment) {
		t.Fatalf("error %q does not mention %q", out.Error, fragment)
	}
	for _, secret := range []string{secretAll, secretServer} {
		if strings.Contains(string(body), secret) {
			t.Fatalf("error body shows a key: %s", body)
		}
	}
}

func TestErrors(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := startEnv(t, m, Config{})
			base := e.ts.URL + "/event-stream?"
			many := make([]string, 10000)
			for i := range many {
				many[i] = "c" + strconv.Itoa(i)
			}
			cases := []struct {
				name, method, url string
				status            int
				fragment          string
			}{
				{"no params", "GET", base, 400, "key"},
				{"no key", "GET", base + "channels=a", 400, "key"},
				{"no channels", "GET", base + "key=" + secretAll, 400, "channels"},
				{"unknown key", "GET", e.url("not-a-key", "a"), 401, "unknown key"},
				{"channel not allowed", "GET", e.url(secretServer, "dvc_server_1", "dvc_client_1"), 403, "dvc_client_1"},
				{"bad channel chars", "GET", e.url(secretAll, "a b"), 400, "channel"},
				{"reserved channel", "GET", e.url(secretAll, "_probe"), 400, "channel"},
				{"channel with CR LF", "GET", base + "key=" + secretAll + "&channels=a%0D%0Aevent:%20error", 400, "channel"},
				{"key with CR LF", "GET", base + "key=" + secretAll + "%0D%0A&channels=a", 400, "key"},
				{"v with CR LF", "GET", base + "v=1.2%0D%0A&key=" + secretAll + "&channels=a", 400, "v"},
				{"unknown v", "GET", base + "v=2.0&key=" + secretAll + "&channels=a", 400, "version"},
				{"11 channels", "GET", e.url(secretAll, many[:11]...), 400, "too many"},
				{"3,000 channels", "GET", e.url(secretAll, many[:3000]...), 414, "too long"},
				{"bad escape", "GET", base + "key=" + secretAll + "&channels=%zz", 400, "query"},
				{"POST", "POST", e.url(secretAll, "a"), 405, "method"},
				{"PUT", "PUT", e.url(secretAll, "a"), 405, "method"},
				{"DELETE", "DELETE", e.url(secretAll, "a"), 405, "method"},
			}
			before := e.counter(e.srv.metrics.opens, "400")
			for _, c := range cases {
				req, _ := http.NewRequest(c.method, c.url, nil)
				res, err := e.client.Do(req)
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				t.Run(c.name, func(t *testing.T) { expectError(t, res, c.status, c.fragment) })
				if c.status == 405 && res.Header.Get("Allow") == "" {
					t.Errorf("%s: 405 without Allow", c.name)
				}
			}
			if got := e.counter(e.srv.metrics.opens, "400") - before; got != 11 {
				t.Errorf("stream_opens_total{result=400} grew by %v, want 11", got)
			}
			if e.srv.OpenStreams() != 0 {
				t.Errorf("refused requests left %d streams open", e.srv.OpenStreams())
			}
			// Still healthy: a good stream opens (and is the only one registered) and gets
			// events.
			s := e.connect(e.url(secretAll, "after"), nil)
			eventually(t, "the good stream to be the one registered stream", func() bool { return e.registered() == 1 && e.srv.OpenStreams() == 1 })
			m := e.publish("after", 5, "")
			s.waitID(m.ID)
		})
	}
}

// TestLongURLs sends long request lines over raw TCP: a 20 KB one (too long for a stream,
// within what a stream request may send) gets the JSON 414; a 1 MB one is refused by
// net/http with its 431 before it is buffered; the gateway keeps serving.
func TestLongURLs(t *testing.T) {
	e := startEnv(t, modes[0], Config{})
	for _, tc := range []struct {
		size   int
		status int
	}{{20 << 10, http.StatusRequestURITooLong}, {1 << 20, http.StatusRequestHeaderFieldsTooLarge}} {
		c := e.dialRaw(nil)
		path := "/event-stream?key=" + secretAll + "&channels=" + strings.Repeat("a", tc.size)
		go fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: gw\r\n\r\n", path)
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.status == http.StatusRequestURITooLong {
			expectError(t, res, tc.status, "too long")
		} else if res.StatusCode != tc.status {
			t.Fatalf("a %d-byte URL: %s, want %d", tc.size, res.Status, tc.status)
		}
	}
	s := e.connect(e.url(secretAll, "c"), nil)
	m := e.publish("c", 1, "")
	s.waitID(m.ID)
}

func TestPipelinedBytesRefused(t *testing.T) {
	e := startEnv(t, modes[0], Config{})
	c := e.dialRaw(nil)
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: gw\r\n\r\nGET / HTTP/1.1\r\nHost: gw\r\n\r\n", e.streamPath(secretAll, "c"))
	res, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	expectError(t, res, http.StatusBadRequest, "unexpected data")
	eventually(t, "the refused stream to be forgotten", func() bool { return e.srv.OpenStreams() == 0 })
}

func TestHEAD(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := startEnv(t, m, Config{MaxStreamsPerIP: 1})
			for range 3 { // would hit the per-IP limit if HEAD leaked a stream
				req, _ := http.NewRequest(http.MethodHead, e.url(secretAll, "c"), nil)
				res, err := e.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				res.Body.Close()
				if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
					t.Fatalf("HEAD: %d %v", res.StatusCode, res.Header)
				}
			}
			if e.srv.OpenStreams() != 0 {
				t.Fatalf("HEAD left %d streams", e.srv.OpenStreams())
			}
			e.connect(e.url(secretAll, "c"), nil)
		})
	}
}

// TestMaxStreamsPerIP: over the per-address cap a client gets 429 with Retry-After (the
// contract: "429 (+Retry-After)"), and a slot frees when a stream closes.
func TestMaxStreamsPerIP(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := startEnv(t, m, Config{MaxStreamsPerIP: 2})
			a := e.connect(e.url(secretAll, "c"), nil)
			e.connect(e.url(secretAll, "c"), nil)
			req, _ := http.NewRequest(http.MethodGet, e.url(secretAll, "c"), nil)
			res, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			retryAfter := res.Header.Get("Retry-After")
			expectError(t, res, http.StatusTooManyRequests, "too many")
			if n, err := strconv.Atoi(retryAfter); err != nil || n <= 0 {
				t.Errorf("429 Retry-After = %q, want a positive number of seconds", retryAfter)
			}
			a.close()
			eventually(t, "the closed stream to free its slot", func() bool { return e.srv.OpenStreams() == 1 })
			e.connect(e.url(secretAll, "c"), nil)
		})
	}
}

func TestMaxStreams(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := startEnv(t, m, Config{MaxStreams: 2})
			a := e.connect(e.url(secretAll, "c"), nil)
			e.connect(e.url(secretServer, "dvc_server_1"), nil)
			req, _ := http.NewRequest(http.MethodGet, e.url(secretAll, "c"), nil)
			res, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			expectError(t, res, http.StatusServiceUnavailable, "limit")
			if got := e.counter(e.srv.metrics.opens, "503"); got != 1 {
				t.Errorf("opens{503} = %v", got)
			}
			a.close()
			eventually(t, "a slot to free", func() bool { return e.srv.OpenStreams() == 1 })
			e.connect(e.url(secretAll, "c"), nil)
		})
	}
}

// TestAcceptRate: over the accept rate a client gets 429 with Retry-After.
func TestAcceptRate(t *testing.T) {
	// One token, refilled every 1000 s: the second request is refused however slow the machine.
	e := startEnv(t, modes[0], Config{AcceptRate: 0.001})
	e.connect(e.url(secretAll, "c"), nil)
	req, _ := http.NewRequest(http.MethodGet, e.url(secretAll, "c"), nil)
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	retryAfter := res.Header.Get("Retry-After")
	expectError(t, res, http.StatusTooManyRequests, "retry")
	if n, err := strconv.Atoi(retryAfter); err != nil || n <= 0 {
		t.Errorf("429 Retry-After = %q, want a positive number of seconds", retryAfter)
	}
}

// fakeQuota admits up to limit streams per key name, or fails with err.
type fakeQuota struct {
	mu       sync.Mutex
	limit    int
	held     map[string]int
	err      error
	released atomic.Int64
}

func (q *fakeQuota) Acquire(_ context.Context, key string) (func(), bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return nil, false, q.err
	}
	if q.held[key] >= q.limit {
		return nil, false, nil
	}
	q.held[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			q.mu.Lock()
			q.held[key]--
			q.mu.Unlock()
			q.released.Add(1)
		})
	}, true, nil
}

func (q *fakeQuota) heldBy(key string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.held[key]
}

func TestKeyQuota(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			q := &fakeQuota{limit: 1, held: map[string]int{}}
			e := startEnv(t, m, Config{}, withQuota(q))
			a := e.connect(e.url(secretAll, "c"), nil)
			req, _ := http.NewRequest(http.MethodGet, e.url(secretAll, "c"), nil)
			res, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			retryAfter := res.Header.Get("Retry-After")
			expectError(t, res, http.StatusTooManyRequests, "key")
			if n, err := strconv.Atoi(retryAfter); err != nil || n <= 0 {
				t.Fatalf("Retry-After %q", retryAfter)
			}
			// Another key has its own quota.
			e.connect(e.url(secretServer, "dvc_server_1"), nil)
			if e.srv.OpenStreams() != 2 {
				t.Fatalf("open = %d", e.srv.OpenStreams())
			}
			a.close()
			eventually(t, "the quota to be released", func() bool { return q.heldBy("all") == 0 })
			e.connect(e.url(secretAll, "c"), nil)

			// A quota store outage admits streams.
			q.mu.Lock()
			q.err = errors.New("redis down")
			q.mu.Unlock()
			e.connect(e.url(secretAll, "c"), nil)
		})
	}
}

func TestKeyQuotaReleasedOnRefusal(t *testing.T) {
	// A stream refused by a local limit after the quota was taken must not keep the quota.
	q := &fakeQuota{limit: 5, held: map[string]int{}}
	e := startEnv(t, modes[0], Config{MaxStreamsPerIP: 1}, withQuota(q))
	e.connect(e.url(secretAll, "c"), nil)
	for range 3 {
		req, _ := http.NewRequest(http.MethodGet, e.url(secretAll, "c"), nil)
		res, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("status %d", res.StatusCode)
		}
	}
	if got := q.heldBy("all"); got != 1 {
		t.Fatalf("quota held %d, want 1", got)
	}
}

func TestOpensAndClosesMetrics(t *testing.T) {
	e := startEnv(t, modes[0], Config{})
	s := e.connect(e.url(secretAll, "c"), nil)
	if got := e.counter(e.srv.metrics.opens, "ok"); got != 1 {
		t.Fatalf("opens{ok} = %v", got)
	}
	// The client may see its headers a moment before the stream is registered.
	eventually(t, "streams_open{all,http1} = 1", func() bool { return testutilGauge(e, "all", protoHTTP1) == 1 })
	s.close()
	eventually(t, "the close to be counted", func() bool { return e.counter(e.srv.metrics.closes, CloseClient) == 1 })
	if got := testutilGauge(e, "all", protoHTTP1); got != 0 {
		t.Fatalf("streams_open after close = %v", got)
	}
	names := []string{}
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	for _, want := range []string{"sse_gateway_streams_open", "sse_gateway_stream_opens_total", "sse_gateway_stream_closes_total",
		"sse_gateway_frames_written_total", "sse_gateway_written_bytes_total", "sse_gateway_event_age_seconds"} {
		if !slices.Contains(names, want) {
			t.Errorf("metric %s not registered (have %v)", want, names)
		}
	}
}
