// Command loadgen opens many SSE connections to a gateway on this machine,
// publishes events through Redis and measures connect rate, server memory and
// CPU, and delivery latency. It prints progress on stderr and one JSON summary
// (loadtest/internal/result.Summary) as the last line of stdout.
//
//	loadgen --url 'http://127.0.0.1:8080/event-stream?key=K' --conns 15000 \
//	        --channels 1 --publishes 20 --redis-url redis://127.0.0.1:6379/0 --server-pid 1234
//
// It only targets 127.0.0.0/8, bounds every phase by --timeout, and spreads
// connections over source addresses 127.0.0.2.. and worker processes (each
// under the open-files cap). See loadtest/README.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// options are the command-line flags.
type options struct {
	url                 string
	conns               int
	channels            int
	channelPrefix       string
	workers             int
	connsPerWorker      int
	sourceIPs           int
	connectConcurrency  int
	connectRate         float64
	connectTimeout      time.Duration
	serverPID           int
	redisURL            string
	redisPrefix         string
	publishes           int
	publishGap          time.Duration
	publishRate         float64
	publishDuration     time.Duration
	roundSpread         time.Duration
	roundTimeout        time.Duration
	fillPublishes       int
	fillChannels        int
	fillWait            time.Duration
	pad                 int
	slowFraction        float64
	slowRcvBuf          int
	settle              time.Duration
	hold                time.Duration
	strict              bool
	timeout             time.Duration
	label               string
	pprofURL            string
	pprofDir            string
	pprofSeconds        int
	pprofConnectSeconds int
	readBuf             int
}

