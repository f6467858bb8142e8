package stream

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestChurnReturnsToBaseline: 50,000 connect/disconnect cycles through the takeover path
// (half closing with FIN, half with RST) leave no stream, no goroutine, no per-IP entry, no
// poller entry and no hub channel behind.
func TestChurnReturnsToBaseline(t *testing.T) {
	const cycles = 50000
	const workers = 32
	const sources = 32 // 127.0.0.2 .. 127.0.0.33: ephemeral ports of one address run short
	e := startEnv(t, modes[0], Config{Heartbeat: time.Hour})
	addr := e.ts.Listener.Addr().String()

	// Every response starts with these bytes after its headers: the first heartbeat chunk.
	firstChunk := []byte("\r\n\r\n3\r\n:\n\n\r\n")
	requests := make([][]byte, 64)
	for i := range requests {
		requests[i] = fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: gw\r\n\r\n", e.streamPath(secretAll, fmt.Sprint("churn", i)))
	}
	// Baseline: after a few cycles have started every long-lived goroutine (the poller's,
	// the listener's) and their streams are gone.
	warm := make([]byte, 4096)
	for i := range 20 {
		if err := churnOnce(&net.Dialer{}, addr, requests[i%len(requests)], firstChunk, warm, false); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the warm-up streams to be forgotten", func() bool { return e.srv.OpenStreams() == 0 })
	baseline := stableGoroutines(t)
	fds0 := openFDs(t)
	opens0, closes0 := e.counter(e.srv.metrics.opens, "ok"), e.counter(e.srv.metrics.closes, CloseClient)

	// Sampled while churning, for the failure message: a closer that lags behind hang-ups
	// holds sockets (and file descriptors) of streams already gone.
	var maxOpen, maxFDs atomic.Int64
	stopSample, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stopSample:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if o := int64(e.srv.OpenStreams()); o > maxOpen.Load() {
				maxOpen.Store(o)
			}
			if ents, err := os.ReadDir("/proc/self/fd"); err == nil && int64(len(ents)) > maxFDs.Load() {
				maxFDs.Store(int64(len(ents)))
			}
		}
	}()
	var next, failures atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			buf := make([]byte, 4096)
			dialers := make([]*net.Dialer, 0, sources/workers)
			for s := w; s < sources; s += workers {
				dialers = append(dialers, &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+s))}, Control: bindNoPort})
			}
			for {
				i := next.Add(1) - 1
				if i >= cycles {
					return
				}
				if err := churnOnce(dialers[int(i)%len(dialers)], addr, requests[i%64], firstChunk, buf, i%2 == 0); err != nil {
					if failures.Add(1) == 1 {
						firstErr.Store(fmt.Sprintf("cycle %d: %v", i, err))
					}
				}
			}
		})
	}
	wg.Wait()
	close(stopSample)
	<-sampled
	t.Logf("while churning: at most %d streams registered, %d file descriptors open", maxOpen.Load(), maxFDs.Load())
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d cycles failed; first: %v (at most %d streams registered, %d fds open at once)",
			n, cycles, firstErr.Load(), maxOpen.Load(), maxFDs.Load())
	}

	deadline := time.Now().Add(waitLimit)
	for e.srv.OpenStreams() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if open := e.srv.OpenStreams(); open != 0 {
		t.Fatalf("%d streams still registered after every client hung up: %s", open, registryReport(e.srv))
	}
	deadline = time.Now().Add(waitLimit)
	for runtime.NumGoroutine() > baseline && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseline {
		var dump strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&dump, 1)
		t.Fatalf("%d goroutines after churn, baseline %d:\n%s", n, baseline, dump.String())
	}
	if got := e.counter(e.srv.metrics.opens, "ok") - opens0; got != cycles {
		t.Errorf("opens{ok} = %v, want %d", got, cycles)
	}
	eventually(t, "every close counted", func() bool {
		return e.counter(e.srv.metrics.closes, CloseClient)-closes0 == cycles
	})
	e.srv.mu.Lock()
	perIP := len(e.srv.perIP)
	e.srv.mu.Unlock()
	if perIP != 0 {
		t.Errorf("per-IP table holds %d addresses after churn", perIP)
	}
	if n := pollerEntries(e.srv); n != 0 {
		t.Errorf("poller still tracks %d streams", n)
	}
	// Every taken-over socket's descriptor is closed with its stream (they are detached
	// from the Go runtime, so nothing else would close them).
	deadline = time.Now().Add(waitLimit)
	for openFDs(t) > fds0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if fds := openFDs(t); fds > fds0 {
		t.Errorf("%d file descriptors open after churn, %d before", fds, fds0)
	}
	if ch := e.hub.Channels(); len(ch) != 0 {
		t.Errorf("hub still has %d channels", len(ch))
	}
}

// stableGoroutines waits until the goroutine count holds still for a moment and returns it.
func stableGoroutines(t testing.TB) int {
	t.Helper()
	n, same := runtime.NumGoroutine(), 0
	eventually(t, "a stable goroutine count", func() bool {
		if m := runtime.NumGoroutine(); m != n {
			n, same = m, 0
			return false
		}
		same++
		return same >= 50
	})
	return n
}

// churnOnce opens one stream, waits for its headers and first heartbeat, and hangs up.
func churnOnce(d *net.Dialer, addr string, request, firstChunk, buf []byte, rst bool) error {
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(waitLimit))
	if _, err := nc.Write(request); err != nil {
		return err
	}
	n := 0
	for !bytes.Contains(buf[:n], firstChunk) {
		if n == len(buf) {
			return fmt.Errorf("no heartbeat in %q", buf[:n])
		}
		k, err := nc.Read(buf[n:])
		if err != nil {
			return fmt.Errorf("after %q: %w", buf[:n], err)
		}
		n += k
	}
	if !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 200 OK\r\n")) {
		return fmt.Errorf("response %q", buf[:n])
	}
	if rst {
		_ = nc.(*net.TCPConn).SetLinger(0)
	}
	return nil
}

// bindNoPort sets IP_BIND_ADDRESS_NO_PORT: with a source address given, the source port is
// then chosen at connect by the kernel's 4-tuple search instead of at bind, where ports in
// TIME_WAIT make the search slow and run out sooner.
func bindNoPort(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, 24 /* IP_BIND_ADDRESS_NO_PORT */, 1)
	}); err != nil {
		return err
	}
	return serr
}

// openFDs counts the test process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
