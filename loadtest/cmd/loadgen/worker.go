package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/sseparse"
	"github.com/sse-gateway/sse-gateway/loadtest/internal/stats"
	"github.com/sse-gateway/sse-gateway/loadtest/internal/streamclient"
	"github.com/sse-gateway/sse-gateway/loadtest/internal/workerproc"
)

const histShards = 32

// worker holds a share of the connections and measures what they receive.
type worker struct {
	cfg  workerConfig
	base *url.URL
	out  *json.Encoder
	reqs [][]byte // request bytes per channel index

	cancelConns context.CancelFunc // ends the connections' context (finish)

	phaseStart atomic.Int64 // unix ns; frames sent before it are not measured
	closing    atomic.Bool  // set at finish: read errors after it are ours

	delivered   atomic.Uint64
	prePhase    atomic.Uint64
	duplicates  atomic.Uint64
	otherEvents atomic.Uint64
	comments    atomic.Uint64
	protoErrs   atomic.Uint64
	closedRead  atomic.Int64
	closedSlow  atomic.Int64
	sampleOnce  sync.Once
	sample      string

	shards [histShards]struct {
		mu sync.Mutex
		h  stats.Hist
	}
	seqs *stats.Seqs

	mu    sync.Mutex // guards conns
	conns []*streamConn

	readers sync.WaitGroup // one per connection goroutine
}

// streamConn is one SSE connection. Fields are owned by its goroutine.
type streamConn struct {
	w       *worker
	idx     int
	channel int
	slow    bool
	nc      net.Conn
	lastSeq int64
	name    string
}

// connectOutcome is sent by a connection goroutine once it is up or has failed.
type connectOutcome struct {
	ok      bool
	slow    bool
	channel int
	reason  string
	startNs int64
	upNs    int64
}

func runWorker() error {
	debug.SetGCPercent(400) // the generator's heap is small; fewer GCs, less noise
	var cfg workerConfig
	in, err := workerproc.ReadConfig(os.Stdin, 1<<20, &cfg)
	if err != nil {
		return err
	}
	base, err := url.Parse(cfg.URL)
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	w := &worker{cfg: cfg, base: base, out: json.NewEncoder(os.Stdout)}
	w.seqs = stats.NewSeqs(cfg.MaxSeq)
	w.reqs = make([][]byte, cfg.Channels)
	for c := range w.reqs {
		w.reqs[c] = streamRequest(base, cfg.HostHeader, channelName(cfg.ChannelPrefix, c))
	}

	ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, cfg.DeadlineUnixNs))
	defer cancel()
	// The coordinator going away (stdin closed) or the deadline ends the worker.
	cmds := workerproc.Commands[command](ctx, in)

	connCtx, cancelConns := context.WithCancel(ctx)
	defer cancelConns()
	w.cancelConns = cancelConns
	msg := w.connectAll(connCtx)
	if err := w.out.Encode(msg); err != nil {
		return fmt.Errorf("worker: write: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			w.finish()
			return fmt.Errorf("worker %d: deadline reached", cfg.Index)
		case c, ok := <-cmds:
			if !ok {
				w.finish()
				return nil
			}
			switch c.Cmd {
			case "phase":
				w.phaseStart.Store(c.StartNs)
				_ = w.out.Encode(workerMsg{Type: "ack"})
			case "progress":
				_ = w.out.Encode(workerMsg{Type: "progress", Delivered: w.delivered.Load(), PrePhase: w.prePhase.Load(), ClosedReaders: int(w.closedRead.Load())})
			case "finish":
				w.finish()
				return w.out.Encode(w.result())
			}
		}
	}
}

func channelName(prefix string, c int) string { return fmt.Sprintf("%s%d", prefix, c) }

