package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFleetSmoke runs the fleet run in small: it builds sse-gateway and fleetload, starts a
// private redis-server and three gateways on free loopback ports, and runs fleetload with
// 600 streams over 40 channels from two worker processes, through the drain of the third
// gateway. It checks counts (every stream opened, every round reached every stream, the
// drained gateway's streams reconnected elsewhere with Last-Event-ID and none lacks its
// channel's newest event), never timings.
func TestFleetSmoke(t *testing.T) {
	redisServer, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("this test needs redis-server on PATH (apt-get install redis-server): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	fleetload := build(ctx, t, dir, "fleetload", ".")
	gateway := build(ctx, t, dir, "sse-gateway", "../../../cmd/sse-gateway")

	redisPort := freePort(t)
	start(ctx, t, redisServer, "--port", redisPort, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	waitTCP(t, "127.0.0.1:"+redisPort)
	redisURL := "redis://127.0.0.1:" + redisPort + "/0"
	keys := filepath.Join(dir, "keys.json")
	if err := os.WriteFile(keys, []byte(`{"keys":[{"name":"smoke","key":"smoke-key","channels":["*"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var targets, pids []string
	for range 3 {
		addr := "127.0.0.1:" + freePort(t)
		pid := start(ctx, t, gateway, "--addr", addr, "--redis-url", redisURL, "--keys-file", keys,
			"--admin-token", "smoke-admin", "--drain", "500ms", "--log-level", "warn")
		waitReady(t, addr)
		targets, pids = append(targets, addr), append(pids, strconv.Itoa(pid))
	}

	out := filepath.Join(dir, "fleet.json")
	svg := filepath.Join(dir, "fleet.svg")
	cmd := exec.CommandContext(ctx, fleetload, "--targets", strings.Join(targets, ","), "--pids", strings.Join(pids, ","),
		"--key", "smoke-key", "--redis-url", redisURL, "--streams", "600", "--channels", "40", "--workers", "2",
		"--source-ips", "4", "--rounds", "2", "--drain", "500ms", "--publish-gap", "10ms", "--settle", "0s",
		"--drain-publish-every", "200ms", "--json", out, "--svg", svg)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	if testing.Verbose() {
		os.Stderr.Write(stderr.Bytes())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("fleetload: %v, no summary: %v\n%s", runErr, err, stderr.String())
	}
	var s summary
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if runErr != nil || !s.OK {
		t.Fatalf("fleetload: %v, problems %v\n%s", runErr, s.Problems, stdout.String())
	}
	// 600 round-robin over 3: 200 each; every 10th shed leaves 540, 180 of them on the third.
	if s.Established != 600 || s.PerGateway[2].Streams != 200 || s.DrainStreams != 540 || s.DrainedStreams != 180 {
		t.Fatalf("streams: established %d, per gateway %+v, at drain %d, drained %d", s.Established, s.PerGateway, s.DrainStreams, s.DrainedStreams)
	}
	if s.Closes != 180 || s.Reconnects != 180 || s.ResumedWithID != 180 || s.DrainMissed != 0 || s.DrainRounds == 0 {
		t.Fatalf("drain: %d closes, %d reconnects, %d with Last-Event-ID, %d missed, %d rounds", s.Closes, s.Reconnects, s.ResumedWithID, s.DrainMissed, s.DrainRounds)
	}
	if len(s.Rounds) != 3 || s.Rounds[0].Latency.N != 600 || s.Rounds[2].Latency.N != 540 || !s.Rounds[2].AfterDrain {
		t.Fatalf("rounds: %+v", s.Rounds)
	}
	if !strings.Contains(stdout.String(), "result: ok") {
		t.Fatalf("report:\n%s", stdout.String())
	}
	if p, err := os.ReadFile(svg); err != nil || !bytes.HasPrefix(p, []byte("<svg")) || !bytes.HasSuffix(p, []byte("</svg>\n")) {
		t.Fatalf("svg: %v %.80q", err, p)
	}

	// Anything but loopback is refused.
	o, err := exec.CommandContext(ctx, fleetload, "--targets", "192.0.2.1:80,127.0.0.1:1", "--pids", "1,2", "--key", "k", "--redis-url", redisURL).CombinedOutput()
	if err == nil || !strings.Contains(string(o), "127.0.0.0/8") {
		t.Fatalf("remote target accepted: %v %s", err, o)
	}
}

func TestPlan(t *testing.T) {
	tests := []struct {
		streams, channels int
		s                 float64
	}{{100000, 1000, 1.5}, {600, 40, 1.5}, {1000, 1000, 2}, {5000, 10, 0}}
	for _, tc := range tests {
		p, err := plan(tc.streams, tc.channels, tc.s)
		if err != nil || len(p) != tc.streams {
			t.Fatalf("plan(%d, %d) = %d streams, %v", tc.streams, tc.channels, len(p), err)
		}
		per := perChannel(p, tc.channels)
		for c := 1; c < tc.channels; c++ {
			if per[c] < 1 || per[c] > per[c-1] || p[0] != 0 {
				t.Fatalf("plan(%d, %d, %g): channel %d has %d streams after %d", tc.streams, tc.channels, tc.s, c, per[c], per[c-1])
			}
		}
	}
	// The recorded run's shape: a few channels with thousands, a long tail with one or two.
	p, _ := plan(100000, 1000, 1.5)
	per := perChannel(p, 1000)
	if per[0] < 10000 || countUpTo(per, 2) < 100 {
		t.Fatalf("largest %d, channels with 1-2 streams %d", per[0], countUpTo(per, 2))
	}
	if _, err := plan(10, 20, 1); err == nil {
		t.Fatal("accepted fewer streams than channels")
	}
}

func build(ctx context.Context, t *testing.T, dir, name, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	if b, err := exec.CommandContext(ctx, "go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// start runs a process until the test ends and returns its pid.
func start(ctx context.Context, t *testing.T, bin string, args ...string) int {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd.Process.Pid
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func waitTCP(t *testing.T, addr string) {
	t.Helper()
	for range 200 { // up to 10 s
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not listen", addr)
}

// waitReady waits for a gateway's /readyz (its Redis subscription is live).
func waitReady(t *testing.T, addr string) {
	t.Helper()
	var last string
	for range 200 { // up to 20 s
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("gateway %s not ready: %s", addr, fmt.Sprint(last))
}

func TestIsShed(t *testing.T) {
	// Six gateways, every 10th: each gateway loses exactly a tenth of its streams.
	per := make([]int, 6)
	for i := range 60000 {
		if isShed(i, 6, 10) {
			per[i%6]++
		}
	}
	for g, n := range per {
		if n != 1000 {
			t.Fatalf("gateway %d: %d of 10000 streams shed, want 1000 (all: %v)", g, n, per)
		}
	}
	if isShed(9, 1, 0) {
		t.Fatal("shed with every = 0")
	}
}
