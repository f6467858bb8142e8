package stream

import (
	"context"
	"io"
	"net/http"
	"net/http/httputil"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/auth"
	"github.com/sse-gateway/sse-gateway/internal/gwtest"
)

// TestDrainSpreadsCloses: Drain closes every stream with a jittered retry: frame and a cut
// response, spread over the window, and refuses new streams with 503 + Retry-After from the
// start of the drain.
//
// The spread is checked where it is exact: the k-th of n streams to end cannot end before
// k/n of the window (a close is scheduled no earlier, and a client sees it only after),
// however loaded the machine; closes seen late say nothing (a stalled client goroutine or
// server wakes late). That Drain schedules them evenly, and no later, is TestDrainSchedule's
// (synctest, exact instants).
func TestDrainSpreadsCloses(t *testing.T) {
	const n = 50
	const window = 2 * time.Second
	e := startEnv(t, modes[0], Config{Heartbeat: time.Hour, RetryMin: time.Second, RetryMax: 5 * time.Second})
	clients := make([]*sseClient, n)
	for i := range clients {
		clients[i] = e.connect(e.url(secretAll, "c"), nil)
	}
	eventually(t, "every stream registered", func() bool { return e.registered() == n })
	// And handed over to the poller: a handler still doing so when the drain starts closes
	// its stream at once (it cannot be scheduled: Drain did not see it), which is right, but
	// not what this test measures.
	eventually(t, "every stream handed over", func() bool { return gwtest.Goroutines("stream.(*poller).takeOver(", "") == 0 })

	start := time.Now()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		e.srv.Drain(context.Background(), window)
	}()
	eventually(t, "the drain to start", e.srv.Draining)
	req, _ := http.NewRequest(http.MethodGet, e.url(secretAll, "c"), nil)
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	retryAfter := res.Header.Get("Retry-After")
	expectError(t, res, http.StatusServiceUnavailable, "draining")
	if v, err := strconv.Atoi(retryAfter); err != nil || v <= 0 {
		t.Errorf("503 while draining: Retry-After %q", retryAfter)
	}
	<-drained

	var ends []time.Duration
	for i, c := range clients {
		if err := c.waitEnd(); err == io.EOF || err == nil {
			t.Errorf("client %d ended cleanly, want the response cut after retry: so that every client reconnects", i)
		}
		_, _, retries := c.snapshot()
		checkRetries(t, retries, 1000, 5000)
		c.mu.Lock()
		ends = append(ends, c.endedAt.Sub(start))
		c.mu.Unlock()
	}
	slices.Sort(ends)
	for k, d := range ends {
		if early := window * time.Duration(k) / n; d < early {
			t.Errorf("stream %d of %d to end ended %v into the drain, before %v (k/n of the %v window): closes are not spread", k+1, n, d, early, window)
		}
	}
	t.Logf("streams ended from %v to %v into the %v window", ends[0].Round(time.Millisecond), ends[n-1].Round(time.Millisecond), window)
	eventually(t, "every close counted", func() bool { return e.counter(e.srv.metrics.closes, CloseDrain) == n })
	if e.srv.OpenStreams() != 0 {
		t.Fatalf("open after drain: %d", e.srv.OpenStreams())
	}
}

func TestDrainLoopAndH2(t *testing.T) {
	for _, m := range modes[1:] {
		t.Run(m.name, func(t *testing.T) {
			e := startEnv(t, m, Config{Heartbeat: time.Hour, RetryMin: 2 * time.Second, RetryMax: 3 * time.Second})
			clients := make([]*sseClient, 5)
			for i := range clients {
				clients[i] = e.connect(e.url(secretAll, "c"), nil)
			}
			eventually(t, "every stream registered", func() bool { return e.registered() == len(clients) })
			e.srv.Drain(context.Background(), 200*time.Millisecond)
			for i, c := range clients {
				if err := c.waitEnd(); err == io.EOF || err == nil {
					t.Errorf("client %d ended cleanly, want the response cut after retry:", i)
				}
				_, _, retries := c.snapshot()
				checkRetries(t, retries, 2000, 3000)
			}
			eventually(t, "every stream forgotten", func() bool { return e.srv.OpenStreams() == 0 })
			e.waitCloses(float64(len(clients)))
			if got := e.counter(e.srv.metrics.closes, CloseDrain); got != float64(len(clients)) {
				t.Fatalf("closes{drain} = %v", got)
			}
			_, status, _ := e.tryConnect(e.url(secretAll, "c"), nil)
			if status != http.StatusServiceUnavailable {
				t.Fatalf("connect while draining: %d", status)
			}
		})
	}
}

