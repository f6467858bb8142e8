package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/sse-gateway/sse-gateway/internal/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type published struct {
	channel string
	p       wire.Payload
}

// fakeBroker records publishes; it reports "not newer" for a lastModified it has seen.
type fakeBroker struct {
	mu    sync.Mutex
	calls []published
	seen  map[int64]bool
	err   error
}

func (b *fakeBroker) Publish(_ context.Context, channel string, p wire.Payload) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return false, b.err
	}
	if b.seen == nil {
		b.seen = map[int64]bool{}
	}
	if b.seen[p.LastModified] {
		return false, nil
	}
	b.seen[p.LastModified] = true
	b.calls = append(b.calls, published{channel, p})
	return true, nil
}

func (b *fakeBroker) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.calls)
}

const token = "admin-token-123"

func do(t *testing.T, h http.Handler, method, auth, body string) (*http.Response, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(method, "/v1/publish", strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := rec.Result()
	raw, _ := io.ReadAll(res.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %q: body is not JSON: %q", method, body, raw)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
	return res, out
}

const goodBody = `{"channel":"dvc_server_1","data":{"etag":"\"abc\"","lastModified":1700000000000,"type":"refetchConfig"}}`

func TestPublishUnauthorized(t *testing.T) {
	b := &fakeBroker{}
	h := &Publish{Broker: b, Token: token}
	for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer wrong", "bearer " + token, "Basic " + token, token, "Bearer " + token + " ", "Bearer  " + token} {
		res, out := do(t, h, http.MethodPost, auth, goodBody)
		if res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("auth %q: status %d", auth, res.StatusCode)
		}
		if out["error"] == nil || res.Header.Get("WWW-Authenticate") == "" {
			t.Fatalf("auth %q: body %v, WWW-Authenticate %q", auth, out, res.Header.Get("WWW-Authenticate"))
		}
		if s, _ := out["error"].(string); strings.Contains(s, token) {
			t.Fatalf("error shows the token: %q", s)
		}
	}
	// An unset token never authorises anything, not even an empty bearer.
	empty := &Publish{Broker: b, Token: ""}
	for _, auth := range []string{"", "Bearer ", "Bearer x"} {
		if res, _ := do(t, empty, http.MethodPost, auth, goodBody); res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("empty token config, auth %q: %d", auth, res.StatusCode)
		}
	}
	if b.count() != 0 {
		t.Fatal("an unauthorised request was published")
	}
}

func TestPublishAccepted(t *testing.T) {
	b := &fakeBroker{}
	h := &Publish{Broker: b, Token: token}
	res, out := do(t, h, http.MethodPost, "Bearer "+token, goodBody)
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d body %v", res.StatusCode, out)
	}
	wantID := wire.EventID(wire.Payload{ETag: `"abc"`, LastModified: 1700000000000}.Version())
	if out["id"] != wantID || out["published"] != true {
		t.Fatalf("body %v, want id %s", out, wantID)
	}
	if b.count() != 1 {
		t.Fatalf("%d publishes", b.count())
	}
	c := b.calls[0]
	if c.channel != "dvc_server_1" || c.p.ETag != `"abc"` || c.p.LastModified != 1700000000000 ||
		string(c.p.Raw) != `{"etag":"\"abc\"","lastModified":1700000000000,"type":"refetchConfig"}` {
		t.Fatalf("broker got %+v (raw %s)", c, c.p.Raw)
	}
	// Same version again: accepted but not published.
	res, out = do(t, h, http.MethodPost, "Bearer "+token, goodBody)
	if res.StatusCode != http.StatusOK || out["published"] != false || out["id"] != wantID {
		t.Fatalf("republish: %d %v", res.StatusCode, out)
	}
}

