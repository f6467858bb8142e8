// Command pubsubcmp measures classic against sharded Redis pub/sub (issue 11) on a private
// 6-node Redis Cluster (3 masters, 3 replicas) on loopback: several gateways, each streaming
// a different subset of many channels, one mode after the other on the same cluster, with
// the same streams and the same publishes. It prints markdown tables: what each gateway and
// each Redis node received and spent per publish, delivery latency to the streams, and the
// SSUBSCRIBE/SUNSUBSCRIBE cost of streams coming and going. It exits 1 when a check fails
// (an event not delivered to a stream, a gateway that did not get ready or died).
//
//	go run ./loadtest/cmd/pubsubcmp                      # 3 gateways, 1,000 channels, 10,000 publishes
//	go run ./loadtest/cmd/pubsubcmp -channels 30 -publishes 300   # a quick look
//
// Needs redis-server and redis-cli (Redis >= 7) and go on PATH; builds cmd/sse-gateway
// unless -gateway names a binary. Everything it starts listens on 127.0.0.1 and is killed
// when it ends.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// config is one comparison's shape; the zero value is not valid (see flags for defaults).
type config struct {
	gateways          int           // gateway processes
	channels          int           // channels streamed (each on spread gateways)
	spread            int           // gateways streaming each channel
	streamsPerChannel int           // streams per channel on each of its gateways
	publishes         int           // events published, round-robin over the channels
	rate              int           // publishes per second
	churn             int           // channels whose streams are closed and reopened
	modes             []string      // classic, sharded, in this order
	gatewayBin        string        // sse-gateway binary; "" builds one
	deliverTimeout    time.Duration // how long the last events may take to arrive
	linger            time.Duration // the gateway's shard-subscription linger, waited out in the churn
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole command: flags, the comparison, the tables. It returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pubsubcmp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	var modes string
	var timeout time.Duration
	fs.IntVar(&cfg.gateways, "gateways", 3, "gateway processes")
	fs.IntVar(&cfg.channels, "channels", 1000, "channels, each streamed on -spread gateways")
	fs.IntVar(&cfg.spread, "spread", 1, "gateways streaming each channel (channel i on gateways i, i+1, ... mod -gateways)")
	fs.IntVar(&cfg.streamsPerChannel, "streams", 2, "streams per channel on each gateway that streams it")
	fs.IntVar(&cfg.publishes, "publishes", 10000, "events published, round-robin over the channels")
	fs.IntVar(&cfg.rate, "rate", 1000, "publishes per second")
	fs.IntVar(&cfg.churn, "churn", 100, "channels whose streams are closed and reopened to measure subscription churn (0: none)")
	fs.StringVar(&modes, "modes", "classic,sharded,sharded,classic", "modes to run, in order (a mode may repeat: the default's order evens out a machine whose load drifts)")
	fs.StringVar(&cfg.gatewayBin, "gateway", "", "sse-gateway binary; empty builds ./cmd/sse-gateway")
	fs.DurationVar(&cfg.deliverTimeout, "deliver-timeout", 20*time.Second, "how long after the last publish every event may take to reach its streams")
	fs.DurationVar(&cfg.linger, "linger", 5*time.Second, "the gateway's shard-subscription linger after a channel's last stream (waited out in the churn)")
	fs.DurationVar(&timeout, "timeout", 5*time.Minute, "the whole run's limit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg.modes = strings.Split(modes, ",")
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(stderr, "pubsubcmp:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	started := time.Now()
	res, err := compare(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "pubsubcmp:", err)
		return 1
	}
	render(stdout, cfg, res)
	failed := false
	for _, r := range res {
		for _, p := range r.problems {
			fmt.Fprintf(stderr, "pubsubcmp: %s: %s\n", r.label, p)
			failed = true
		}
	}
	fmt.Fprintf(stderr, "pubsubcmp: done in %v\n", time.Since(started).Round(time.Second))
	if failed {
		return 1
	}
	return 0
}

func (c config) validate() error {
	switch {
	case c.gateways < 1 || c.channels < 1 || c.spread < 1 || c.streamsPerChannel < 1 || c.publishes < 1 || c.rate < 1:
		return fmt.Errorf("-gateways, -channels, -spread, -streams, -publishes and -rate must be at least 1")
	case c.spread > c.gateways:
		return fmt.Errorf("-spread %d is more than -gateways %d", c.spread, c.gateways)
	case c.churn < 0 || c.churn > c.channels:
		return fmt.Errorf("-churn must be between 0 and -channels")
	}
	for _, m := range c.modes {
		if m != "classic" && m != "sharded" {
			return fmt.Errorf("-modes: %q is not classic or sharded", m)
		}
	}
	return nil
}

// compare starts the cluster and runs each mode on it.
func compare(ctx context.Context, cfg config, logw io.Writer) ([]*modeResult, error) {
	dir, err := os.MkdirTemp("", "pubsubcmp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := cfg.gatewayBin
	if bin == "" {
		fmt.Fprintln(logw, "pubsubcmp: building cmd/sse-gateway")
		if bin, err = buildGateway(ctx, dir); err != nil {
			return nil, err
		}
	}
	fmt.Fprintln(logw, "pubsubcmp: starting a 3+3 Redis Cluster")
	cl, err := startCluster(ctx, dir, 3, 1)
	if err != nil {
		return nil, err
	}
	defer cl.Stop()
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	env := &runEnv{cfg: cfg, dir: dir, bin: bin, cluster: cl, key: hex.EncodeToString(key), log: logw}
	if env.keysFile, err = writeKeysFile(dir, env.key); err != nil {
		return nil, err
	}
	var out []*modeResult
	runs, total := map[string]int{}, map[string]int{}
	for _, m := range cfg.modes {
		total[m]++
	}
	for _, m := range cfg.modes {
		runs[m]++
		label := m
		if total[m] > 1 {
			label = fmt.Sprintf("%s #%d", m, runs[m])
		}
		fmt.Fprintf(logw, "pubsubcmp: %s\n", label)
		r, err := env.runMode(ctx, m)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", label, err)
		}
		r.label, r.first = label, runs[m] == 1
		out = append(out, r)
	}
	return out, nil
}
