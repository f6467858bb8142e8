package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/procstat"
	"github.com/sse-gateway/sse-gateway/loadtest/internal/result"
	"github.com/sse-gateway/sse-gateway/loadtest/internal/stats"
	"github.com/sse-gateway/sse-gateway/loadtest/internal/workerproc"
)

// workerProc is one worker process as the coordinator sees it.
type workerProc struct {
	*workerproc.Proc
	msgs chan workerMsg // closed when the worker's stdout ends
}

// coordinator runs one load test: workers connect, the coordinator publishes
// and waits for deliveries, then collects and merges the workers' results.
type coordinator struct {
	o        *options
	start    time.Time
	ctx      context.Context
	workers  []*workerProc
	sum      result.Summary
	readers  []int          // established readers per channel, summed over workers
	measured []publishedSeq // the measured publishes, in order

	rssMu  sync.Mutex
	rssMax int64
}

func runCoordinator(o *options) (bool, error) {
	addr, u, err := loopbackHostPort(o.url, "80")
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	c := &coordinator{o: o, start: time.Now(), ctx: ctx}
	c.sum = result.Summary{
		Label: o.label, Target: o.url, StartedAt: c.start.UTC().Format(time.RFC3339),
		Config: result.Config{
			Conns: o.conns, Channels: o.channels, ChannelPrefix: o.channelPrefix, Workers: o.workers,
			SourceIPs: o.sourceIPs, ConnectConcurrency: o.connectConcurrency, ConnectRate: o.connectRate,
			PublishesPerChan: o.publishes, PublishRate: o.publishRate, PublishDurationS: o.publishDuration.Seconds(), RoundSpreadMs: o.roundSpread.Milliseconds(), FillPublishes: o.fillPublishes, FillChannels: o.fillChannels,
			PadBytes: o.pad, SlowFraction: o.slowFraction, SlowRcvBuf: o.slowRcvBuf, Strict: o.strict,
		},
		Problems: []string{},
	}
	c.sum.Generator.GoVersion = runtime.Version()
	c.sum.Generator.LoadAvg1Start, _ = procstat.LoadAvg1()

	runErr := c.run(addr, u.Host)
	if runErr != nil {
		c.problem("run aborted: %v", runErr)
	}
	c.stopWorkers()
	c.sum.Generator.LoadAvg1End, _ = procstat.LoadAvg1()
	c.sum.ElapsedS = time.Since(c.start).Seconds()
	c.sum.OK = runErr == nil && c.judge()
	line, err := json.Marshal(c.sum)
	if err != nil {
		return false, err
	}
	fmt.Fprintf(os.Stdout, "%s\n", line)
	return c.sum.OK, nil
}

func (c *coordinator) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadgen %6.2fs  %s\n", time.Since(c.start).Seconds(), fmt.Sprintf(format, args...))
}

func (c *coordinator) problem(format string, args ...any) {
	p := fmt.Sprintf(format, args...)
	c.sum.Problems = append(c.sum.Problems, p)
	c.logf("problem: %s", p)
}

func (c *coordinator) phase(name string) {
	c.sum.Phases = append(c.sum.Phases, result.PhaseLog{Name: name, AtS: math.Round(time.Since(c.start).Seconds()*1000) / 1000})
}

