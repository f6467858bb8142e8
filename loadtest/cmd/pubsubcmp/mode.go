package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/stats"
)

// channelPrefix is the gateway's default --redis-channel-prefix.
const channelPrefix = "sse:"

// runEnv is what every mode shares.
type runEnv struct {
	cfg      config
	dir      string
	bin      string
	cluster  *cluster
	key      string
	keysFile string
	log      io.Writer
}

// modeResult is what one mode measured.
type modeResult struct {
	mode      string
	label     string // the mode, numbered when it runs more than once
	first     bool   // the first run of its mode
	gateways  []gwResult
	nodes     []nodeStats // counters over the publish phase, per node
	publishes int
	elapsed   time.Duration // first publish to the snapshot after the last delivery
	expected  int           // (stream, event) pairs that must arrive
	delivered int
	latency   stats.Quantiles
	churn     churnResult
	problems  []string
}

// gwResult is one gateway's share of the publish phase.
type gwResult struct {
	name      string
	channels  int     // channels it streams
	streams   int     // streams it holds
	received  float64 // sse_gateway_events_received_total
	cpu       time.Duration
	readBytes int64   // rchar of /proc/<pid>/io: everything it read (Redis, and its streams' requests)
	conns     float64 // pub/sub connections to Redis it holds
}

// churnResult is the subscription cost of streams closing and opening again.
type churnResult struct {
	channels, streams int
	// quick: streams closed and reopened at once (a reconnect); after: closed, the
	// linger waited out, then reopened. Each: the SSUBSCRIBE and SUNSUBSCRIBE commands the
	// nodes executed (commandstats, all nodes).
	quickSub, quickUnsub, afterSub, afterUnsub float64
	reopenedDelivered, reopenedExpected        int
}

// modeRun is one mode's live state.
type modeRun struct {
	*runEnv
	mode    string
	gws     []*gatewayProc
	cl      *client
	sink    *sink
	cc      *redis.ClusterClient
	streams []*stream // open streams
	// expect is, per stream id, the sequence numbers it must receive.
	expect  map[int][]int64
	rounds  []int64 // per channel: events published on it so far
	baseMs  int64   // lastModified of sequence 0: versions grow with the sequence
	gwChans []int   // channels per gateway
}

