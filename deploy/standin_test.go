package deploy

import (
	"os"
	"path/filepath"
)

// Until the gateway's main package exists, the Dockerfile is built with a stand-in that
// implements the contract's healthcheck and serve subcommands and the metric names of
// CONTRACT.md, so that everything else here can be developed. Delete this file once
// cmd/sse-gateway lands.

const standInMain = `package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"
)

var version = "dev"

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	addr := fs.String("addr", ":8080", "listen or probe address")
	fs.Parse(args)
	switch cmd {
	case "healthcheck":
		c := &http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get("http://" + *addr + "/healthz")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			os.Exit(1)
		}
	case "serve":
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		slog.New(slog.NewJSONHandler(os.Stderr, nil)).Info("listening", "addr", ln.Addr().String())
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {})
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {})
		mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
			for _, m := range []string{
				"sse_gateway_streams_open{key=\"default\",protocol=\"HTTP/1.1\"} 0",
				"sse_gateway_stream_opens_total{result=\"ok\"} 0",
				"sse_gateway_stream_closes_total{reason=\"client\"} 0",
				"sse_gateway_events_received_total 0",
				"sse_gateway_events_malformed_total 0",
				"sse_gateway_events_dropped_total{reason=\"stale\"} 0",
				"sse_gateway_frames_written_total{kind=\"event\"} 0",
				"sse_gateway_written_bytes_total 0",
				"sse_gateway_fanout_duration_seconds_bucket{le=\"+Inf\"} 0",
				"sse_gateway_fanout_duration_seconds_sum 0",
				"sse_gateway_fanout_duration_seconds_count 0",
				"sse_gateway_event_age_seconds_bucket{le=\"+Inf\"} 0",
				"sse_gateway_event_age_seconds_sum 0",
				"sse_gateway_event_age_seconds_count 0",
				"sse_gateway_redis_connected 1",
				"sse_gateway_redis_reconnects_total 0",
				"sse_gateway_redis_probe_rtt_seconds_bucket{le=\"+Inf\"} 0",
				"sse_gateway_redis_probe_rtt_seconds_sum 0",
				"sse_gateway_redis_probe_rtt_seconds_count 0",
				"sse_gateway_ready 1",
				"sse_gateway_build_info{version=\"" + version + "\",goversion=\"go\"} 1",
			} {
				fmt.Fprintln(w, m)
			}
		})
		http.Serve(ln, mux)
	default:
		os.Exit(2)
	}
}
`

// addStandInMain writes the stand-in into the build context when the context has no
// cmd/sse-gateway, and reports whether it did.
func addStandInMain(contextDir string) (bool, error) {
	dir := filepath.Join(contextDir, "cmd", "sse-gateway")
	if m, _ := filepath.Glob(filepath.Join(dir, "*.go")); len(m) > 0 {
		return false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	return true, os.WriteFile(filepath.Join(dir, "main.go"), []byte(standInMain), 0o644)
}
