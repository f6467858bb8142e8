package stream

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/sse-gateway/sse-gateway/internal/auth"
	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitLimit bounds every wait in this package: a wait that runs out is a failure, never a
// measurement (no assertion here depends on how fast something happened).
const waitLimit = 15 * time.Second

// eventually polls cond until it holds or waitLimit passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitLimit, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Test keys: "all" may read every channel; "server" only dvc_server_*.
const (
	secretAll    = "secret-all-0123"
	secretServer = "secret-server-4567"
)

// fakeStore is the Seeder a broker would be: the newest message per channel, handed to the
// hub at once. With err set its lookups fail, and it seeds nothing.
type fakeStore struct {
	hub   *hub.Hub
	mu    sync.Mutex
	m     map[string]*hub.Message
	err   error
	calls int // channels asked for
}

func (f *fakeStore) Seed(channels []string) {
	f.mu.Lock()
	f.calls += len(channels)
	if f.err != nil {
		f.mu.Unlock()
		return
	}
	ms := make([]*hub.Message, len(channels))
	for i, ch := range channels {
		ms[i] = f.m[ch]
	}
	f.mu.Unlock()
	for i, ch := range channels {
		f.hub.Seed(ch, ms[i])
	}
}

// mode is one way a stream is served.
type mode struct {
	name       string
	noTakeover bool
	h2         bool
	tls        bool // HTTPS without HTTP/2 (h2 implies TLS)
}

var modes = []mode{
	{name: "takeover"},
	{name: "loop", noTakeover: true},
	{name: "h2", h2: true},
}

type env struct {
	t      testing.TB
	hub    *hub.Hub
	store  *fakeStore
	keys   *auth.Store
	srv    *Server
	ts     *httptest.Server
	reg    *prometheus.Registry
	client *http.Client
	mode   mode
	quota  KeyQuota
	// wrapAuth, when set, wraps the key store the Server authorises with.
	wrapAuth func(Authorizer) Authorizer
	// storeOverride, when set, is the Server's Seeder instead of e.store.
	storeOverride Seeder
}

type envOpt func(*env, *Config)

func withQuota(q KeyQuota) envOpt { return func(e *env, _ *Config) { e.quota = q } }

