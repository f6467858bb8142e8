package main

import (
	"strings"
	"testing"
	"time"
)

const traces = `File: sse-gateway
Type: cpu
-----------+-------------------------------------------------------
      30ms   internal/runtime/syscall/linux.Syscall6
             golang.org/x/sys/unix.write
             github.com/sse-gateway/sse-gateway/internal/stream.(*pollStream).writeLocked
-----------+-------------------------------------------------------
      20ms   internal/runtime/syscall/linux.Syscall6
             syscall.write
             internal/poll.(*FD).Write
             net.(*conn).Write
             github.com/redis/go-redis/v9/internal/pool.(*Conn).WithWriter
-----------+-------------------------------------------------------
      10ms   runtime.mallocgc
             encoding/json.Marshal
-----------+-------------------------------------------------------
      10ms   time.runtimeNow
             time.Now
             github.com/sse-gateway/sse-gateway/internal/stream.(*pollStream).Offer
-----------+-------------------------------------------------------
      1.5s   github.com/sse-gateway/sse-gateway/internal/hub.deliver
-----------+-------------------------------------------------------
`

// TestSplit: each sample goes to the kind of its leaf-most matching frame; a write(2) for
// go-redis is Redis I/O; durations in any unit add up.
func TestSplit(t *testing.T) {
	samples, err := parseTraces(strings.NewReader(traces))
	if err != nil || len(samples) != 5 {
		t.Fatalf("parseTraces = %d samples, %v", len(samples), err)
	}
	by, total := split(samples)
	want := map[string]time.Duration{
		"write(2) to streams": 30 * time.Millisecond, redisIO: 20 * time.Millisecond,
		"allocation": 10 * time.Millisecond, "time": 10 * time.Millisecond, other: 1500 * time.Millisecond,
	}
	for k, v := range want {
		if by[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, by[k], v, by)
		}
	}
	if total != 1570*time.Millisecond {
		t.Errorf("total = %v", total)
	}
	var b strings.Builder
	render(&b, by, total)
	if !strings.Contains(b.String(), "| write(2) to streams | 0.03 | 1.9% |") {
		t.Errorf("render:\n%s", b.String())
	}
}
