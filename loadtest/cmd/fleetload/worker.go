package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/sseparse"
	"github.com/sse-gateway/sse-gateway/loadtest/internal/stats"
	"github.com/sse-gateway/sse-gateway/loadtest/internal/streamclient"
	"github.com/sse-gateway/sse-gateway/loadtest/internal/workerproc"
)

// Reconnect bounds: a stream a server closed tries at most maxAttempts gateways; between
// attempts it waits the server's retry: delay (first) or backoff.
const (
	maxAttempts = 30
	backoff     = 200 * time.Millisecond
)

// worker holds a share of the streams, reconnects those a server closes, and measures
// what they receive.
type worker struct {
	cfg     workerConfig
	chanOf  []int32 // stream index -> channel, for the whole plan
	streams []*stream

	measureFrom atomic.Int64 // rounds >= this are measured (latency); -1 none yet
	closing     atomic.Bool  // set at finish: ends after it are ours
	down        atomic.Int64
	duplicates  atomic.Uint64
	protoErrs   atomic.Uint64

	roundCount []atomic.Int64
	roundLat   []struct {
		mu sync.Mutex
		h  stats.Hist
	}
	seqs *stats.Seqs

	mu        sync.Mutex // guards the fields below
	closes    []int64
	reconns   []int64
	resumed   int
	reconnErr map[string]int
	gaveUp    int
	sample    string

	wg sync.WaitGroup // one per stream goroutine
}

// stream is one SSE stream and the goroutine that keeps it open.
type stream struct {
	w       *worker
	idx     int
	channel int
	target  int // owned by the goroutine
	lastSeq atomic.Int64
	lastID  []byte // owned by the goroutine
	retryMs int64  // owned by the goroutine: the server's last retry: value

	mu   sync.Mutex // guards nc and shed
	nc   net.Conn
	shed bool
}

func runWorker() error {
	var cfg workerConfig
	in, err := workerproc.ReadConfig(os.Stdin, 4<<20, &cfg)
	if err != nil {
		return err
	}
	chanOf, err := plan(cfg.Streams, cfg.Channels, cfg.ZipfS)
	if err != nil {
		return err
	}
	w := &worker{cfg: cfg, chanOf: chanOf, reconnErr: map[string]int{}}
	w.measureFrom.Store(-1)
	w.roundCount = make([]atomic.Int64, cfg.MaxRounds)
	w.roundLat = make([]struct {
		mu sync.Mutex
		h  stats.Hist
	}, cfg.MaxRounds)
	w.seqs = stats.NewSeqs(int64(cfg.MaxRounds * cfg.Channels))
	out := json.NewEncoder(os.Stdout)

	ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, cfg.DeadlineUnixNs))
	defer cancel()
	cmds := workerproc.Commands[command](ctx, in)
	streamCtx, stopStreams := context.WithCancel(ctx)
	defer stopStreams()
	for {
		var c command
		var ok bool
		select {
		case <-ctx.Done():
			w.finish(stopStreams)
			return fmt.Errorf("worker %d: deadline reached", cfg.Index)
		case c, ok = <-cmds:
		}
		if !ok { // the coordinator went away
			w.finish(stopStreams)
			return nil
		}
		var msg workerMsg
		switch c.Cmd {
		case "connect":
			msg = w.connectAll(streamCtx)
		case "phase":
			w.measureFrom.Store(int64(c.Round))
			msg = workerMsg{Type: "ack"}
		case "progress":
			msg = w.progress()
		case "shed":
			w.shed(c.ShedEvery)
			msg = w.progress()
		case "check":
			msg = w.check(c.Newest)
		case "finish":
			w.finish(stopStreams)
			return out.Encode(w.result())
		default:
			msg = workerMsg{Type: "fatal", Error: "unknown command " + c.Cmd}
		}
		if err := out.Encode(msg); err != nil {
			return fmt.Errorf("worker: write: %w", err)
		}
	}
}

