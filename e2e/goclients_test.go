package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/launchdarkly/eventsource"
	"github.com/r3labs/sse/v2"
	"gopkg.in/cenkalti/backoff.v1"
)

// goEvent is one event a Go client library handed to its user.
type goEvent struct {
	At    time.Time
	ID    string
	Event string
	Data  string
}

// goRequest is one connection attempt a Go client made, seen by its http.Client's transport.
type goRequest struct {
	At          time.Time
	LastEventID string
	Status      int // 0 when the request failed (connection refused while the gateway was down)
}

// goClient records what one Go SSE library did; safe for concurrent use.
type goClient struct {
	name string

	mu       sync.Mutex
	events   []goEvent
	requests []goRequest
	errs     []string
}

func (c *goClient) addEvent(e goEvent) { c.mu.Lock(); c.events = append(c.events, e); c.mu.Unlock() }
func (c *goClient) addError(err error) {
	c.mu.Lock()
	c.errs = append(c.errs, fmt.Sprintf("%s %v", time.Now().Format("15:04:05.000"), err))
	c.mu.Unlock()
}

func (c *goClient) snapshot() ([]goEvent, []goRequest, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]goEvent(nil), c.events...), append([]goRequest(nil), c.requests...), append([]string(nil), c.errs...)
}

func (c *goClient) String() string {
	events, reqs, errs := c.snapshot()
	var b strings.Builder
	fmt.Fprintf(&b, "%s received %d events:", c.name, len(events))
	for _, e := range events {
		fmt.Fprintf(&b, "\n  %s id=%q event=%q data=%.160q", e.At.Format("15:04:05.000"), e.ID, e.Event, e.Data)
	}
	fmt.Fprintf(&b, "\n  connection attempts (time, Last-Event-ID, status): %v", reqs)
	if len(errs) > 0 {
		fmt.Fprintf(&b, "\n  errors: %v", errs)
	}
	return b.String()
}

// findEvent returns the first event with a non-empty data and this id.
func (c *goClient) findEvent(id string) (goEvent, bool) {
	events, _, _ := c.snapshot()
	for _, e := range events {
		if e.ID == id && e.Data != "" {
			return e, true
		}
	}
	return goEvent{}, false
}

// dataEvents counts events carrying data (heartbeats surface in r3labs as events without data).
func (c *goClient) dataEvents() int {
	events, _, _ := c.snapshot()
	n := 0
	for _, e := range events {
		if e.Data != "" {
			n++
		}
	}
	return n
}

// transport records every connection attempt and its Last-Event-ID header.
func (c *goClient) transport() http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		r := goRequest{At: time.Now(), LastEventID: req.Header.Get("Last-Event-ID")}
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err == nil {
			r.Status = resp.StatusCode
		}
		c.mu.Lock()
		c.requests = append(c.requests, r)
		c.mu.Unlock()
		return resp, err
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// startR3labs subscribes github.com/r3labs/sse/v2's client with its default exponential
// backoff (bounded by the test's lifetime).
func startR3labs(t *testing.T, url string) *goClient {
	c := &goClient{name: "r3labs/sse/v2"}
	ctx, cancel := context.WithCancel(context.Background())
	client := sse.NewClient(url)
	client.Connection = &http.Client{Transport: c.transport()}
	client.ReconnectStrategy = backoff.WithContext(backoff.NewExponentialBackOff(), ctx)
	client.ReconnectNotify = func(err error, d time.Duration) { c.addError(fmt.Errorf("reconnect in %v: %w", d, err)) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := client.SubscribeRawWithContext(ctx, func(m *sse.Event) {
			c.addEvent(goEvent{At: time.Now(), ID: string(m.ID), Event: string(m.Event), Data: string(m.Data)})
		})
		if err != nil && ctx.Err() == nil {
			c.addError(fmt.Errorf("subscription ended: %w", err))
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("r3labs client did not stop within 5s of its context being cancelled")
		}
	})
	return c
}