func main() {
	if idx := os.Getenv(workerEnv); idx != "" {
		if err := runWorker(); err != nil {
			fmt.Fprintf(os.Stderr, "loadgen worker %s: %v\n", idx, err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "freeport" {
		port, err := freePort()
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen freeport:", err)
			os.Exit(1)
		}
		fmt.Println(port)
		return
	}
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	ok, err := runCoordinator(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(3)
	}
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.StringVar(&o.url, "url", "", "stream URL without channels, e.g. http://127.0.0.1:8080/event-stream?key=K (127.0.0.0/8 only)")
	fs.IntVar(&o.conns, "conns", 1000, "number of SSE connections")
	fs.IntVar(&o.channels, "channels", 1, "number of channels; connection i subscribes to <channel-prefix><i % channels>")
	fs.StringVar(&o.channelPrefix, "channel-prefix", "lt_", "channel name prefix")
	fs.IntVar(&o.workers, "workers", 0, "worker processes; 0 = ceil(conns / conns-per-worker)")
	fs.IntVar(&o.connsPerWorker, "conns-per-worker", 8000, "connections per worker process when --workers is 0 (stay well under the open-files cap)")
	fs.IntVar(&o.sourceIPs, "source-ips", 64, "source addresses 127.0.0.2.. to spread connections over (0 = kernel's choice)")
	fs.IntVar(&o.connectConcurrency, "connect-concurrency", 256, "connection attempts in flight (total over workers)")
	fs.Float64Var(&o.connectRate, "connect-rate", 0, "new connections per second (total); 0 = as fast as concurrency allows")
	fs.DurationVar(&o.connectTimeout, "connect-timeout", 15*time.Second, "per connection: dial + response headers")
	fs.IntVar(&o.serverPID, "server-pid", 0, "pid of the server, for RSS (/proc/<pid>/status) and CPU (/proc/<pid>/stat); 0 = not measured")
	fs.StringVar(&o.redisURL, "redis-url", "redis://127.0.0.1:6379/0", "Redis to PUBLISH to (127.0.0.0/8 only)")
	fs.StringVar(&o.redisPrefix, "redis-channel-prefix", "sse:", "PUBLISH <prefix><channel>")
	fs.IntVar(&o.publishes, "publishes", 20, "measured publishes per channel (rounds); 0 = connect only")
	fs.Float64Var(&o.publishRate, "publish-rate", 0, "rate mode: publishes per second over all channels for --publish-duration, publish k to channel k % channels (replaces --publishes rounds); 0 = rounds")
	fs.DurationVar(&o.publishDuration, "publish-duration", 5*time.Second, "rate mode: how long to publish at --publish-rate")
	fs.DurationVar(&o.publishGap, "publish-gap", 100*time.Millisecond, "pause after a round is delivered (or timed out)")
	fs.DurationVar(&o.roundSpread, "round-spread", 0, "spread a round's publishes (one per channel) evenly over this time; 0 = all at once in one pipeline")
	fs.DurationVar(&o.roundTimeout, "round-timeout", 5*time.Second, "longest wait for one round to reach every reader")
	fs.IntVar(&o.fillPublishes, "fill-publishes", 0, "unmeasured publishes per fill channel before the measured phase (fills slow consumers' buffers)")
	fs.IntVar(&o.fillChannels, "fill-channels", 1, "channels 0..n-1 that get the fill publishes")
	fs.DurationVar(&o.fillWait, "fill-wait", 5*time.Second, "after the fill publishes, wait until readers receive no fill frame for 1 s, at most this long")
	fs.IntVar(&o.pad, "fill-pad", 0, "bytes of padding added to each fill payload (\"pad\" field; measured payloads have none)")
	fs.Float64Var(&o.slowFraction, "slow-fraction", 0, "fraction of connections per channel that stop reading after connect (0..1)")
	fs.IntVar(&o.slowRcvBuf, "slow-rcvbuf", 0, "SO_RCVBUF for slow connections (bytes, 0 = kernel default)")
	fs.DurationVar(&o.settle, "settle", 2*time.Second, "pause after connecting before reading the server's RSS")
	fs.DurationVar(&o.hold, "hold", 0, "keep connections open this long after the publish phase")
	fs.BoolVar(&o.strict, "strict", false, "decode and check every event against the contract's wire format (slower)")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "hard limit for the whole run")
	fs.StringVar(&o.label, "label", "", "free-form label copied to the summary")
	fs.StringVar(&o.pprofURL, "pprof-url", "", "server's pprof base, e.g. http://127.0.0.1:9090: CPU profiles while connecting and while publishing, heap profile and goroutine dump after connecting")
	fs.StringVar(&o.pprofDir, "pprof-dir", ".", "directory for the profiles")
	fs.IntVar(&o.pprofSeconds, "pprof-seconds", 10, "length of the CPU profile taken while publishing")
	fs.IntVar(&o.pprofConnectSeconds, "pprof-connect-seconds", 3, "length of the CPU profile taken while connecting")
	fs.IntVar(&o.readBuf, "read-buf", 1024, "bufio size per connection for the response headers")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch {
	case o.url == "":
		return nil, errors.New("--url is required")
	case o.conns < 1 || o.conns > 1_000_000:
		return nil, errors.New("--conns must be in 1..1000000")
	case o.channels < 1 || o.channels > o.conns:
		return nil, errors.New("--channels must be in 1..conns")
	case o.connsPerWorker < 1 || o.connsPerWorker > 19000:
		return nil, errors.New("--conns-per-worker must be in 1..19000 (open-files cap)")
	case o.workers < 0 || o.workers > 64:
		return nil, errors.New("--workers must be in 0..64")
	case o.sourceIPs < 0 || o.sourceIPs > 60000:
		return nil, errors.New("--source-ips must be in 0..60000")
	case o.slowFraction < 0 || o.slowFraction >= 1:
		return nil, errors.New("--slow-fraction must be in [0,1)")
	case o.publishes < 0 || o.publishes > 100000, o.fillPublishes < 0 || o.fillPublishes > 100000:
		return nil, errors.New("--publishes and --fill-publishes must be in 0..100000")
	case o.fillChannels < 1 || o.fillChannels > o.channels:
		return nil, errors.New("--fill-channels must be in 1..channels")
	case o.pad < 0 || o.pad > 60000:
		return nil, errors.New("--fill-pad must be in 0..60000")
	case o.publishRate < 0 || o.publishRate > 200000:
		return nil, errors.New("--publish-rate must be in 0..200000")
	case o.publishRate > 0 && (o.publishDuration <= 0 || o.publishRate*o.publishDuration.Seconds() > 2_000_000):
		return nil, errors.New("--publish-duration must be > 0 and publish at most 2,000,000 events at --publish-rate")
	case o.roundSpread < 0 || o.roundSpread > time.Minute:
		return nil, errors.New("--round-spread must be in [0, 1m]")
	case o.timeout <= 0 || o.timeout > 2*time.Hour:
		return nil, errors.New("--timeout must be in (0, 2h]")
	case o.connectConcurrency < 1:
		return nil, errors.New("--connect-concurrency must be >= 1")
	case o.readBuf < 256:
		return nil, errors.New("--read-buf must be >= 256")
	}
	if o.workers == 0 {
		o.workers = (o.conns + o.connsPerWorker - 1) / o.connsPerWorker
	}
	if o.workers > o.conns {
		o.workers = o.conns
	}
	if _, _, err := loopbackHostPort(o.url, "80"); err != nil {
		return nil, fmt.Errorf("--url: %w", err)
	}
	if o.publishes > 0 || o.publishRate > 0 || o.fillPublishes > 0 {
		if _, _, err := loopbackHostPort(o.redisURL, "6379"); err != nil {
			return nil, fmt.Errorf("--redis-url: %w", err)
		}
	}
	if o.pprofURL != "" {
		if _, _, err := loopbackHostPort(o.pprofURL, "80"); err != nil {
			return nil, fmt.Errorf("--pprof-url: %w", err)
		}
	}
	return o, nil
}

// freePort asks the kernel for a free TCP port on 127.0.0.1 (racy by nature,
// good enough to start a private redis-server for a test or the bench).
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), nil
}
