// Command baseline is "the obvious design" every figure in docs/PERFORMANCE.md
// is measured against: net/http + github.com/r3labs/sse/v2 Server (one stream
// per channel, AutoReplay off) + one go-redis PSUBSCRIBE read through
// PubSub.Channel(). It serves the contract's wire format on
// GET /event-stream?channels=<one channel>&key=<any non-empty key>.
//
// It is deliberately naive (no auth, no write deadlines, no latest-event
// replay, one channel per stream): see loadtest/README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/r3labs/sse/v2"
	"github.com/redis/go-redis/v9"
)

func main() {
	addr := flag.String("addr", ":8080", "listen address")
	redisURL := flag.String("redis-url", "redis://127.0.0.1:6379/0", "redis://host:port/db")
	prefix := flag.String("redis-channel-prefix", "sse:", "Redis channel prefix; PUBLISH <prefix><channel> <json>")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(*addr, *redisURL, *prefix, log); err != nil {
		log.Error("baseline stopped", "err", err)
		os.Exit(1)
	}
}

func run(addr, redisURL, prefix string, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return fmt.Errorf("--redis-url: %w", err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()

	srv := sse.New()
	srv.AutoReplay = false
	srv.AutoStream = true
	srv.Headers = map[string]string{"X-Accel-Buffering": "no"}
	defer srv.Close()

	ps := rdb.PSubscribe(ctx, prefix+"*")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil { // the subscription confirmation
		return fmt.Errorf("psubscribe: %w", err)
	}
	go func() {
		for msg := range ps.Channel() {
			channel := strings.TrimPrefix(msg.Channel, prefix)
			var in struct {
				Etag         string `json:"etag"`
				LastModified int64  `json:"lastModified"`
			}
			if json.Unmarshal([]byte(msg.Payload), &in) != nil {
				continue
			}
			h := fnv.New32a()
			h.Write([]byte(in.Etag))
			id := fmt.Sprintf("%d-%08x", in.LastModified, h.Sum32())
			data, _ := json.Marshal(map[string]any{
				"id": id, "timestamp": time.Now().UnixMilli(), "channel": channel, "data": msg.Payload, "name": "change",
			})
			srv.Publish(channel, &sse.Event{ID: []byte(id), Event: []byte("message"), Data: data})
		}
	}()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("GET /event-stream", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ch := q.Get("channels")
		switch {
		case ch == "" || strings.Contains(ch, ","):
			httpError(w, http.StatusBadRequest, "exactly one channel is supported")
			return
		case q.Get("key") == "":
			httpError(w, http.StatusUnauthorized, "missing key")
			return
		}
		q.Set("stream", ch)
		r.URL.RawQuery = q.Encode()
		srv.ServeHTTP(w, r)
	})

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	log.Info("listening", "addr", ln.Addr().String())
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx) // streams never end by themselves; Close below cuts them
		_ = hs.Close()
	}()
	if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
