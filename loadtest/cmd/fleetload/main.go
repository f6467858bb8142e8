// Command fleetload holds many SSE streams over a fleet of gateways on this machine and
// measures the fleet: connect time, RSS per stream per gateway and kernel socket memory,
// delivery of every publish to every stream, and the drain of one gateway (SIGTERM): its
// streams reconnect to the others with Last-Event-ID and miss nothing published meanwhile.
//
// It is the engine of loadtest/scripts/fleet100k.sh (100,000 streams over six gateways),
// which starts Redis and the gateways and hands their addresses and pids over:
//
//	fleetload --targets 127.0.0.1:P1,...,127.0.0.1:P6 --pids PID1,...,PID6 --key KEY \
//	    --redis-url redis://127.0.0.1:PORT/0 --streams 100000 --channels 1000 --workers 8
//
// Streams are dealt to gateways round-robin (stream i to gateway i % N, as DNS
// round-robin spreads clients) and to channels by a Zipf-like law (--zipf), from worker
// processes of at most 20,000 files each. It prints the report (text) on stdout, writes
// the JSON summary (--json) and the plots (--svg), and exits 1 when a check failed: a
// stream that did not open, a publish some stream missed, a stream without the newest
// event of its channel after the drain, a stream that found no gateway to reconnect to.
// `fleetload freeport` prints a free TCP port on 127.0.0.1.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// options are the command line.
type options struct {
	targets            []string
	pids               []int
	redisPID           int
	key                string
	redisURL           string
	redisPrefix        string
	channelPrefix      string
	streams            int
	channels           int
	zipfS              float64
	workers            int
	sourceIPs          int
	connectConcurrency int
	connectTimeout     time.Duration
	settle             time.Duration
	rounds             int
	roundTimeout       time.Duration
	publishGap         time.Duration
	shedEvery          int
	drain              time.Duration
	drainPublishEvery  time.Duration
	reconnectTimeout   time.Duration
	timeout            time.Duration
	jsonOut, svgOut    string
}