func startEnv(t testing.TB, m mode, cfg Config, opts ...envOpt) *env {
	t.Helper()
	e := &env{t: t, store: &fakeStore{m: map[string]*hub.Message{}}, reg: prometheus.NewRegistry(), mode: m}
	for _, o := range opts {
		o(e, &cfg)
	}
	cfg.NoTakeover = cfg.NoTakeover || m.noTakeover
	e.hub = hub.New(hub.Config{}, nil)
	e.store.hub = e.hub
	e.keys = auth.NewStore()
	e.keys.SetSource("test", []auth.Key{
		{Name: "all", Hash: auth.HashKey(secretAll), Channels: []string{"*"}},
		{Name: "server", Hash: auth.HashKey(secretServer), Channels: []string{"dvc_server_*"}},
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var authz Authorizer = e.keys
	if e.wrapAuth != nil {
		authz = e.wrapAuth(authz)
	}
	var store Seeder = e.store
	if e.storeOverride != nil {
		store = e.storeOverride
	}
	srv, err := New(cfg, e.hub, authz, store, e.quotaOrNil(), log, e.reg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	e.ts = httptest.NewUnstartedServer(srv)
	e.ts.Listener = srv.Listener(e.ts.Listener, "/event-stream") // as the gateway serves streams
	e.ts.Config.ConnContext = srv.ConnContext
	e.ts.Config.MaxHeaderBytes = maxHeaderBytes // as NewHTTPServer configures it
	e.ts.Config.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	if m.h2 || m.tls {
		e.ts.EnableHTTP2 = m.h2
		e.ts.StartTLS()
	} else {
		e.ts.Start()
	}
	e.client = e.ts.Client()
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- srv.Run(ctx) }()
	t.Cleanup(func() {
		// Close every stream (loop streams hold their handler, which httptest.Server.Close
		// waits for), then stop the server, the poller and the hub, and wait for each.
		drainCtx, cancelDrain := context.WithTimeout(context.Background(), waitLimit)
		srv.Drain(drainCtx, 0)
		cancelDrain()
		e.client.CloseIdleConnections()
		e.ts.Close()
		// A taken-over stream's client may have its headers (and the test may be over)
		// while the handler is still handing the connection to the poller; that handler
		// sees the drain and closes its stream, which needs the poller running. Only then
		// is the poller stopped.
		deadline := time.Now().Add(waitLimit)
		for srv.OpenStreams() != 0 && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		if srv.OpenStreams() != 0 {
			t.Errorf("streams left after drain: %s", registryReport(srv))
		}
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
		if srv.OpenStreams() != 0 {
			t.Errorf("streams left after Run returned: %s", registryReport(srv))
		}
		e.hub.Close()
	})
	return e
}

// quotaOrNil keeps a nil quota a nil interface (New treats nil as "no per-key limit").
func (e *env) quotaOrNil() KeyQuota {
	if e.quota == nil {
		return nil
	}
	return e.quota
}

// url builds a stream URL; key and channels are query-escaped.
func (e *env) url(key string, channels ...string) string {
	q := url.Values{}
	q.Set("v", "1.2")
	q.Set("key", key)
	q.Set("channels", strings.Join(channels, ","))
	return e.ts.URL + "/event-stream?" + q.Encode()
}

// publish makes a message as the brokers do: stored as the channel's newest, then fanned out.
func (e *env) publish(channel string, lm int64, extra string) *hub.Message {
	e.t.Helper()
	raw := fmt.Sprintf(`{"etag":"\"e%d\"","lastModified":%d%s}`, lm, lm, extra)
	p, err := wire.ParsePayload([]byte(raw), 1<<20)
	if err != nil {
		e.t.Fatal(err)
	}
	m := wire.NewMessage(channel, p, time.Now())
	e.store.mu.Lock()
	if old := e.store.m[channel]; old == nil || old.Version.Less(m.Version) {
		e.store.m[channel] = m
	}
	e.store.mu.Unlock()
	e.hub.Publish(m)
	return m
}

// counter reads one label of c; label is a string or a typed reason (its String).
func (e *env) counter(c *prometheus.CounterVec, label any) float64 {
	return testutil.ToFloat64(c.WithLabelValues(fmt.Sprint(label)))
}

// sseClient reads one stream in the background and records what it sees.
type sseClient struct {
	t      testing.TB
	resp   *http.Response
	cancel context.CancelFunc

	mu       sync.Mutex
	events   []sseEvent
	comments int
	retries  []string
	err      error // why reading ended (io.EOF: a clean end of the response)
	ended    bool
	endedAt  time.Time
	done     chan struct{}
}

type sseEvent struct {
	ID, Event, Data string
}

func (e *env) connect(rawURL string, hdr http.Header) *sseClient {
	e.t.Helper()
	c, status, body := e.tryConnect(rawURL, hdr)
	if status != http.StatusOK {
		e.t.Fatalf("GET %s: status %d: %s", rawURL, status, body)
	}
	return c
}

// tryConnect opens a stream; on a non-200 answer it returns the status and body.
func (e *env) tryConnect(rawURL string, hdr http.Header) (*sseClient, int, string) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := e.client.Do(req)
	if err != nil {
		cancel()
		e.t.Fatalf("GET %s: %v", rawURL, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return nil, resp.StatusCode, string(b)
	}
	c := &sseClient{t: e.t, resp: resp, cancel: cancel, done: make(chan struct{})}
	go c.read()
	e.t.Cleanup(func() {
		c.close()
	})
	return c, resp.StatusCode, ""
}

func (c *sseClient) read() {
	defer close(c.done)
	br := bufio.NewReader(c.resp.Body)
	var cur sseEvent
	var data []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			c.mu.Lock()
			c.err, c.ended, c.endedAt = err, true, time.Now()
			c.mu.Unlock()
			return
		}
		line = strings.TrimSuffix(line, "\n")
		c.mu.Lock()
		switch {
		case line == "":
			if data != nil {
				cur.Data = strings.Join(data, "\n")
				c.events = append(c.events, cur)
			}
			cur, data = sseEvent{}, nil
		case strings.HasPrefix(line, ":"):
			c.comments++
		default:
			name, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch name {
			case "id":
				cur.ID = value
			case "event":
				cur.Event = value
			case "data":
				data = append(data, value)
			case "retry":
				c.retries = append(c.retries, value)
			}
		}
		c.mu.Unlock()
	}
}

func (c *sseClient) close() {
	c.cancel()
	c.resp.Body.Close()
	<-c.done
}

