package stream

import (
	"testing"
	"time"
)

// TestIdleStreamOutlivesWriteTimeout: a stream with nothing to write is not a slow one. With a
// heartbeat longer than WriteTimeout, an idle stream stays open well past WriteTimeout and
// then receives a publish on the same response, on every path. (On HTTP/2, a write deadline
// set for the last write and left to pass resets the stream even with no write pending.)
func TestIdleStreamOutlivesWriteTimeout(t *testing.T) {
	const writeTimeout = 200 * time.Millisecond
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := startEnv(t, m, Config{WriteTimeout: writeTimeout, Heartbeat: time.Hour})
			s := e.connect(e.url(secretAll, "idle"), nil)
			eventually(t, "the stream registered", func() bool { return e.registered() == 1 })
			time.Sleep(5 * writeTimeout) // idle, past the deadline of the headers' write
			msg := e.publish("idle", 1, "")
			s.waitID(msg.ID)
			if n := e.closesTotal(); n != 0 {
				t.Fatalf("an idle stream was closed (%v closes: slow %v, client %v) although it had nothing to write",
					n, e.counter(e.srv.metrics.closes, CloseSlow), e.counter(e.srv.metrics.closes, CloseClient))
			}
		})
	}
}
