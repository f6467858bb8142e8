package main

import (
	"net/url"
	"strings"
	"testing"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/sseparse"
)

func TestLoopbackHostPort(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"http://127.0.0.1:8080/event-stream?key=k", "127.0.0.1:8080", true},
		{"http://localhost:9/x", "127.0.0.1:9", true},
		{"http://127.3.4.5/x", "127.3.4.5:80", true},
		{"redis://127.0.0.1/0", "127.0.0.1:80", true},
		{"http://10.0.0.1:8080/", "", false},
		{"http://example.com/", "", false},
		{"http://[::1]:8080/", "", false},
		{"http://128.0.0.1/", "", false},
		{"http:///nohost", "", false},
		{"http://127.0.0.1:99999/", "", false},
	}
	for _, tt := range tests {
		got, _, err := loopbackHostPort(tt.in, "80")
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("loopbackHostPort(%q) = %q, %v; want %q ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseFlagsRefusesRemoteTargets(t *testing.T) {
	for _, args := range [][]string{
		{"--url", "http://192.168.1.10:8080/event-stream"},
		{"--url", "http://127.0.0.1:8080/event-stream", "--redis-url", "redis://10.1.1.1:6379/0"},
		{"--url", "http://127.0.0.1:8080/event-stream", "--pprof-url", "http://example.org:6060"},
	} {
		if _, err := parseFlags(args); err == nil || !strings.Contains(err.Error(), "127.0.0.0/8") {
			t.Errorf("parseFlags(%q) err = %v, want refusal", args, err)
		}
	}
	o, err := parseFlags([]string{"--url", "http://127.0.0.1:1/e", "--conns", "20001", "--conns-per-worker", "5000"})
	if err != nil || o.workers != 5 {
		t.Fatalf("workers = %v, %v; want 5", o, err)
	}
	for _, bad := range [][]string{
		{"--url", "http://127.0.0.1:1/e", "--slow-fraction", "1"},
		{"--url", "http://127.0.0.1:1/e", "--channels", "0"},
		{"--url", "http://127.0.0.1:1/e", "--conns-per-worker", "20000"},
		{"--conns", "5"},
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

func TestStreamRequest(t *testing.T) {
	u, _ := url.Parse("http://127.0.0.1:8080/event-stream?key=abc&v=1.2")
	got := string(streamRequest(u, "127.0.0.1:8080", "lt_7"))
	for _, want := range []string{
		"GET /event-stream?channels=lt_7&key=abc&v=1.2 HTTP/1.1\r\n",
		"Host: 127.0.0.1:8080\r\n",
		"Accept: text/event-stream\r\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("request %q lacks %q", got, want)
		}
	}
	if !strings.HasSuffix(got, "\r\n\r\n") {
		t.Errorf("request not terminated: %q", got)
	}
}

func TestIsSlowExactSharePerChannel(t *testing.T) {
	for _, tc := range []struct{ n, k, perMille, wantPerChan int }{
		{15000, 100, 100, 15},
		{15000, 1, 100, 1500},
		{1000, 10, 250, 25},
		{1000, 10, 0, 0},
	} {
		per := make([]int, tc.k)
		for i := range tc.n {
			if isSlow(i, tc.k, tc.perMille) {
				per[channelOf(i, tc.k)]++
			}
		}
		for ch, got := range per {
			if got != tc.wantPerChan {
				t.Fatalf("%+v: channel %d has %d slow, want %d", tc, ch, got, tc.wantPerChan)
			}
		}
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	p := &publisher{pad: `,"pad":"xx"`}
	for _, padded := range []bool{false, true} {
		s := p.payload(42, 1700000000000, 1700000000123456789, padded)
		m, err := sseparse.Quick([]byte(s))
		if err != nil || m.Seq != 42 || m.SentAtNs != 1700000000123456789 {
			t.Fatalf("payload %s parsed as %+v, %v", s, m, err)
		}
		if strings.Contains(s, "pad") != padded {
			t.Fatalf("padding %v: %s", padded, s)
		}
	}
}
