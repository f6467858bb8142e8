package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/gateway"
	"github.com/sse-gateway/sse-gateway/internal/redisconn"
	"github.com/sse-gateway/sse-gateway/internal/store"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// runPublish publishes one config change: straight into Redis with --redis-url (stored as
// the channel's newest event, then published, in one atomic step), or through a running
// gateway's POST /v1/publish with --gateway (which is how the embedded broker is reached).
func runPublish(args []string) int {
	fs := flag.NewFlagSet("sse-gateway publish", flag.ContinueOnError)
	channel := fs.String("channel", "", "channel to publish on (required)")
	etag := fs.String("etag", "", `the new config's CDN ETag, verbatim with its quotes, e.g. '"abc123"' (required)`)
	lastModified := fs.Int64("last-modified", 0, "the new config's Last-Modified in epoch ms (default: now)")
	typ := fs.String("type", "refetchConfig", `event type SDKs read ("refetchConfig"); empty omits it`)
	gatewayURL := fs.String("gateway", "http://127.0.0.1:8080", "gateway base URL, used without --redis-url")
	token := fs.String("admin-token", "", "the gateway's admin token, used with --gateway")
	tokenFile := fs.String("admin-token-file", "", "file holding the gateway's admin token, instead of --admin-token")
	redisURL := fs.String("redis-url", "", "publish directly to this Redis instead of through a gateway")
	passwordFile := fs.String("redis-password-file", "", "file holding the Redis password, overriding the one in --redis-url")
	prefix := fs.String("redis-channel-prefix", store.DefaultChannelPrefix, "pub/sub prefix the gateways subscribe to")
	keyPrefix := fs.String("redis-key-prefix", store.DefaultKeyPrefix, "prefix of the gateways' Redis keys")
	ttl := fs.Duration("latest-ttl", store.DefaultLatestTTL, "how long Redis keeps the channel's newest event")
	pubsub := fs.String("redis-pubsub", "classic", "the gateways' --redis-pubsub: classic (PUBLISH) or sharded (SPUBLISH, keys in the channel's slot)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	skew := fs.Duration("max-clock-skew", 5*time.Minute, "refuse a --last-modified more than this ahead of this machine's clock (likely not epoch ms); 0 accepts any")
	if err := parseFlags(fs, args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if !wire.ValidChannel(*channel) || *etag == "" {
		fmt.Fprintln(os.Stderr, "sse-gateway publish: --channel (a valid channel name) and --etag are required")
		return 2
	}
	if *lastModified == 0 {
		*lastModified = time.Now().UnixMilli()
	}
	inner := map[string]any{"etag": *etag, "lastModified": *lastModified}
	if *typ != "" {
		inner["type"] = *typ
	}
	raw, _ := json.Marshal(inner)
	payload, err := wire.ParsePayload(raw, 0)
	if err == nil {
		err = payload.CheckClock(time.Now(), *skew)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sse-gateway publish:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if *redisURL != "" {
		// The outcome is reported below, once; go-redis' own lines (a failed dial during a
		// failover) would only bury it.
		redisconn.RouteLibraryLogs(slog.New(slog.DiscardHandler))
		rdb, err := newRedisClient(*redisURL, *passwordFile, "sse-gateway-publish")
		if err != nil {
			fmt.Fprintln(os.Stderr, "sse-gateway publish:", err)
			return 2
		}
		defer rdb.Close()
		if *pubsub != "classic" && *pubsub != "sharded" {
			fmt.Fprintf(os.Stderr, "sse-gateway publish: --redis-pubsub %q: use classic or sharded\n", *pubsub)
			return 2
		}
		st := store.NewRedis(rdb, store.Config{ChannelPrefix: *prefix, KeyPrefix: *keyPrefix, LatestTTL: *ttl, Sharded: *pubsub == "sharded"})
		published, err := st.Publish(ctx, *channel, payload)
		if errors.Is(err, store.ErrConflict) {
			// Retrying cannot help: the version is taken by another config.
			fmt.Fprintln(os.Stderr, "sse-gateway publish: not published (conflict):", err)
			return 1
		}
		if err != nil {
			// Retrying is safe, a publish is idempotent (its version decides); during a
			// failover it succeeds once the new primary serves the channel's slot.
			fmt.Fprintln(os.Stderr, "sse-gateway publish: not published, retry:", err)
			return 1
		}
		report(payload.ID(), published)
		return 0
	}
	if *tokenFile != "" {
		if *token, err = gateway.ReadSecret("--admin-token-file", *tokenFile); err != nil {
			fmt.Fprintln(os.Stderr, "sse-gateway publish:", err)
			return 2
		}
	}
	body, _ := json.Marshal(map[string]any{"channel": *channel, "data": json.RawMessage(payload.Raw)})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(*gatewayURL, "/")+"/v1/publish", bytes.NewReader(body))
	if err != nil {
		fmt.Fprintln(os.Stderr, "sse-gateway publish: --gateway:", err)
		return 2
	}
	req.Header.Set("Authorization", "Bearer "+*token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sse-gateway publish:", err)
		return 1
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		fmt.Fprintf(os.Stderr, "sse-gateway publish: %s: %s\n", resp.Status, bytes.TrimSpace(out))
		return 1
	}
	var res struct {
		ID        string `json:"id"`
		Published bool   `json:"published"`
	}
	_ = json.Unmarshal(out, &res)
	report(res.ID, res.Published)
	return 0
}

func report(id string, published bool) {
	if published {
		fmt.Printf("published %s\n", id)
	} else {
		fmt.Printf("not published: %s is not newer than the channel's newest event\n", id)
	}
}