func (c *coordinator) run(addr, hostHeader string) error {
	o := c.o
	var srv *result.Server
	var cpu0 time.Duration
	if o.serverPID > 0 {
		m, err := procstat.ReadMem(o.serverPID)
		if err != nil {
			return fmt.Errorf("--server-pid: %w", err)
		}
		srv = &result.Server{PID: o.serverPID, RSSBefore: m.RSS}
		c.sum.Server = srv
		c.rssMax = m.RSS
		cpu0, _ = procstat.ReadCPU(o.serverPID)
		stop := c.sampleRSS()
		defer stop()
	}

	// With --pprof-url: a CPU profile of the server while the connections open.
	waitConnectProfile := c.fetchProfileAsync("cpu-connect", fmt.Sprintf("/debug/pprof/profile?seconds=%d", o.pprofConnectSeconds),
		time.Duration(o.pprofConnectSeconds+30)*time.Second)
	if err := c.startWorkers(addr, hostHeader); err != nil {
		return err
	}
	c.phase("workers started")
	if err := c.collectConnected(); err != nil {
		return err
	}
	c.phase("connected")
	waitConnectProfile()
	if srv != nil {
		cpu1, _ := procstat.ReadCPU(o.serverPID)
		srv.CPUConnectS = (cpu1 - cpu0).Seconds()
		if c.sum.Connect.Established > 0 {
			srv.CPUPerConnectUs = srv.CPUConnectS * 1e6 / float64(c.sum.Connect.Established)
		}
	}
	if err := sleepCtx(c.ctx, o.settle); err != nil {
		return err
	}
	if srv != nil {
		if m, err := procstat.ReadMem(o.serverPID); err == nil {
			srv.RSSAfterConnect, srv.Threads = m.RSS, m.Threads
			if n := c.sum.Connect.Established; n > 0 {
				srv.PerConnBytes = float64(m.RSS-srv.RSSBefore) / float64(n)
				srv.PerConnKiB = math.Round(srv.PerConnBytes/1024*100) / 100
			}
			c.logf("server RSS %.1f MiB -> %.1f MiB: %.2f KiB per connection", mib(srv.RSSBefore), mib(m.RSS), srv.PerConnKiB)
		}
	}
	c.phase("settled")
	c.fetchProfile("heap-after-connect", "/debug/pprof/heap", 30*time.Second)
	c.fetchProfile("goroutine-after-connect", "/debug/pprof/goroutine?debug=1", 30*time.Second)

	if o.publishes > 0 || o.publishRate > 0 || o.fillPublishes > 0 {
		if err := c.publishPhase(srv); err != nil {
			return err
		}
	}
	if o.hold > 0 {
		c.logf("holding connections for %v", o.hold)
		if err := sleepCtx(c.ctx, o.hold); err != nil {
			return err
		}
	}
	return c.finishWorkers()
}

// sampleRSS records the server's largest RSS every 100 ms until stop is called.
func (c *coordinator) sampleRSS() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-c.ctx.Done():
				return
			case <-t.C:
				if m, err := procstat.ReadMem(c.o.serverPID); err == nil {
					c.rssMu.Lock()
					c.rssMax = max(c.rssMax, m.RSS)
					c.rssMu.Unlock()
				}
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		c.rssMu.Lock()
		c.sum.Server.RSSMax = c.rssMax
		c.rssMu.Unlock()
	}
}

func (c *coordinator) startWorkers(addr, hostHeader string) error {
	o := c.o
	maxSeq := int64(o.publishes+o.fillPublishes)*int64(o.channels) + int64(math.Round(o.publishRate*o.publishDuration.Seconds()))
	perMille := int(math.Round(o.slowFraction * 1000))
	deadline := time.Now().Add(o.timeout + 10*time.Second) // workers outlive the coordinator's deadline a little, then quit
	for w := 0; w < o.workers; w++ {
		lo, hi := w*o.conns/o.workers, (w+1)*o.conns/o.workers
		cfg := workerConfig{
			Index: w, Addr: addr, URL: o.url, HostHeader: hostHeader, ConnLo: lo, ConnHi: hi,
			Channels: o.channels, ChannelPrefix: o.channelPrefix, SourceIPs: o.sourceIPs,
			SlowPerMille: perMille, SlowRcvBuf: o.slowRcvBuf,
			ConnectConcurrency: max(1, o.connectConcurrency/o.workers), ConnectRate: o.connectRate / float64(o.workers),
			ConnectTimeoutMs: o.connectTimeout.Milliseconds(), Strict: o.strict, MaxSeq: maxSeq,
			DeadlineUnixNs: deadline.UnixNano(), ReadBuf: o.readBuf,
		}
		p, err := workerproc.Start(workerEnv, w, cfg)
		if err != nil {
			return err
		}
		wp := &workerProc{Proc: p, msgs: make(chan workerMsg, 16)}
		c.workers = append(c.workers, wp)
		go wp.readLoop()
	}
	c.logf("%d worker(s) connecting %d streams over %d channel(s) to %s", o.workers, o.conns, o.channels, addr)
	return nil
}

// readLoop hands the worker's answers to msgs until its stdout ends.
func (wp *workerProc) readLoop() {
	defer close(wp.msgs)
	sc := bufio.NewScanner(wp.Out)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var m workerMsg
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			m = workerMsg{Type: "fatal", Error: fmt.Sprintf("bad line from worker: %v", err)}
		}
		wp.msgs <- m
	}
}

