// Package floor measures the cost floor of one SSE delivery on this machine:
// one write(2) of a typical frame to a loopback TCP socket, which a gateway
// cannot avoid (short of batching several events into one write).
//
//	go test -run '^$' -bench . -benchtime 200000x ./loadtest/floor
//
// cpu-ns/write is the writing thread's own CPU time per write (RUSAGE_THREAD;
// on loopback the sender also runs most of the receive path in its softirq).
package floor

import (
	"io"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// frame is the size of a typical gateway event (contract wire format).
var frame = []byte("id: 1700000000000-1a2b3c4d\nevent: message\ndata: " +
	`{"id":"1700000000000-1a2b3c4d","timestamp":1700000000001,"channel":"dvc_server_0123456789abcdef0123456789abcdef01234567_v1",` +
	`"data":"{\"etag\":\"\\\"` + strings.Repeat("a", 32) + `\\\"\",\"lastModified\":1700000000000}","name":"change"}` + "\n\n")

func threadCPU(t testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func pairs(b *testing.B, n int) []net.Conn {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	writers := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		writers = append(writers, s)
		go func() { _, _ = io.Copy(io.Discard, c); c.Close() }() // the client drains
	}
	b.Cleanup(func() {
		for _, w := range writers {
			w.Close()
		}
	})
	return writers
}

func BenchmarkLoopbackWrite(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run("conns="+itoa(n), func(b *testing.B) {
			ws := pairs(b, n)
			// Raw fds, as an epoll-style server writes: no Go netpoller in the path.
			fds := make([]int, n)
			for i, w := range ws {
				raw, err := w.(*net.TCPConn).SyscallConn()
				if err != nil {
					b.Fatal(err)
				}
				_ = raw.Control(func(fd uintptr) { fds[i] = int(fd) })
			}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.SetBytes(int64(len(frame)))
			b.ResetTimer()
			cpu0 := threadCPU(b)
			for i := 0; i < b.N; i++ {
				for {
					_, err := syscall.Write(fds[i%n], frame)
					if err == syscall.EAGAIN {
						runtime.Gosched() // the reader is behind; rare with a draining client
						continue
					}
					if err != nil {
						b.Fatal(err)
					}
					break
				}
			}
			cpu := threadCPU(b) - cpu0
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/write")
		})
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var d []byte
	for ; n > 0; n /= 10 {
		d = append([]byte{byte('0' + n%10)}, d...)
	}
	return string(d)
}

// TestFrameSize keeps the benchmark's frame close to a real event.
func TestFrameSize(t *testing.T) {
	if len(frame) < 250 || len(frame) > 400 {
		t.Fatalf("frame is %d bytes", len(frame))
	}
}