// runMode measures one mode on the cluster: fresh gateways, the streams, the publish phase,
// the churn; everything it started is stopped when it returns.
func (e *runEnv) runMode(ctx context.Context, mode string) (*modeResult, error) {
	cfg := e.cfg
	if err := e.cluster.flush(ctx); err != nil {
		return nil, err
	}
	m := &modeRun{runEnv: e, mode: mode, sink: newSink(cfg.channels), expect: map[int][]int64{},
		baseMs: time.Now().UnixMilli(), gwChans: make([]int, cfg.gateways), rounds: make([]int64, cfg.channels)}
	m.cl = newClient(e.key, channelName)
	defer m.cl.hc.CloseIdleConnections()
	m.cc = redis.NewClusterClient(&redis.ClusterOptions{Addrs: e.cluster.Addrs()})
	defer m.cc.Close()
	defer func() {
		for _, st := range m.streams {
			st.close()
		}
		for _, g := range m.gws {
			g.stop()
		}
	}()
	for i := range cfg.gateways {
		g, err := startGateway(ctx, e.bin, fmt.Sprintf("%s%d", mode, i), "--redis-url", e.cluster.URL(), "--redis-pubsub", mode,
			"--keys-file", e.keysFile, "--admin-token", e.key)
		if err != nil {
			return nil, err
		}
		m.gws = append(m.gws, g)
	}
	if err := m.waitFor(ctx, 30*time.Second, "every gateway ready", m.allReady); err != nil {
		return nil, err
	}
	res := &modeResult{mode: mode}

	// Streams: channel i on gateways i, i+1, ... (mod gateways), so each gateway streams its
	// own subset.
	var opens []func(context.Context) (*stream, error)
	for ch := range cfg.channels {
		for j := range cfg.spread {
			gw := (ch + j) % cfg.gateways
			m.gwChans[gw]++
			for range cfg.streamsPerChannel {
				opens = append(opens, m.opener(gw, ch))
			}
		}
	}
	if err := m.openAll(ctx, opens); err != nil {
		return nil, err
	}
	if err := m.waitSubscribed(ctx, nil); err != nil {
		return nil, err
	}
	fmt.Fprintf(e.log, "pubsubcmp: %s: %d streams open on %d gateways; publishing %d events at %d/s\n",
		mode, len(m.streams), cfg.gateways, cfg.publishes, cfg.rate)

	// The publish phase, measured.
	nodes0, err := e.cluster.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	gw0, err := m.gatewayCounters(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	seqs := make([]int64, cfg.publishes)
	for i := range seqs {
		seqs[i] = m.nextSeq(i % cfg.channels)
	}
	if err := m.publish(ctx, seqs); err != nil {
		return nil, err
	}
	want := m.expectedPairs()
	_ = m.waitFor(ctx, cfg.deliverTimeout, "every event delivered", func(context.Context) bool { return m.delivered() == want })
	// Let the write-backs of the last events finish inside the window (both modes alike).
	time.Sleep(time.Second)
	nodes1, err := e.cluster.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	gw1, err := m.gatewayCounters(ctx)
	if err != nil {
		return nil, err
	}
	res.elapsed = time.Since(start)
	res.publishes = cfg.publishes
	res.nodes = delta(nodes0, nodes1)
	res.expected, res.delivered = want, m.delivered()
	m.sink.mu.Lock()
	res.latency = m.sink.lat.Summary()
	if m.sink.wrong > 0 || m.sink.bad > 0 {
		res.problems = append(res.problems, fmt.Sprintf("%d events on a stream of another channel, %d without the load marker", m.sink.wrong, m.sink.bad))
	}
	m.sink.mu.Unlock()
	if res.delivered != res.expected {
		res.problems = append(res.problems, fmt.Sprintf("%d of %d events not delivered to their streams within %v of the last publish",
			res.expected-res.delivered, res.expected, cfg.deliverTimeout))
	}
	for i, g := range m.gws {
		res.gateways = append(res.gateways, gwResult{name: g.name, channels: m.gwChans[i], streams: m.streamsOn(i),
			received: gw1[i].received - gw0[i].received, cpu: gw1[i].cpu - gw0[i].cpu,
			readBytes: gw1[i].rchar - gw0[i].rchar, conns: gw1[i].conns})
	}
	if cfg.churn > 0 {
		if res.churn, err = m.churn(ctx); err != nil {
			return nil, err
		}
		if res.churn.reopenedDelivered != res.churn.reopenedExpected {
			res.problems = append(res.problems, fmt.Sprintf("after the churn, %d of %d events not delivered to the reopened streams",
				res.churn.reopenedExpected-res.churn.reopenedDelivered, res.churn.reopenedExpected))
		}
	}
	for _, st := range m.streams {
		if err := st.failed(); err != nil {
			res.problems = append(res.problems, fmt.Sprintf("a stream on %s ended: %v", m.gws[st.gw].name, err))
			break
		}
	}
	for _, g := range m.gws {
		if err := g.alive(); err != nil {
			res.problems = append(res.problems, err.Error())
		}
	}
	return res, nil
}

// channelName is the name of channel i.
func channelName(i int) string { return "cmp_" + strconv.Itoa(i) }

// opener opens one stream on channel ch of gateway gw and records it.
func (m *modeRun) opener(gw, ch int) func(context.Context) (*stream, error) {
	return func(ctx context.Context) (*stream, error) {
		return m.cl.open(ctx, m.sink, m.gws[gw].addr, gw, ch, m.sink.newStreamSlot())
	}
}

// openAll opens streams, 32 at a time, and adds them to m.streams.
func (m *modeRun) openAll(ctx context.Context, opens []func(context.Context) (*stream, error)) error {
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for _, open := range opens {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			st, err := open(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			m.streams = append(m.streams, st)
		})
	}
	wg.Wait()
	return firstErr
}

func (m *modeRun) streamsOn(gw int) int {
	n := 0
	for _, st := range m.streams {
		if st.gw == gw {
			n++
		}
	}
	return n
}

// nextSeq numbers the next event of channel ch (the sequence numbers of channel ch are
// congruent to ch modulo the channel count, so a stream can tell another channel's event)
// and records it as expected by every stream open on ch.
func (m *modeRun) nextSeq(ch int) int64 {
	seq := m.rounds[ch]*int64(m.cfg.channels) + int64(ch)
	m.rounds[ch]++
	for _, st := range m.streams {
		if st.channel == ch {
			m.expect[st.id] = append(m.expect[st.id], seq)
		}
	}
	return seq
}