// expect waits for the next message of worker wp, which must have type want.
func (c *coordinator) expect(wp *workerProc, want string) (workerMsg, error) {
	select {
	case m, ok := <-wp.msgs:
		if !ok {
			return m, fmt.Errorf("worker %d exited", wp.Index)
		}
		if m.Type != want {
			return m, fmt.Errorf("worker %d: got %q (%s), want %q", wp.Index, m.Type, m.Error, want)
		}
		return m, nil
	case <-c.ctx.Done():
		return workerMsg{}, fmt.Errorf("waiting for worker %d %s: %w", wp.Index, want, c.ctx.Err())
	}
}

func (c *coordinator) broadcast(cmd command) error {
	for _, wp := range c.workers {
		if err := wp.Send(cmd); err != nil {
			return fmt.Errorf("worker %d: %w", wp.Index, err)
		}
	}
	return nil
}

func (c *coordinator) collectConnected() error {
	cs := &c.sum.Connect
	cs.Errors = map[string]int{}
	c.readers = make([]int, c.o.channels)
	var lat stats.Hist
	var first, last int64
	for _, wp := range c.workers {
		m, err := c.expect(wp, "connected")
		if err != nil {
			return err
		}
		cs.Attempted += m.Attempted
		cs.Established += m.Established
		cs.Failed += m.Failed
		cs.Slow += m.Slow
		for k, v := range m.Errors {
			cs.Errors[k] += v
		}
		for ch, n := range m.Readers {
			if ch < len(c.readers) {
				c.readers[ch] += n
			}
		}
		if m.FirstDialNs > 0 && (first == 0 || m.FirstDialNs < first) {
			first = m.FirstDialNs
		}
		last = max(last, m.LastUpNs)
		if m.ConnectLat != nil {
			lat.Merge(stats.FromSnapshot(*m.ConnectLat))
		}
	}
	if first > 0 && last > first {
		cs.ElapsedS = float64(last-first) / 1e9
		cs.RatePerS = math.Round(float64(cs.Established) / cs.ElapsedS)
	}
	cs.Latency = lat.Summary()
	snap := lat.Snapshot()
	cs.LatencyHist = &snap
	c.logf("connected %d/%d (%d failed, %d slow) in %.2fs: %.0f/s, connect p50 %.1f ms p99 %.1f ms",
		cs.Established, c.o.conns, cs.Failed, cs.Slow, cs.ElapsedS, cs.RatePerS, cs.Latency.P50, cs.Latency.P99)
	if cs.Failed > 0 {
		c.logf("connect errors: %v", cs.Errors)
	}
	return nil
}

// progress returns the measured deliveries and the frames sent before the
// measured phase received so far, over all workers.
func (c *coordinator) progress() (delivered, prePhase uint64, err error) {
	if err := c.broadcast(command{Cmd: "progress"}); err != nil {
		return 0, 0, err
	}
	for _, wp := range c.workers {
		m, err := c.expect(wp, "progress")
		if err != nil {
			return 0, 0, err
		}
		delivered += m.Delivered
		prePhase += m.PrePhase
	}
	return delivered, prePhase, nil
}

