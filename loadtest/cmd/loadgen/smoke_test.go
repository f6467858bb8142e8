package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/result"
)

// TestSmokeAgainstBaseline runs the whole kit in small: it builds loadgen and
// the baseline, starts a private redis-server on a free port, and runs the
// generator (two worker processes, strict wire-format checks) against the
// baseline. It checks counts, never timings.
func TestSmokeAgainstBaseline(t *testing.T) {
	redisServer, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("this test needs redis-server on PATH (apt-get install redis-server): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	dir := t.TempDir()
	loadgen := buildBinary(ctx, t, dir, "loadgen", ".")
	baseline := buildBinary(ctx, t, dir, "baseline", "../../baseline")

	redisPort := startRedis(ctx, t, redisServer)
	redisURL := fmt.Sprintf("redis://127.0.0.1:%d/0", redisPort)
	addr, pid := startBaseline(ctx, t, baseline, redisURL)
	url := "http://" + addr + "/event-stream?key=smoke"

	t.Run("fanout", func(t *testing.T) {
		s := runLoadgen(ctx, t, loadgen, "--url", url, "--redis-url", redisURL, "--server-pid", strconv.Itoa(pid),
			"--conns", "200", "--channels", "4", "--publishes", "5", "--workers", "2", "--source-ips", "8",
			"--strict", "--settle", "200ms", "--publish-gap", "10ms", "--round-spread", "20ms", "--timeout", "60s", "--label", "smoke")
		if !s.OK {
			t.Fatalf("run not OK: %v", s.Problems)
		}
		if s.Connect.Established != 200 || s.Connect.Failed != 0 || s.Config.Workers != 2 {
			t.Fatalf("connect = %+v", s.Connect)
		}
		p := s.Publish
		if p == nil || p.Publishes != 20 || p.Expected != 1000 || p.Delivered != 1000 || p.ProtocolErrors != 0 || p.Incomplete != 0 {
			t.Fatalf("publish = %+v", p)
		}
		if len(p.LastDeliveryMs) != 20 || p.LastDelivery.N != 20 || p.Latency.N != 1000 || p.LatencyHist.Count != 1000 {
			t.Fatalf("latency stats incomplete: %+v", p.LastDelivery)
		}
		if s.Server == nil || s.Server.RSSAfterConnect <= 0 || s.Server.PID != pid {
			t.Fatalf("server = %+v", s.Server)
		}
	})

	t.Run("publish rate", func(t *testing.T) {
		s := runLoadgen(ctx, t, loadgen, "--url", url, "--redis-url", redisURL, "--server-pid", strconv.Itoa(pid),
			"--conns", "40", "--channels", "20", "--publish-rate", "400", "--publish-duration", "500ms", "--workers", "2",
			"--strict", "--settle", "0s", "--round-timeout", "20s", "--timeout", "60s", "--channel-prefix", "rate_")
		if !s.OK {
			t.Fatalf("run not OK: %v", s.Problems)
		}
		// 200 publishes, channel after channel: 10 per channel, 2 readers each.
		p := s.Publish
		if p == nil || p.Publishes != 200 || p.Expected != 400 || p.Delivered != 400 || p.Incomplete != 0 || len(p.LastDeliveryMs) != 200 {
			t.Fatalf("publish = %+v", p)
		}
		if p.TargetRatePerS != 400 || p.RatePerS <= 0 || s.Config.PublishRate != 400 {
			t.Fatalf("rate not reported: target %v achieved %v config %v", p.TargetRatePerS, p.RatePerS, s.Config.PublishRate)
		}
		if s.Server == nil || s.Server.CPUPublishS > 0 && s.Server.CPUPerPublishUs <= 0 {
			t.Fatalf("server = %+v", s.Server)
		}
	})

	t.Run("slow consumers", func(t *testing.T) {
		s := runLoadgen(ctx, t, loadgen, "--url", url, "--redis-url", redisURL,
			"--conns", "100", "--channels", "2", "--publishes", "2", "--slow-fraction", "0.1",
			"--fill-publishes", "5", "--fill-pad", "100", "--fill-wait", "100ms",
			"--settle", "0s", "--publish-gap", "10ms", "--timeout", "60s", "--channel-prefix", "slow_")
		if !s.OK || s.Connect.Slow != 10 {
			t.Fatalf("OK=%v slow=%d problems=%v", s.OK, s.Connect.Slow, s.Problems)
		}
		// 45 readers per channel, 2 rounds over 2 channels.
		if p := s.Publish; p.Expected != 180 || p.Delivered != 180 || p.FillPublishes != 5 {
			t.Fatalf("publish = %+v", p)
		}
	})

	t.Run("connect only and refusals", func(t *testing.T) {
		s := runLoadgen(ctx, t, loadgen, "--url", url, "--conns", "50", "--publishes", "0", "--settle", "0s",
			"--connect-concurrency", "50", "--timeout", "30s")
		if !s.OK || s.Publish != nil || s.Connect.Established != 50 || s.Connect.RatePerS <= 0 {
			t.Fatalf("connect-only = %+v", s)
		}
		// A server answering an error status is a counted failure, not a crash.
		s = runLoadgen(ctx, t, loadgen, "--url", "http://"+addr+"/event-stream", "--conns", "5", "--publishes", "0",
			"--settle", "0s", "--timeout", "30s")
		if s.OK || s.Connect.Failed != 5 || s.Connect.Errors["status 401"] != 5 {
			t.Fatalf("missing key: %+v", s.Connect)
		}
		out, err := exec.CommandContext(ctx, loadgen, "--url", "http://192.0.2.1/event-stream").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "127.0.0.0/8") {
			t.Fatalf("remote target accepted: %v %s", err, out)
		}
	})
}

func buildBinary(ctx context.Context, t *testing.T, dir, name, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not found in PATH: %v", err)
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func startRedis(ctx context.Context, t *testing.T, bin string) int {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
		cmd.Dir = t.TempDir()
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		for i := 0; i < 100; i++ { // up to 5 s
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
			if err == nil {
				c.Close()
				t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
				p, _ := strconv.Atoi(port)
				return p
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	t.Fatal("redis-server did not start")
	return 0
}

var listenRE = regexp.MustCompile(`"msg":"listening".*"addr":"([^"]+)"`)

func startBaseline(ctx context.Context, t *testing.T, bin, redisURL string) (addr string, pid int) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, "--addr", "127.0.0.1:0", "--redis-url", redisURL)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	select {
	case addr = <-found:
		return addr, cmd.Process.Pid
	case <-time.After(20 * time.Second):
		t.Fatal("baseline did not log its listening address")
	}
	return "", 0
}

// runLoadgen runs the generator and decodes the JSON summary on its last line.
func runLoadgen(ctx context.Context, t *testing.T, bin string, args ...string) result.Summary {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var s result.Summary
	if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &s); jerr != nil {
		t.Fatalf("loadgen %v: %v; last line not JSON: %v\nstderr:\n%s", args, err, jerr, stderr.String())
	}
	if err != nil && s.OK {
		t.Fatalf("loadgen exited with %v but reported OK", err)
	}
	if testing.Verbose() {
		os.Stderr.Write(stderr.Bytes())
	}
	return s
}