// connectAll opens this worker's streams, each to gateway idx % len(targets), with
// bounded concurrency, and reports once every first attempt ended.
func (w *worker) connectAll(ctx context.Context) workerMsg {
	cfg := w.cfg
	type outcome struct {
		err           error
		target        int
		startNs, upNs int64
	}
	outcomes := make(chan outcome, cfg.Hi-cfg.Lo)
	sem := make(chan struct{}, max(1, cfg.ConnectConcurrency))
	for i := cfg.Lo; i < cfg.Hi; i++ {
		s := &stream{w: w, idx: i, channel: int(w.chanOf[i]), target: i % len(cfg.Targets)}
		s.lastSeq.Store(0)
		w.streams = append(w.streams, s)
		sem <- struct{}{}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			start := time.Now().UnixNano()
			body, err := s.open(ctx, s.target)
			<-sem
			outcomes <- outcome{err: err, target: s.target, startNs: start, upNs: time.Now().UnixNano()}
			if err == nil {
				s.keep(ctx, body)
			}
		}()
	}
	msg := workerMsg{Type: "connected", Errors: map[string]int{}, PerTarget: make([]int, len(cfg.Targets))}
	var lat stats.Hist
	for range cfg.Hi - cfg.Lo {
		o := <-outcomes // each goroutine sends one, bounded by the connect timeout
		if msg.FirstDialNs == 0 || o.startNs < msg.FirstDialNs {
			msg.FirstDialNs = o.startNs
		}
		if o.err != nil {
			msg.Failed++
			msg.Errors[streamclient.Classify(o.err)]++
			continue
		}
		msg.Established++
		msg.PerTarget[o.target]++
		lat.Record(o.upNs - o.startNs)
		msg.LastUpNs = max(msg.LastUpNs, o.upNs)
	}
	snap := lat.Snapshot()
	msg.ConnectLat = &snap
	return msg
}

// keep reads the stream until it ends; when a server ends it, it reconnects to another
// gateway (as a client behind DNS round-robin would) with Last-Event-ID, after the
// server's retry: delay.
func (s *stream) keep(ctx context.Context, body io.Reader) {
	w := s.w
	for {
		s.read(body)
		if w.closing.Load() || s.isShed() || ctx.Err() != nil {
			return
		}
		now := time.Now().UnixNano()
		w.down.Add(1)
		w.mu.Lock()
		w.closes = append(w.closes, now)
		w.mu.Unlock()
		wait := time.Duration(s.retryMs) * time.Millisecond
		if wait <= 0 {
			wait = time.Second
		}
		var err error
		body = nil
		closedBy := s.target
		for attempt := 0; attempt < maxAttempts && body == nil; attempt++ {
			if !sleepCtx(ctx, wait) {
				return
			}
			wait = backoff
			// Another address than the one that closed us, at random.
			n := len(w.cfg.Targets)
			s.target = (s.target + 1 + rand.IntN(max(1, n-1))) % n
			body, err = s.open(ctx, s.target)
			if err != nil && s.isShed() {
				return
			}
			if err != nil {
				from := " (from another gateway)"
				if s.target == closedBy {
					from = " (from the gateway that closed it)"
				}
				w.mu.Lock()
				w.reconnErr[streamclient.Classify(err)+from]++
				w.mu.Unlock()
			}
		}
		if body == nil {
			w.mu.Lock()
			w.gaveUp++
			w.mu.Unlock()
			return
		}
		w.down.Add(-1)
		w.mu.Lock()
		w.reconns = append(w.reconns, time.Now().UnixNano())
		if len(s.lastID) > 0 {
			w.resumed++
		}
		w.mu.Unlock()
	}
}

func (s *stream) isShed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shed
}

// open dials gateway t from this stream's source address, sends the request (with
// Last-Event-ID once it has seen an event) and reads the response headers, all under
// the connect timeout.
func (s *stream) open(ctx context.Context, t int) (io.Reader, error) {
	cfg := &s.w.cfg
	timeout := time.Duration(cfg.ConnectTimeoutMs) * time.Millisecond
	d := streamclient.Dialer(timeout, streamclient.SourceIP(s.idx, cfg.SourceIPs), 0)
	nc, err := d.DialContext(ctx, "tcp", cfg.Targets[t])
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	_ = nc.SetDeadline(time.Now().Add(timeout))
	var req bytes.Buffer
	fmt.Fprintf(&req, "GET %s&channels=%s%d HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nUser-Agent: sse-gateway-fleetload\r\n",
		cfg.Path, cfg.ChannelPrefix, s.channel, cfg.Targets[t])
	if len(s.lastID) > 0 {
		fmt.Fprintf(&req, "Last-Event-ID: %s\r\n", s.lastID)
	}
	req.WriteString("\r\n")
	if _, err := nc.Write(req.Bytes()); err != nil {
		nc.Close()
		return nil, fmt.Errorf("write request: %w", err)
	}
	br := bufio.NewReaderSize(nc, 1024)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		// The body says which refusal it is (draining, at its limit): keep its start.
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 60))
		nc.Close()
		return nil, fmt.Errorf("status %d %s", resp.StatusCode, strings.Join(strings.Fields(string(b)), " "))
	}
	_ = nc.SetDeadline(time.Time{})
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shed {
		nc.Close()
		return nil, errors.New("shed")
	}
	s.nc = nc
	return resp.Body, nil
}

