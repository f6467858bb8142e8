package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/auth"
	"github.com/sse-gateway/sse-gateway/internal/store"
)

const keysUsage = `Usage:
  sse-gateway keys add --name N --channels 'dvc_*,x_*' [--rotate]   generate a key, print it once
  sse-gateway keys revoke --name N                                 remove a key, close its streams
  sse-gateway keys list                                            names, channel patterns, created

Each takes --redis-url and --redis-key-prefix (or SSE_GATEWAY_REDIS_URL, SSE_GATEWAY_REDIS_KEY_PREFIX).
Only the SHA-256 of a key is stored; the key itself is printed once, by add, and never again.
Gateways running with --keys-redis pick every change up within a second.
`

// runKeys manages the keys kept in Redis. The new key is the only thing written to stdout,
// so that `KEY=$(sse-gateway keys add ...)` works; everything else goes to stderr.
func runKeys(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, keysUsage)
		return 2
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("sse-gateway keys "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	redisURL := fs.String("redis-url", "", "Redis the gateways run with --keys-redis on (required)")
	passwordFile := fs.String("redis-password-file", "", "file holding the Redis password, overriding the one in --redis-url")
	prefix := fs.String("redis-key-prefix", store.DefaultKeyPrefix, "the gateways' --redis-key-prefix")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	var name, channels *string
	var rotate *bool
	switch sub {
	case "add":
		name = fs.String("name", "", "key name, shown in logs and metrics (required)")
		channels = fs.String("channels", "", "comma-separated channel patterns the key may read, '*' matches any run of characters (required)")
		rotate = fs.Bool("rotate", false, "replace the secret of an existing key (its open streams are closed)")
	case "revoke":
		name = fs.String("name", "", "key name (required)")
	case "list":
	default:
		fmt.Fprintf(stderr, "sse-gateway keys: unknown command %q\n\n%s", sub, keysUsage)
		return 2
	}
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "sse-gateway keys:", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sse-gateway keys %s: unexpected argument %q\n", sub, fs.Arg(0))
		return 2
	}
	if *redisURL == "" {
		fmt.Fprintf(stderr, "sse-gateway keys %s: --redis-url (or %s) is required\n", sub, envName("redis-url"))
		return 2
	}
	if name != nil && !auth.ValidKeyName(*name) {
		fmt.Fprintf(stderr, "sse-gateway keys %s: --name %q: use 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit\n", sub, *name)
		return 2
	}
	var patterns []string
	if channels != nil {
		for _, p := range strings.Split(*channels, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			} else if !auth.ValidPattern(p) {
				fmt.Fprintf(stderr, "sse-gateway keys %s: --channels: pattern %q: use channel name characters (A-Z a-z 0-9 _ . : -) and *\n", sub, p)
				return 2
			}
			patterns = append(patterns, p)
		}
		if len(patterns) == 0 {
			fmt.Fprintf(stderr, "sse-gateway keys %s: --channels is required (e.g. --channels 'dvc_server_*')\n", sub)
			return 2
		}
	}
	rdb, err := newRedisClient(*redisURL, *passwordFile, "sse-gateway-keys")
	if err != nil {
		fmt.Fprintf(stderr, "sse-gateway keys %s: %v\n", sub, err)
		return 2
	}
	defer rdb.Close()
	rk := auth.NewRedisKeys(rdb, *prefix)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	switch sub {
	case "add":
		secret, notified, err := rk.Add(ctx, *name, patterns, *rotate)
		if err != nil {
			fmt.Fprintln(stderr, "sse-gateway keys add:", err)
			return 1
		}
		fmt.Fprintln(stdout, secret)
		verb := "added"
		if *rotate {
			verb = "stored a new secret for"
		}
		fmt.Fprintf(stderr, "%s key %q (channels %s); %d gateway(s) notified.\n"+
			"The key above is shown only this once: only its SHA-256 is stored.\n",
			verb, *name, strings.Join(patterns, ","), notified)
	case "revoke":
		notified, err := rk.Revoke(ctx, *name)
		if err != nil {
			fmt.Fprintln(stderr, "sse-gateway keys revoke:", err)
			return 1
		}
		fmt.Fprintf(stderr, "revoked key %q; %d gateway(s) notified and close its streams.\n", *name, notified)
	case "list":
		list, err := rk.List(ctx)
		if err != nil {
			fmt.Fprintln(stderr, "sse-gateway keys list:", err)
			return 1
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tCHANNELS\tCREATED")
		for _, k := range list {
			created := "-"
			if !k.Created.IsZero() {
				created = k.Created.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", k.Name, strings.Join(k.Channels, ","), created)
		}
		_ = tw.Flush()
	}
	return 0
}
