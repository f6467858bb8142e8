package stream

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sse-gateway/sse-gateway/internal/auth"
	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/store"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// TestWithEmbeddedBroker runs the endpoint against the real in-process broker (the
// gateway's configuration without Redis): what was published before anyone listened is
// delivered at connect, newer publishes follow, and an older publish never reaches a client.
func TestWithEmbeddedBroker(t *testing.T) {
	for _, m := range modes[:2] {
		t.Run(m.name, func(t *testing.T) {
			h := hub.New(hub.Config{}, nil)
			defer h.Close()
			broker := store.NewMemory(h, store.Config{})
			keys := auth.NewStore()
			keys.SetSource("test", []auth.Key{{Name: "all", Hash: auth.HashKey(secretAll), Channels: []string{"*"}}})
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			srv, err := New(Config{NoTakeover: m.noTakeover}, h, keys, broker, nil, log, prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			ts := httptest.NewServer(srv)
			ctx, cancel := context.WithCancel(context.Background())
			runs := make(chan error, 2)
			go func() { runs <- srv.Run(ctx) }()
			go func() { runs <- broker.Run(ctx) }()
			defer func() {
				srv.Drain(context.Background(), 0)
				ts.Close()
				cancel()
				for range 2 {
					if err := <-runs; err != nil {
						t.Errorf("Run: %v", err)
					}
				}
			}()
			e := &env{t: t, ts: ts, client: ts.Client(), srv: srv}

			publish := func(lm int64) (wire.Payload, bool) {
				p, err := wire.ParsePayload(fmt.Appendf(nil, `{"etag":"\"e%d\"","lastModified":%d}`, lm, lm), 0)
				if err != nil {
					t.Fatal(err)
				}
				ok, err := broker.Publish(context.Background(), "dvc_server_1", p)
				if err != nil {
					t.Fatal(err)
				}
				return p, ok
			}
			first, _ := publish(1700000000000)
			c := e.connect(e.url(secretAll, "dvc_server_1"), nil)
			if evs := c.waitEvents(1); evs[0].ID != first.ID() {
				t.Fatalf("first event %s, want the stored latest %s", evs[0].ID, first.ID())
			}
			if _, ok := publish(1600000000000); ok {
				t.Fatal("the broker accepted an older event")
			}
			newer, ok := publish(1700000000001)
			if !ok {
				t.Fatal("newer event refused")
			}
			c.waitLast(newer.ID())
			if ids := c.ids(); len(ids) != 2 {
				t.Fatalf("ids %v, want exactly the two newest versions", ids)
			}
			eventually(t, "the broker to report ready", broker.Ready)
			c.close()
			eventually(t, "the stream to be forgotten", func() bool { return srv.OpenStreams() == 0 })
		})
	}
}