// read parses the stream until it ends, then closes it.
func (s *stream) read(body io.Reader) {
	p := sseparse.Parser{
		MaxLine: 64 << 10,
		OnEvent: s.onEvent,
		OnRetry: func(ms int64) { s.retryMs = ms },
	}
	if err := streamclient.Read(body, &p); err != nil {
		s.w.protocolError(err)
	}
	s.nc.Close()
}

func (s *stream) onEvent(ev *sseparse.Event) {
	now := time.Now().UnixNano()
	w := s.w
	if !ev.IsMessage() {
		return
	}
	m, err := sseparse.Quick(ev.Data)
	if err != nil {
		w.protocolError(err)
		return
	}
	s.lastID = append(s.lastID[:0], ev.ID...)
	if m.Seq <= s.lastSeq.Load() {
		w.duplicates.Add(1)
		return
	}
	s.lastSeq.Store(m.Seq)
	if !w.seqs.Covers(m.Seq) {
		w.protocolError(fmt.Errorf("seq %d out of range", m.Seq))
		return
	}
	round := int((m.Seq - 1) / int64(w.cfg.Channels))
	if int((m.Seq-1)%int64(w.cfg.Channels)) != s.channel {
		w.protocolError(fmt.Errorf("seq %d is not of channel %d", m.Seq, s.channel))
		return
	}
	w.roundCount[round].Add(1)
	if from := w.measureFrom.Load(); from < 0 || int64(round) < from {
		return
	}
	lat := now - m.SentAtNs
	rl := &w.roundLat[round]
	rl.mu.Lock()
	rl.h.Record(lat)
	rl.mu.Unlock()
	w.seqs.Record(m.Seq, lat)
}

func (w *worker) protocolError(err error) {
	w.protoErrs.Add(1)
	w.mu.Lock()
	if w.sample == "" {
		w.sample = err.Error()
	}
	w.mu.Unlock()
}

func (w *worker) progress() workerMsg {
	msg := workerMsg{Type: "progress", Down: int(w.down.Load()), RoundCounts: make([]int64, len(w.roundCount))}
	for i := range w.roundCount {
		msg.RoundCounts[i] = w.roundCount[i].Load()
	}
	for _, s := range w.streams {
		if !s.isShed() {
			msg.Live++
		}
	}
	return msg
}

// shed closes for good every every-th stream of each gateway (see isShed).
func (w *worker) shed(every int) {
	for _, s := range w.streams {
		if !isShed(s.idx, len(w.cfg.Targets), every) {
			continue
		}
		s.mu.Lock()
		s.shed = true
		if s.nc != nil {
			s.nc.Close()
		}
		s.mu.Unlock()
	}
}

// check counts live streams whose newest event is not their channel's newest publish.
func (w *worker) check(newest []int32) workerMsg {
	msg := workerMsg{Type: "checked"}
	for _, s := range w.streams {
		if s.isShed() {
			continue
		}
		want := int64(newest[s.channel])*int64(w.cfg.Channels) + int64(s.channel) + 1
		if got := s.lastSeq.Load(); got != want {
			msg.Missed++
			if msg.MissedSample == "" {
				msg.MissedSample = fmt.Sprintf("stream %d (channel %d, gateway %s): newest seq %d, want %d", s.idx, s.channel, w.cfg.Targets[s.target], got, want)
			}
		}
	}
	return msg
}

// finish closes every stream and waits (bounded) for their goroutines.
func (w *worker) finish(stop context.CancelFunc) {
	w.closing.Store(true)
	stop()
	for _, s := range w.streams {
		s.mu.Lock()
		if s.nc != nil {
			s.nc.Close()
		}
		s.mu.Unlock()
	}
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

func (w *worker) result() workerMsg {
	w.mu.Lock()
	defer w.mu.Unlock()
	msg := workerMsg{
		Type: "result", ClosesNs: w.closes, ReconnectsNs: w.reconns, ResumedWithID: w.resumed,
		ReconnectErrors: w.reconnErr, GaveUp: w.gaveUp, Duplicates: w.duplicates.Load(),
		ProtocolErrors: w.protoErrs.Load(), ProtocolSample: w.sample,
	}
	for i := range w.roundLat {
		w.roundLat[i].mu.Lock()
		msg.RoundLat = append(msg.RoundLat, w.roundLat[i].h.Snapshot())
		w.roundLat[i].mu.Unlock()
	}
	msg.Seqs = w.seqs.Snapshot()
	return msg
}

// sleepCtx sleeps d and reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// isShed reports whether stream i (dealt round-robin to n gateways) is shed: every
// every-th of each gateway's own streams, so that every gateway loses the same share
// (i%every alone would spare the gateways whose index has the wrong parity when n and
// every share a factor).
func isShed(i, n, every int) bool {
	return every > 0 && (i/n)%every == every-1
}