func main() {
	if os.Getenv(workerEnv) != "" {
		if err := runWorker(); err != nil {
			fmt.Fprintln(os.Stderr, "fleetload worker:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) == 2 && os.Args[1] == "freeport" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, "fleetload:", err)
			os.Exit(1)
		}
		fmt.Println(l.Addr().(*net.TCPAddr).Port)
		l.Close()
		return
	}
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetload:", err)
		os.Exit(2)
	}
	ok, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetload:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("fleetload", flag.ContinueOnError)
	o := &options{}
	targets := fs.String("targets", "", "comma-separated gateway addresses host:port (127.0.0.0/8 only)")
	pids := fs.String("pids", "", "comma-separated gateway pids, in --targets order: RSS and CPU are read from /proc, the last one is sent SIGTERM for the drain phase")
	fs.StringVar(&o.key, "key", "", "SDK key the streams use")
	fs.IntVar(&o.redisPID, "redis-pid", 0, "redis-server's pid: its CPU per message is read from /proc (0: not measured)")
	fs.StringVar(&o.redisURL, "redis-url", "", "Redis URL to PUBLISH on (127.0.0.0/8 only)")
	fs.StringVar(&o.redisPrefix, "redis-channel-prefix", "sse:", "the gateways' --redis-channel-prefix")
	fs.StringVar(&o.channelPrefix, "channel-prefix", "", "channel names are <prefix><n>; empty: fleet<unix seconds>_ (a fresh run has no stored events)")
	fs.IntVar(&o.streams, "streams", 100000, "streams in all")
	fs.IntVar(&o.channels, "channels", 1000, "channels (environments)")
	fs.Float64Var(&o.zipfS, "zipf", 1.5, "Zipf exponent: channel c gets weight 1/(c+1)^s, every channel at least one stream")
	fs.IntVar(&o.workers, "workers", 0, "worker processes; 0: one per 14,000 streams (a process may open 20,000 files)")
	fs.IntVar(&o.sourceIPs, "source-ips", 32, "source addresses 127.0.0.2... (one address pair has ~28k ephemeral ports)")
	fs.IntVar(&o.connectConcurrency, "connect-concurrency", 128, "connection attempts in flight per worker")
	fs.DurationVar(&o.connectTimeout, "connect-timeout", 30*time.Second, "bound on one attempt (dial + response headers)")
	fs.DurationVar(&o.settle, "settle", 3*time.Second, "wait after the last stream opened before reading memory")
	fs.IntVar(&o.rounds, "rounds", 5, "measured rounds before the drain; a round publishes once on every channel")
	fs.DurationVar(&o.roundTimeout, "round-timeout", 30*time.Second, "bound on waiting for one round to reach every stream")
	fs.DurationVar(&o.publishGap, "publish-gap", 500*time.Millisecond, "pause between rounds")
	fs.IntVar(&o.shedEvery, "shed-every", 10, "before the drain, close every n-th stream of each gateway for good so the survivors have room (0: none)")
	fs.DurationVar(&o.drain, "drain", 10*time.Second, "the gateways' --drain (the spread the closes are checked against)")
	fs.DurationVar(&o.drainPublishEvery, "drain-publish-every", time.Second, "during the drain, a round on every channel this often")
	fs.DurationVar(&o.reconnectTimeout, "reconnect-timeout", 60*time.Second, "bound on waiting, after SIGTERM, for every stream to be back")
	fs.DurationVar(&o.timeout, "timeout", 8*time.Minute, "bound on the whole run")
	fs.StringVar(&o.jsonOut, "json", "", "write the JSON summary here")
	fs.StringVar(&o.svgOut, "svg", "", "write the plots (reconnect curve, latency distribution) here")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	for _, t := range strings.Split(*targets, ",") {
		if t == "" {
			continue
		}
		if err := loopback(t); err != nil {
			return nil, err
		}
		o.targets = append(o.targets, t)
	}
	for _, p := range strings.Split(*pids, ",") {
		if p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("--pids: %q is not a pid", p)
		}
		o.pids = append(o.pids, n)
	}
	switch {
	case len(o.targets) < 2:
		return nil, errors.New("--targets: at least two gateways (one is drained)")
	case len(o.pids) != len(o.targets):
		return nil, fmt.Errorf("--pids: %d pids for %d targets", len(o.pids), len(o.targets))
	case o.key == "":
		return nil, errors.New("--key is required")
	case o.redisURL == "":
		return nil, errors.New("--redis-url is required")
	case o.rounds < 1:
		return nil, errors.New("--rounds must be at least 1")
	}
	ru := strings.TrimPrefix(strings.TrimPrefix(o.redisURL, "redis://"), "rediss://")
	if i := strings.IndexAny(ru, "/?"); i >= 0 {
		ru = ru[:i]
	}
	if i := strings.LastIndexByte(ru, '@'); i >= 0 {
		ru = ru[i+1:]
	}
	if err := loopback(ru); err != nil {
		return nil, fmt.Errorf("--redis-url: %w", err)
	}
	if o.workers <= 0 {
		o.workers = (o.streams + 13999) / 14000
	}
	if o.streams/o.workers > 19000 {
		return nil, fmt.Errorf("--workers %d: %d streams per process exceed the 20,000 open files a process may hold", o.workers, o.streams/o.workers)
	}
	if o.channelPrefix == "" {
		o.channelPrefix = fmt.Sprintf("fleet%d_", time.Now().Unix())
	}
	return o, nil
}

// loopback checks that hostPort is in 127.0.0.0/8: the tool loads this machine only.
func loopback(hostPort string) error {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return fmt.Errorf("%q: %w", hostPort, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Is4() || ip.As4()[0] != 127 {
		return fmt.Errorf("target %q is not in 127.0.0.0/8: fleetload only loads the local machine", hostPort)
	}
	return nil
}
