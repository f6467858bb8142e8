package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/sse-gateway/sse-gateway/internal/gateway"
	"github.com/sse-gateway/sse-gateway/internal/redisconn"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// runServe runs the gateway until SIGTERM or SIGINT, reloading keys on SIGHUP.
func runServe(args []string) int {
	var cfg gateway.Config
	fs := flag.NewFlagSet("sse-gateway serve", flag.ContinueOnError)
	serveFlags(fs, &cfg)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sse-gateway [serve] [flags]\n\nEvery flag can also be set by the environment variable shown in `sse-gateway flags`.\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "sse-gateway:", err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "sse-gateway:", err)
		return 2
	}
	log := newLogger(cfg.LogFormat, cfg.LogLevel)
	slog.SetDefault(log)
	redisconn.RouteLibraryLogs(log)
	cfg.Logger = log
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, cfg); err != nil {
		log.Error("gateway stopped", "err", err)
		return 1
	}
	return 0
}

// serve runs a gateway built from cfg until ctx ends, reloading its keys on SIGHUP.
func serve(ctx context.Context, cfg gateway.Config) error {
	cfg.Version = version
	g, err := gateway.New(cfg)
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	for {
		select {
		case <-hup:
			g.Reload()
		case err := <-done:
			return err
		}
	}
}

func newLogger(format, level string) *slog.Logger {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}