// connectAll opens this worker's connections with bounded concurrency (and
// rate, if set) and returns the "connected" report once every attempt ended.
func (w *worker) connectAll(ctx context.Context) workerMsg {
	cfg := w.cfg
	n := cfg.ConnHi - cfg.ConnLo
	outcomes := make(chan connectOutcome, n)
	sem := make(chan struct{}, max(1, cfg.ConnectConcurrency))
	var lim *rate.Limiter
	if cfg.ConnectRate > 0 {
		lim = rate.NewLimiter(rate.Limit(cfg.ConnectRate), max(1, int(cfg.ConnectRate/100)))
	}
	launched := 0
	for i := cfg.ConnLo; i < cfg.ConnHi; i++ {
		if lim != nil && lim.Wait(ctx) != nil {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		c := &streamConn{w: w, idx: i, channel: channelOf(i, cfg.Channels), slow: isSlow(i, cfg.Channels, cfg.SlowPerMille)}
		c.name = channelName(cfg.ChannelPrefix, c.channel)
		launched++
		w.readers.Add(1)
		go c.run(ctx, sem, outcomes)
	}

	msg := workerMsg{Type: "connected", Attempted: launched, Errors: map[string]int{}, Readers: make([]int, cfg.Channels)}
	var lat stats.Hist
	for range launched {
		o := <-outcomes // every goroutine sends exactly one outcome, bounded by its dial/read deadline
		if msg.FirstDialNs == 0 || o.startNs < msg.FirstDialNs {
			msg.FirstDialNs = o.startNs
		}
		if !o.ok {
			msg.Failed++
			msg.Errors[o.reason]++
			continue
		}
		msg.Established++
		lat.Record(o.upNs - o.startNs)
		msg.LastUpNs = max(msg.LastUpNs, o.upNs)
		if o.slow {
			msg.Slow++
		} else {
			msg.Readers[o.channel]++
		}
	}
	if skipped := n - launched; skipped > 0 {
		msg.Failed += skipped
		msg.Errors["not attempted (deadline)"] += skipped
	}
	snap := lat.Snapshot()
	msg.ConnectLat = &snap
	return msg
}

func (c *streamConn) run(ctx context.Context, sem chan struct{}, outcomes chan<- connectOutcome) {
	w := c.w
	defer w.readers.Done()
	o := connectOutcome{slow: c.slow, channel: c.channel, startNs: time.Now().UnixNano()}
	body, err := c.open(ctx)
	<-sem
	if err != nil {
		o.reason = streamclient.Classify(err)
		outcomes <- o
		return
	}
	o.ok, o.upNs = true, time.Now().UnixNano()
	w.mu.Lock()
	w.conns = append(w.conns, c)
	w.mu.Unlock()
	outcomes <- o

	if c.slow {
		c.stallThenDrain(ctx)
		return
	}
	c.read(body)
}

// open dials from this connection's source address, sends the request and
// reads the response headers, all under the connect timeout.
func (c *streamConn) open(ctx context.Context) (io.Reader, error) {
	cfg := &c.w.cfg
	timeout := time.Duration(cfg.ConnectTimeoutMs) * time.Millisecond
	rcvBuf := 0
	if c.slow {
		rcvBuf = cfg.SlowRcvBuf
	}
	d := streamclient.Dialer(timeout, streamclient.SourceIP(c.idx, cfg.SourceIPs), rcvBuf)
	nc, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	_ = nc.SetDeadline(time.Now().Add(timeout))
	if _, err := nc.Write(c.w.reqs[c.channel]); err != nil {
		nc.Close()
		return nil, fmt.Errorf("write request: %w", err)
	}
	br := bufio.NewReaderSize(nc, cfg.ReadBuf)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		nc.Close()
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		nc.Close()
		return nil, fmt.Errorf("content-type %q", ct)
	}
	_ = nc.SetDeadline(time.Time{})
	c.nc = nc
	return resp.Body, nil
}

// read parses the stream until it ends; an end before finish is counted.
func (c *streamConn) read(body io.Reader) {
	w := c.w
	p := sseparse.Parser{
		MaxLine:   256 << 10,
		OnEvent:   c.onEvent,
		OnComment: func([]byte) { w.comments.Add(1) },
	}
	if err := streamclient.Read(body, &p); err != nil {
		w.protocolError(err)
		c.nc.Close()
		return
	}
	if !w.closing.Load() {
		w.closedRead.Add(1)
	}
}

func (c *streamConn) onEvent(ev *sseparse.Event) {
	now := time.Now().UnixNano()
	w := c.w
	if !ev.IsMessage() {
		w.otherEvents.Add(1)
		return
	}
	var m sseparse.Marker
	var err error
	if w.cfg.Strict {
		m, err = sseparse.Strict(ev, c.name)
	} else {
		m, err = sseparse.Quick(ev.Data)
	}
	if err != nil {
		w.protocolError(err)
		return
	}
	start := w.phaseStart.Load()
	if start == 0 || m.SentAtNs < start {
		w.prePhase.Add(1)
		return
	}
	if m.Seq <= c.lastSeq {
		w.duplicates.Add(1)
		return
	}
	c.lastSeq = m.Seq
	lat := now - m.SentAtNs
	sh := &w.shards[c.idx%histShards]
	sh.mu.Lock()
	sh.h.Record(lat)
	sh.mu.Unlock()
	w.seqs.Record(m.Seq, lat)
	w.delivered.Add(1)
}

// stallThenDrain is a slow consumer: it reads nothing until finish, then reads
// (and discards) what is buffered for a bounded time to learn whether the
// server had closed the stream.
func (c *streamConn) stallThenDrain(ctx context.Context) {
	w := c.w
	<-ctx.Done() // finish cancels the worker's connection context
	_ = c.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 32<<10)
	for total := 0; total < 64<<20; {
		n, err := c.nc.Read(buf)
		total += n
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
				w.closedSlow.Add(1)
			}
			return
		}
	}
}

func (w *worker) protocolError(err error) {
	w.protoErrs.Add(1)
	w.sampleOnce.Do(func() { w.sample = err.Error() })
}

// finish stops every connection and waits (bounded) for their goroutines.
func (w *worker) finish() {
	w.closing.Store(true)
	w.mu.Lock()
	conns := w.conns
	w.mu.Unlock()
	// Slow consumers drain first (they learn whether the server closed them),
	// readers are closed right away.
	for _, c := range conns {
		if !c.slow {
			c.nc.Close()
		}
	}
	w.cancelConns()
	done := make(chan struct{})
	go func() { w.readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	for _, c := range conns {
		c.nc.Close()
	}
}

func (w *worker) result() workerMsg {
	var h stats.Hist
	for i := range w.shards {
		w.shards[i].mu.Lock()
		h.Merge(&w.shards[i].h)
		w.shards[i].mu.Unlock()
	}
	snap := h.Snapshot()
	msg := workerMsg{
		Type: "result", Delivered: w.delivered.Load(), ClosedReaders: int(w.closedRead.Load()),
		PrePhase: w.prePhase.Load(), Duplicates: w.duplicates.Load(), OtherEvents: w.otherEvents.Load(),
		Comments: w.comments.Load(), ProtocolErrors: w.protoErrs.Load(), ClosedSlow: int(w.closedSlow.Load()),
		Latency: &snap,
	}
	if msg.ProtocolErrors > 0 {
		msg.ProtocolSample = w.sample
	}
	msg.Seqs = w.seqs.Snapshot()
	return msg
}