func (c *sseClient) snapshot() (events []sseEvent, comments int, retries []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]sseEvent(nil), c.events...), c.comments, append([]string(nil), c.retries...)
}

func (c *sseClient) ids() []string {
	evs, _, _ := c.snapshot()
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID
	}
	return out
}

// waitEvents waits until the stream has delivered at least n events and returns them.
func (c *sseClient) waitEvents(n int) []sseEvent {
	c.t.Helper()
	eventually(c.t, fmt.Sprintf("%d events", n), func() bool {
		evs, _, _ := c.snapshot()
		return len(evs) >= n
	})
	evs, _, _ := c.snapshot()
	return evs
}

// waitID waits until the stream has delivered an event with id.
func (c *sseClient) waitID(id string) {
	c.t.Helper()
	eventually(c.t, "event "+id, func() bool {
		for _, got := range c.ids() {
			if got == id {
				return true
			}
		}
		return false
	})
}

func (c *sseClient) waitEnd() error {
	c.t.Helper()
	eventually(c.t, "the stream to end", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.ended
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// checkEvent asserts an event is the contract's frame for m.
func checkEvent(t testing.TB, ev sseEvent, m *hub.Message) {
	t.Helper()
	if ev.ID != m.ID || ev.Event != "message" {
		t.Fatalf("event %+v, want id %s", ev, m.ID)
	}
	var env struct {
		ID      string `json:"id"`
		Channel string `json:"channel"`
		Data    string `json:"data"`
		Name    string `json:"name"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &env); err != nil {
		t.Fatalf("data %q: %v", ev.Data, err)
	}
	if env.ID != m.ID || env.Channel != m.Channel || env.Name != "change" || !json.Valid([]byte(env.Data)) {
		t.Fatalf("envelope %+v for %s", env, m.ID)
	}
}

// rawConn is a plain TCP client for what net/http's client will not send or show.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func (e *env) dialRaw(d *net.Dialer) *rawConn {
	e.t.Helper()
	if d == nil {
		d = &net.Dialer{}
	}
	nc, err := d.Dial("tcp", e.ts.Listener.Addr().String())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { nc.Close() })
	return &rawConn{Conn: nc, br: bufio.NewReader(nc)}
}

// head reads a status line and headers.
func (c *rawConn) head(t testing.TB) (status string, hdr []string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(waitLimit))
	defer c.SetReadDeadline(time.Time{})
	line, err := c.br.ReadString('\n')
	if err != nil {
		t.Fatalf("status line: %v", err)
	}
	status = strings.TrimRight(line, "\r\n")
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			t.Fatalf("headers: %v", err)
		}
		if line == "\r\n" {
			return status, hdr
		}
		hdr = append(hdr, strings.TrimRight(line, "\r\n"))
	}
}

func (e *env) streamPath(key string, channels ...string) string {
	return strings.TrimPrefix(e.url(key, channels...), e.ts.URL)
}

func testutilGauge(e *env, key, protocol string) float64 {
	return testutil.ToFloat64(e.srv.metrics.open.WithLabelValues(key, protocol))
}

func testutilCounter(c prometheus.Counter) float64 { return testutil.ToFloat64(c) }

// waitLast waits until the newest event the stream delivered has id.
func (c *sseClient) waitLast(id string) {
	c.t.Helper()
	eventually(c.t, "last event "+id, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.events) > 0 && c.events[len(c.events)-1].ID == id
	})
}

// closesTotal sums stream_closes_total over every reason.
func (e *env) closesTotal() float64 {
	var n float64
	for r := CloseClient; r <= CloseLifetime; r++ {
		n += e.counter(e.srv.metrics.closes, r)
	}
	return n
}

// waitCloses waits until n closes have been counted, whatever their reason: a stream leaves
// the registry (Open) a moment before its close is counted.
func (e *env) waitCloses(n float64) {
	e.t.Helper()
	eventually(e.t, fmt.Sprintf("%v closes to be counted", n), func() bool { return e.closesTotal() >= n })
}

// registered counts the streams that are fully open (Open also counts requests admitted but
// not yet registered, which Drain and CloseKeys cannot reach yet).
func (e *env) registered() int {
	e.srv.mu.Lock()
	defer e.srv.mu.Unlock()
	n := 0
	for _, st := range e.srv.streams {
		if st != nil {
			n++
		}
	}
	return n
}