func TestPublishBadRequests(t *testing.T) {
	b := &fakeBroker{}
	h := &Publish{Broker: b, Token: token, MaxPayload: 1024}
	cases := []struct {
		name, body string
		status     int
	}{
		{"empty body", ``, 400},
		{"not json", `channel=a`, 400},
		{"array", `[]`, 400},
		{"unknown field", `{"channel":"c","data":{"etag":"e","lastModified":1},"extra":1}`, 400},
		{"channel not a string", `{"channel":1,"data":{"etag":"e","lastModified":1}}`, 400},
		{"missing channel", `{"data":{"etag":"e","lastModified":1}}`, 400},
		{"bad channel chars", `{"channel":"a b","data":{"etag":"e","lastModified":1}}`, 400},
		{"channel with newline", `{"channel":"a\nb","data":{"etag":"e","lastModified":1}}`, 400},
		{"reserved channel", `{"channel":"_probe","data":{"etag":"e","lastModified":1}}`, 400},
		{"long channel", `{"channel":"` + strings.Repeat("c", 201) + `","data":{"etag":"e","lastModified":1}}`, 400},
		{"missing data", `{"channel":"c"}`, 400},
		{"data not object", `{"channel":"c","data":"{\"etag\":\"e\",\"lastModified\":1}"}`, 400},
		{"data missing etag", `{"channel":"c","data":{"lastModified":1}}`, 400},
		{"data float lastModified", `{"channel":"c","data":{"etag":"e","lastModified":1.5}}`, 400},
		{"data negative lastModified", `{"channel":"c","data":{"etag":"e","lastModified":-1}}`, 400},
		{"data wrong type", `{"channel":"c","data":{"etag":"e","lastModified":1,"type":3}}`, 400},
		{"data over max", `{"channel":"c","data":{"etag":"e","lastModified":1,"pad":"` + strings.Repeat("p", 1100) + `"}}`, 413},
		{"body far over max", `{"channel":"c","data":{"etag":"e","lastModified":1,"pad":"` + strings.Repeat("p", 1<<20) + `"}}`, 413},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, out := do(t, h, http.MethodPost, "Bearer "+token, c.body)
			if res.StatusCode != c.status {
				t.Fatalf("status %d, want %d (%v)", res.StatusCode, c.status, out)
			}
			if s, _ := out["error"].(string); s == "" {
				t.Fatalf("no error message: %v", out)
			}
		})
	}
	if b.count() != 0 {
		t.Fatalf("%d bad requests were published", b.count())
	}
}

func TestPublishDefaultMax(t *testing.T) {
	b := &fakeBroker{}
	h := &Publish{Broker: b, Token: token}
	pad := strings.Repeat("p", wire.DefaultMaxPayload-100)
	res, out := do(t, h, http.MethodPost, "Bearer "+token, `{"channel":"c","data":{"etag":"e","lastModified":1,"pad":"`+pad+`"}}`)
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("payload under the default max: %d %v", res.StatusCode, out)
	}
	res, _ = do(t, h, http.MethodPost, "Bearer "+token, `{"channel":"c","data":{"etag":"e","lastModified":2,"pad":"`+pad+strings.Repeat("q", 200)+`"}}`)
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("payload over the default max: %d", res.StatusCode)
	}
}

func TestPublishBrokerDown(t *testing.T) {
	h := &Publish{Broker: &fakeBroker{err: errors.New("redis: connection refused")}, Token: token}
	res, out := do(t, h, http.MethodPost, "Bearer "+token, goodBody)
	if res.StatusCode != http.StatusServiceUnavailable || out["error"] == nil {
		t.Fatalf("broker error: %d %v", res.StatusCode, out)
	}
}

func TestPublishOverRealHTTP(t *testing.T) {
	b := &fakeBroker{}
	srv := httptest.NewServer(&Publish{Broker: b, Token: token})
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/publish", strings.NewReader(goodBody))
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted || !strings.Contains(string(body), `"id":"1700000000000-`) {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	srv.Client().CloseIdleConnections()
}

func TestHealth(t *testing.T) {
	var mu sync.Mutex
	ready := false
	h := &Health{Ready: func() bool { mu.Lock(); defer mu.Unlock(); return ready }}
	get := func(f http.HandlerFunc) (int, map[string]any) {
		rec := httptest.NewRecorder()
		f(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("body %q", rec.Body.String())
		}
		if rec.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("Content-Type %q", rec.Header().Get("Content-Type"))
		}
		return rec.Code, out
	}
	if code, out := get(h.Live); code != 200 || out["status"] != "ok" {
		t.Fatalf("healthz: %d %v", code, out)
	}
	if code, out := get(h.Readiness); code != 503 || out["status"] != "not ready" {
		t.Fatalf("readyz while not ready: %d %v", code, out)
	}
	// Liveness does not depend on readiness.
	if code, _ := get(h.Live); code != 200 {
		t.Fatalf("healthz while not ready: %d", code)
	}
	mu.Lock()
	ready = true
	mu.Unlock()
	if code, out := get(h.Readiness); code != 200 || out["status"] != "ready" {
		t.Fatalf("readyz while ready: %d %v", code, out)
	}
	always := &Health{}
	if code, _ := get(always.Readiness); code != 200 {
		t.Fatalf("nil Ready: %d", code)
	}
}

// TestPublishTrailingDataRejected: the handler is strict about the body's shape (unknown
// fields are refused), so a body that is not exactly one JSON object must be refused too
// rather than published from its first value.
func TestPublishTrailingDataRejected(t *testing.T) {
	b := &fakeBroker{}
	h := &Publish{Broker: b, Token: token}
	for _, body := range []string{
		goodBody + ` {"channel":"other","data":{}}`,
		goodBody + `garbage`,
	} {
		res, out := do(t, h, http.MethodPost, "Bearer "+token, body)
		if res.StatusCode != http.StatusBadRequest {
			t.Errorf("body %q: status %d %v, want 400", body, res.StatusCode, out)
		}
	}
	if b.count() != 0 {
		t.Errorf("%d malformed bodies were published", b.count())
	}
}
