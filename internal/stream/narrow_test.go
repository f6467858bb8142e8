package stream

import (
	"io"
	"testing"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/auth"
)

// TestNarrowedKeyClosesOnlyStreamsItNoLongerPermits: a key whose channel patterns shrink
// keeps its streams on channels it still allows and loses the others.
func TestNarrowedKeyClosesOnlyStreamsItNoLongerPermits(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := startEnv(t, m, Config{Heartbeat: time.Hour})
			kept := e.connect(e.url(secretAll, "dvc_server_1"), nil)
			lost := e.connect(e.url(secretAll, "other"), nil)
			eventually(t, "every stream registered", func() bool { return e.registered() == 2 })

			changed := e.keys.SetSource("test", []auth.Key{
				{Name: "all", Hash: auth.HashKey(secretAll), Channels: []string{"dvc_server_*"}},
				{Name: "server", Hash: auth.HashKey(secretServer), Channels: []string{"dvc_server_*"}},
			})
			if n := e.srv.CloseKeys(changed); n != 1 {
				t.Fatalf("CloseKeys after narrowing closed %d streams, want 1 (reported %v)", n, changed)
			}
			if err := lost.waitEnd(); err != io.EOF {
				t.Errorf("stream on a channel the key no longer allows ended with %v, want a clean end", err)
			}
			msg := e.publish("dvc_server_1", 7, "")
			kept.waitID(msg.ID)
		})
	}
}