func TestDrainCancelledClosesTheRest(t *testing.T) {
	e := startEnv(t, modes[0], Config{Heartbeat: time.Hour})
	for range 10 {
		e.connect(e.url(secretAll, "c"), nil)
	}
	eventually(t, "every stream registered", func() bool { return e.registered() == 10 })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e.srv.Drain(ctx, time.Hour) // a cancelled context: closes everything at once
	eventually(t, "every stream closed", func() bool { return e.srv.OpenStreams() == 0 })
}

// TestCloseKeys: streams of a revoked key are closed (no retry: the key will not work again),
// the others keep streaming.
func TestCloseKeys(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := startEnv(t, m, Config{Heartbeat: time.Hour})
			a1 := e.connect(e.url(secretAll, "dvc_server_1"), nil)
			a2 := e.connect(e.url(secretAll, "x"), nil)
			s1 := e.connect(e.url(secretServer, "dvc_server_1"), nil)
			eventually(t, "every stream registered", func() bool { return e.registered() == 3 })

			if n := e.srv.CloseKeys(nil); n != 0 {
				t.Fatalf("CloseKeys(nil) = %d", n)
			}
			revoked := e.keys.SetSource("test", []auth.Key{
				{Name: "server", Hash: auth.HashKey(secretServer), Channels: []string{"dvc_server_*"}},
			})
			if len(revoked) != 1 {
				t.Fatalf("revoked %v", revoked)
			}
			if n := e.srv.CloseKeys(revoked); n != 2 {
				t.Fatalf("CloseKeys closed %d streams, want 2", n)
			}
			for _, c := range []*sseClient{a1, a2} {
				if err := c.waitEnd(); err != io.EOF {
					t.Errorf("revoked stream ended with %v", err)
				}
				if _, _, retries := c.snapshot(); len(retries) != 0 {
					t.Errorf("revoked stream told to retry: %v", retries)
				}
			}
			eventually(t, "revoked streams forgotten", func() bool { return e.srv.OpenStreams() == 1 })
			e.waitCloses(2)
			if got := e.counter(e.srv.metrics.closes, CloseRevoked); got != 2 {
				t.Fatalf("closes{revoked} = %v", got)
			}
			msg := e.publish("dvc_server_1", 9, "")
			s1.waitID(msg.ID)
			if _, status, _ := e.tryConnect(e.url(secretAll, "x"), nil); status != http.StatusUnauthorized {
				t.Fatalf("revoked key: %d", status)
			}
		})
	}
}

// gateAuthorizer pauses a request for secretAll right after it was authorised, until release
// is closed: the moment between "the key was valid" and "the stream is registered".
type gateAuthorizer struct {
	Authorizer
	authorized chan struct{} // closed once the gated request passed Authorize
	release    chan struct{}
	once       sync.Once
}

func (g *gateAuthorizer) Authorize(secret string, channels []string) (auth.Grant, error) {
	grant, err := g.Authorizer.Authorize(secret, channels)
	if err == nil && secret == secretAll {
		g.once.Do(func() { close(g.authorized) })
		<-g.release
	}
	return grant, err
}