// startLaunchDarkly subscribes github.com/launchdarkly/eventsource the way DevCycle's Go server
// SDK does (backoff with jitter), with a read timeout that only the heartbeats can satisfy.
func startLaunchDarkly(t *testing.T, url string, readTimeout time.Duration) *goClient {
	t.Helper()
	c := &goClient{name: "launchdarkly/eventsource"}
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	stream, err := eventsource.SubscribeWithRequestAndOptions(req,
		eventsource.StreamOptionHTTPClient(&http.Client{Transport: c.transport()}),
		eventsource.StreamOptionReadTimeout(readTimeout),
		eventsource.StreamOptionInitialRetry(200*time.Millisecond),
		eventsource.StreamOptionUseBackoff(2*time.Second),
		eventsource.StreamOptionUseJitter(0.25),
		eventsource.StreamOptionErrorHandler(func(err error) eventsource.StreamErrorHandlerResult {
			c.addError(err)
			return eventsource.StreamErrorHandlerResult{}
		}),
	)
	if err != nil {
		t.Fatalf("%s: subscribing to %s: %v", c.name, url, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range stream.Events {
			c.addEvent(goEvent{At: time.Now(), ID: ev.Id(), Event: ev.Event(), Data: ev.Data()})
		}
	}()
	t.Cleanup(func() {
		stream.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("launchdarkly stream did not stop within 5s of Close")
		}
	})
	return c
}

