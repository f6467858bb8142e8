package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// /debug/pprof is served only on --metrics-addr and only with --pprof; never on --addr.
func TestPprofOnlyOnMetricsListenerWhenEnabled(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	for _, tc := range []struct {
		name                 string
		flags                []string
		metricsPprof, public int // status of /debug/pprof/ on --metrics-addr and on --addr
	}{
		{"enabled", []string{"--metrics-addr", "127.0.0.1:0", "--pprof"}, http.StatusOK, http.StatusNotFound},
		{"disabled", []string{"--metrics-addr", "127.0.0.1:0"}, http.StatusNotFound, http.StatusNotFound},
		{"no metrics listener", []string{"--pprof"}, 0, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := startGateway(t, tc.flags...)
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap"} {
				if got := status(t, c, g.url(path)); got != tc.public {
					t.Errorf("--addr %s = %d, want %d", path, got, tc.public)
				}
			}
			if g.metricsAddr == "" {
				if got := status(t, c, g.url("/metrics")); got != http.StatusOK {
					t.Errorf("/metrics on --addr without --metrics-addr = %d", got)
				}
				return
			}
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap"} {
				if got := status(t, c, "http://"+g.metricsAddr+path); got != tc.metricsPprof {
					t.Errorf("--metrics-addr %s = %d, want %d", path, got, tc.metricsPprof)
				}
			}
			// Never the command line: it may hold secrets.
			if got := status(t, c, "http://"+g.metricsAddr+"/debug/pprof/cmdline"); got != http.StatusNotFound {
				t.Errorf("--metrics-addr /debug/pprof/cmdline = %d, want 404", got)
			}
			if got := status(t, c, "http://"+g.metricsAddr+"/metrics"); got != http.StatusOK {
				t.Errorf("/metrics on --metrics-addr = %d", got)
			}
			if got := status(t, c, g.url("/metrics")); got != http.StatusNotFound {
				t.Errorf("/metrics on --addr with --metrics-addr = %d, want 404", got)
			}
		})
	}
}

// POST /v1/publish requires the admin token.
func TestPublishRequiresAdminToken(t *testing.T) {
	t.Parallel()
	g := startGateway(t)
	c := newClient(t)
	body := `{"channel":"adm","data":{"etag":"\"a\"","lastModified":1700000000000}}`
	for _, tc := range []struct {
		name, auth string
		want       int
	}{
		{"no header", "", http.StatusUnauthorized},
		{"wrong token", "Bearer wrong", http.StatusUnauthorized},
		{"token prefix", "Bearer " + testAdminToken[:5], http.StatusUnauthorized},
		{"token with suffix", "Bearer " + testAdminToken + "x", http.StatusUnauthorized},
		{"not bearer", "Basic " + testAdminToken, http.StatusUnauthorized},
		{"the token", "Bearer " + testAdminToken, http.StatusAccepted},
	} {
		req, _ := http.NewRequest(http.MethodPost, g.url("/v1/publish"), strings.NewReader(body))
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %s %s, want %d", tc.name, resp.Status, b, tc.want)
			continue
		}
		if tc.want == http.StatusUnauthorized {
			var e struct {
				Error string `json:"error"`
			}
			if json.Unmarshal(b, &e) != nil || e.Error == "" || resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s: 401 body %q / WWW-Authenticate %q", tc.name, b, resp.Header.Get("WWW-Authenticate"))
			}
		}
	}
	if got := status(t, c, g.url("/v1/publish")); got != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/publish = %d, want 405", got)
	}
}