// TestCloseKeysRacingOpen: a key revoked while one of its streams is between authorisation
// and registration must not leave that stream open: CloseKeys cannot see it yet, so the
// stream has to notice itself (e.g. authorise again once registered).
func TestCloseKeysRacingOpen(t *testing.T) {
	for _, m := range modes[:2] {
		t.Run(m.name, func(t *testing.T) {
			gate := &gateAuthorizer{authorized: make(chan struct{}), release: make(chan struct{})}
			e := startEnv(t, m, Config{Heartbeat: time.Hour}, func(e *env, _ *Config) {
				e.wrapAuth = func(a Authorizer) Authorizer { gate.Authorizer = a; return gate }
			})
			type result struct {
				status int
				body   io.ReadCloser
			}
			done := make(chan result, 1)
			go func() {
				res, err := e.client.Get(e.url(secretAll, "c"))
				if err != nil {
					done <- result{}
					return
				}
				done <- result{res.StatusCode, res.Body}
			}()
			<-gate.authorized
			revoked := e.keys.SetSource("test", []auth.Key{
				{Name: "server", Hash: auth.HashKey(secretServer), Channels: []string{"dvc_server_*"}},
			})
			e.srv.CloseKeys(revoked)
			close(gate.release)
			r := <-done
			if r.body == nil {
				t.Fatal("request failed")
			}
			defer r.body.Close()
			if r.status != http.StatusOK {
				return // refused: fine
			}
			// Admitted with a key that was revoked meanwhile: it must be closed, not kept.
			ended := make(chan error, 1)
			go func() {
				_, err := io.Copy(io.Discard, r.body)
				ended <- err
			}()
			select {
			case <-ended:
			case <-time.After(5 * time.Second):
				t.Fatalf("a stream of a revoked key is still open 5s after CloseKeys (registered: %d)", e.registered())
			}
		})
	}
}

// TestGoodbyeCompletesFrame: a taken-over stream closed on purpose while its socket holds
// only part of a frame gets the rest of the frame, then its goodbye: retry: after a drain,
// the chunked terminator after a revocation. Before, it got neither, and a frame cut short.
func TestGoodbyeCompletesFrame(t *testing.T) {
	for _, tc := range []struct {
		name  string
		close func(e *env)
		want  string // what follows the complete frame
	}{
		{"drain", func(e *env) { e.srv.Drain(context.Background(), 0) }, "retry: "},
		{"revoked", func(e *env) {
			revoked := e.keys.SetSource("test", []auth.Key{{Name: "all", Hash: auth.HashKey(secretAll), Channels: []string{"*"}}})
			e.srv.CloseKeys(revoked)
		}, "end"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEnv(t, modes[0], Config{Heartbeat: time.Hour, WriteTimeout: time.Minute, SendBuffer: 4096, RetryMin: time.Second, RetryMax: 2 * time.Second})
			const ch = "dvc_server_g"
			c := e.dialNonReader(ch)
			st := e.streamOfKey("server")
			m := e.publish(ch, 1, bigPad)
			eventually(t, "the frame to stall", func() bool {
				ps := st.(*pollStream)
				ps.mu.Lock()
				defer ps.mu.Unlock()
				return ps.out != nil
			})
			closed := make(chan struct{})
			go func() { defer close(closed); tc.close(e) }()
			if status, _ := c.head(t); !strings.Contains(status, "200") {
				t.Fatalf("status %q", status)
			}
			_ = c.SetReadDeadline(time.Now().Add(waitLimit))
			body, err := io.ReadAll(httputil.NewChunkedReader(c.br))
			text := string(body)
			frame, rest, ok := strings.Cut(text, string(m.Frame))
			switch {
			case !ok:
				t.Fatalf("the frame was cut: the body ended (%v) after %d bytes, the frame is %d", err, len(text), len(m.Frame))
			case frame != ":\n\n":
				t.Fatalf("before the frame: %q", frame)
			case tc.want == "end" && (err != nil || rest != ""):
				t.Fatalf("after the frame %q and %v, want a clean end of the body", rest, err)
			case tc.want != "end" && (!strings.HasPrefix(rest, tc.want) || err == nil):
				t.Fatalf("after the frame %q and %v, want %q and a cut response", rest, err, tc.want)
			}
			<-closed
			e.waitCloses(1)
		})
	}
}