// TestGoSSEClients checks that the Go SSE libraries parse the gateway's stream: ids, event
// type, data, heartbeats, and a reconnect with Last-Event-ID across a gateway restart.
func TestGoSSEClients(t *testing.T) {
	const (
		key       = "e2e-key-go-clients"
		heartbeat = time.Second
	)
	channel := devcycleChannel("dvc_server", t.Name())
	rs := startRedis(t)
	gw := startGateway(t, gatewayConfig{RedisURL: rs.URL(), KeysFile: writeKeysFile(t, key, "dvc_server_*"), Heartbeat: heartbeat})
	url := gw.streamURL(channel, key)

	r3 := startR3labs(t, url)
	ld := startLaunchDarkly(t, url, 2500*time.Millisecond)
	clients := []*goClient{r3, ld}
	for _, c := range clients {
		waitFor(t, 10*time.Second, func() string { return c.name + ": expected a 200 connection; " + c.String() }, func() bool {
			_, reqs, _ := c.snapshot()
			return len(reqs) > 0 && reqs[len(reqs)-1].Status == 200
		})
	}

	// awaitEvent waits for every client to hand over the event with this id and checks it.
	version := versions("go")
	awaitEvent := func(timeout time.Duration, v configVersion, start time.Time, tms map[*goClient]*timings) {
		t.Helper()
		lm := v.LastModified.UnixMilli()
		id := eventID(lm, v.Etag)
		for _, c := range clients {
			var e goEvent
			waitFor(t, timeout, func() string { return fmt.Sprintf("%s: expected event id %q; %s", c.name, id, c) }, func() bool {
				var ok bool
				e, ok = c.findEvent(id)
				return ok
			})
			if e.Event != "message" {
				t.Fatalf("%s: event %s has type %q, want \"message\"", c.name, id, e.Event)
			}
			if msg := checkEventData(e.Data, channel, v.Etag, lm); msg != "" {
				t.Fatalf("%s: event %s: %s", c.name, id, msg)
			}
			if tms != nil {
				tms[c].add(e.At.Sub(start))
			}
		}
	}

	tms := map[*goClient]*timings{r3: {name: r3.name}, ld: {name: ld.name}}
	for i := 1; i <= flips; i++ {
		v := version(i)
		start := rs.publish(t, channel, v.Etag, v.LastModified.UnixMilli())
		awaitEvent(updateBudget, v, start, tms)
	}
	for _, c := range clients {
		tms[c].report(t)
	}

	// Heartbeats. On the wire: ":" comment lines every second. launchdarkly: they keep its
	// 2.5 s read timeout from firing on an idle stream. r3labs: it hands each one over as an
	// event without data, carrying the last id; a consumer must ignore those.
	raw := openRawStream(t, url, http.Header{"Last-Event-ID": {eventID(version(flips).LastModified.UnixMilli(), version(flips).Etag)}})
	_, _, ldErrsBefore := ld.snapshot()
	r3Before, _, _ := r3.snapshot()
	idle := 3*heartbeat + 500*time.Millisecond
	comments := 0
	idleEnd := time.After(idle)
idleLoop:
	for {
		select {
		case it, ok := <-raw.Items:
			if !ok {
				t.Fatalf("raw stream: ended while idle (heartbeats should keep it open)")
			}
			if !it.Comment {
				t.Fatalf("raw stream: unexpected event while idle (Last-Event-ID was the latest): %+v", it)
			}
			comments++
		case <-idleEnd:
			break idleLoop
		}
	}
	raw.close()
	if comments < 2 {
		t.Fatalf("raw stream: %d heartbeat comment lines in %v with --heartbeat %v, want >= 2", comments, idle, heartbeat)
	}
	if _, _, errs := ld.snapshot(); len(errs) != len(ldErrsBefore) {
		t.Fatalf("%s: errors on an idle stream with heartbeats every %v and a 2.5s read timeout: %v", ld.name, heartbeat, errs[len(ldErrsBefore):])
	}
	lastID := eventID(version(flips).LastModified.UnixMilli(), version(flips).Etag)
	r3After, _, _ := r3.snapshot()
	beats := 0
	for _, e := range r3After[len(r3Before):] {
		if e.Data != "" || e.Event != "" || e.ID != lastID {
			t.Fatalf("%s: while idle expected only heartbeats (no data, no event, id %q); got %+v", r3.name, lastID, e)
		}
		beats++
	}
	if beats < 2 {
		t.Fatalf("%s: saw %d heartbeats in %v with --heartbeat %v, want >= 2", r3.name, beats, idle, heartbeat)
	}
	for _, c := range clients {
		if n := c.dataEvents(); n != flips {
			t.Fatalf("%s: %d events with data, want %d (one per publish); %s", c.name, n, flips, c)
		}
	}

	// Kill the gateway, publish while it is down, restart it on the same address: each client
	// reconnects by itself with Last-Event-ID = the last id it got, and receives the new event.
	reqsBefore := map[*goClient]int{}
	for _, c := range clients {
		_, reqs, _ := c.snapshot()
		reqsBefore[c] = len(reqs)
	}
	gw.kill()
	away := version(flips + 1)
	gw.publishOffline(channel, away.Etag, away.LastModified.UnixMilli())
	gw.restart()
	awaitEvent(15*time.Second, away, time.Time{}, nil)
	for _, c := range clients {
		_, reqs, _ := c.snapshot()
		var resumed *goRequest
		for i := reqsBefore[c]; i < len(reqs); i++ {
			if reqs[i].Status == 200 {
				resumed = &reqs[i]
				break
			}
		}
		if resumed == nil || resumed.LastEventID != lastID {
			t.Fatalf("%s: expected the reconnect to send Last-Event-ID %q; %s", c.name, lastID, c)
		}
	}

	// Restart again with nothing new: the clients resume from the event they have and must
	// not get it again.
	awayID := eventID(away.LastModified.UnixMilli(), away.Etag)
	for _, c := range clients {
		_, reqs, _ := c.snapshot()
		reqsBefore[c] = len(reqs)
	}
	gw.kill()
	gw.restart()
	for _, c := range clients {
		waitFor(t, 15*time.Second, func() string {
			return fmt.Sprintf("%s: expected a reconnect with Last-Event-ID %q after the second restart; %s", c.name, awayID, c)
		}, func() bool {
			_, reqs, _ := c.snapshot()
			for i := reqsBefore[c]; i < len(reqs); i++ {
				if reqs[i].Status == 200 && reqs[i].LastEventID == awayID {
					return true
				}
			}
			return false
		})
	}
	// A new version marks the moment: a replay would have come before it on the stream.
	marker := version(flips + 2)
	rs.publish(t, channel, marker.Etag, marker.LastModified.UnixMilli())
	awaitEvent(updateBudget, marker, time.Time{}, nil)
	for _, c := range clients {
		if n := c.dataEvents(); n != flips+2 {
			t.Fatalf("%s: %d events with data, want %d: a resume with the latest Last-Event-ID must not replay it; %s", c.name, n, flips+2, c)
		}
	}

	// Drain (SIGTERM): the gateway ends each stream with a retry: and a cut, not a clean end,
	// so both libraries reconnect (to the restarted gateway), get the version published during
	// the drain if they had not yet, and the next one over the new connection.
	for _, c := range clients {
		_, reqs, _ := c.snapshot()
		reqsBefore[c] = len(reqs)
	}
	drained := version(flips + 3)
	drainStart := time.Now()
	gw.drainPublishing(rs, channel, drained)
	awaitEvent(15*time.Second, drained, time.Time{}, nil)
	for _, c := range clients {
		var back goRequest
		waitFor(t, 15*time.Second, func() string {
			return fmt.Sprintf("%s: expected a reconnect (a 200 after the drain); %s", c.name, c)
		}, func() bool {
			_, reqs, _ := c.snapshot()
			for i := reqsBefore[c]; i < len(reqs); i++ {
				if reqs[i].Status == 200 {
					back = reqs[i]
					return true
				}
			}
			return false
		})
		line := fmt.Sprintf("%s: drain -> reconnected %v after SIGTERM, with Last-Event-ID %q", c.name, back.At.Sub(drainStart).Round(100*time.Millisecond), back.LastEventID)
		t.Log(line)
		appendTimings(line)
	}
	next := version(flips + 4)
	rs.publish(t, channel, next.Etag, next.LastModified.UnixMilli())
	awaitEvent(updateBudget, next, time.Time{}, nil)
}