// finishWorkers asks workers to close their connections and merges results.
func (c *coordinator) finishWorkers() error {
	if err := c.broadcast(command{Cmd: "finish"}); err != nil {
		return err
	}
	var lat stats.Hist
	seqs := map[int64]stats.SeqCount{}
	var res []workerMsg
	for _, wp := range c.workers {
		m, err := c.expect(wp, "result")
		if err != nil {
			return err
		}
		res = append(res, m)
		if m.Latency != nil {
			lat.Merge(stats.FromSnapshot(*m.Latency))
		}
		for _, s := range m.Seqs {
			cur := seqs[s.Seq]
			cur.Count += s.Count
			cur.MaxNs = max(cur.MaxNs, s.MaxNs)
			seqs[s.Seq] = cur
		}
	}
	c.phase("finished")
	p := c.sum.Publish
	if p == nil {
		return nil
	}
	for _, m := range res {
		p.Delivered += m.Delivered
		p.PrePhaseFrames += m.PrePhase
		p.Duplicates += m.Duplicates
		p.OtherEvents += m.OtherEvents
		p.Comments += m.Comments
		p.ProtocolErrors += m.ProtocolErrors
		if p.ProtocolSample == "" {
			p.ProtocolSample = m.ProtocolSample
		}
		p.ClosedReaders += m.ClosedReaders
		p.ClosedSlow += m.ClosedSlow
	}
	if p.Expected > 0 {
		p.DeliveredFraction = float64(p.Delivered) / float64(p.Expected)
	}
	p.Latency = lat.Summary()
	p.LatencyHist = lat.Snapshot()
	var last []int64
	p.LastDeliveryMs = make([]float64, 0, len(c.measured))
	for _, ms := range c.measured {
		s := seqs[ms.seq]
		if s.Count < int64(c.readers[ms.channel]) || s.Count == 0 {
			p.Incomplete++
			p.LastDeliveryMs = append(p.LastDeliveryMs, -1)
			continue
		}
		last = append(last, s.MaxNs)
		p.LastDeliveryMs = append(p.LastDeliveryMs, math.Round(float64(s.MaxNs)/1e3)/1e3)
	}
	var lh stats.Hist
	for _, v := range last {
		lh.Record(v)
	}
	p.LastDelivery = lh.Summary()
	if len(last) > 0 { // few values: exact quantiles
		ms := func(ns int64) float64 { return float64(ns) / 1e6 }
		p.LastDelivery.P50 = ms(stats.ExactQuantile(last, 0.5))
		p.LastDelivery.P90 = ms(stats.ExactQuantile(last, 0.9))
		p.LastDelivery.P99 = ms(stats.ExactQuantile(last, 0.99))
		p.LastDelivery.P999 = ms(stats.ExactQuantile(last, 0.999))
	}
	c.logf("delivered %d/%d (%.4f); latency p50 %.2f p90 %.2f p99 %.2f max %.2f ms; last delivery p50 %.2f p99 %.2f ms; %d incomplete publishes",
		p.Delivered, p.Expected, p.DeliveredFraction, p.Latency.P50, p.Latency.P90, p.Latency.P99, p.Latency.Max,
		p.LastDelivery.P50, p.LastDelivery.P99, p.Incomplete)
	return nil
}

// stopWorkers closes stdin (a worker still running ends by itself), waits a
// bounded time, kills stragglers, and accounts the workers' own cost.
func (c *coordinator) stopWorkers() {
	for _, wp := range c.workers {
		wp.CloseInput()
	}
	for _, wp := range c.workers {
		if wp.Wait(10 * time.Second) {
			c.problem("worker %d did not exit: killed", wp.Index)
		}
		for range wp.msgs { // drain: readLoop ends with the process's stdout
		}
		if ps := wp.Cmd.ProcessState; ps != nil {
			if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
				c.sum.Generator.CPUS += time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
				c.sum.Generator.MaxRSSBytes = max(c.sum.Generator.MaxRSSBytes, ru.Maxrss*1024)
			}
		}
	}
	var self syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &self) == nil {
		c.sum.Generator.CPUS += time.Duration(self.Utime.Nano() + self.Stime.Nano()).Seconds()
	}
	c.sum.Generator.CPUS = math.Round(c.sum.Generator.CPUS*1000) / 1000
}

// judge sets OK: every connection up and, when publishing, every reader got
// every event exactly once with a valid frame.
func (c *coordinator) judge() bool {
	ok := true
	cs := c.sum.Connect
	if cs.Failed > 0 || cs.Established != c.o.conns {
		c.problem("%d of %d connections failed: %v", cs.Failed, c.o.conns, cs.Errors)
		ok = false
	}
	if p := c.sum.Publish; p != nil && p.Publishes > 0 {
		if p.Delivered != p.Expected {
			c.problem("delivered %d of %d expected events (%d publishes incomplete)", p.Delivered, p.Expected, p.Incomplete)
			ok = false
		}
		if p.ProtocolErrors > 0 {
			c.problem("%d protocol errors, e.g. %s", p.ProtocolErrors, p.ProtocolSample)
			ok = false
		}
		if p.Duplicates > 0 {
			c.problem("%d duplicate or out-of-order events", p.Duplicates)
			ok = false
		}
		if p.ClosedReaders > 0 {
			c.problem("the server closed %d reading streams", p.ClosedReaders)
			ok = false
		}
		if p.NoReceivers > 0 {
			c.problem("%d PUBLISH calls reached no Redis subscriber", p.NoReceivers)
			ok = false
		}
	}
	return ok
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
