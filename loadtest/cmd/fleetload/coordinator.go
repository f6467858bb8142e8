package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/procstat"
	"github.com/sse-gateway/sse-gateway/loadtest/internal/stats"
	"github.com/sse-gateway/sse-gateway/loadtest/internal/workerproc"
)

// workerProc is one worker process and the scanner over its answers.
type workerProc struct {
	*workerproc.Proc
	out *bufio.Scanner
}

// coordinator runs the phases; it owns the workers and the publisher.
type coordinator struct {
	o       *options
	ctx     context.Context
	workers []*workerProc
	rdb     *redis.Client
	lastMod []int64 // per channel: strictly increasing lastModified (ms)
	newest  []int32 // per channel: the newest round published on it
	round   int     // rounds published so far
	sum     *summary
	start   time.Time
}

func (c *coordinator) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s fleetload: %s\n", time.Since(c.start).Round(100*time.Millisecond), fmt.Sprintf(format, args...))
}

func (c *coordinator) problem(format string, args ...any) {
	p := fmt.Sprintf(format, args...)
	c.sum.Problems = append(c.sum.Problems, p)
	c.logf("PROBLEM: %s", p)
}

// run is the whole measurement; it reports whether every check passed.
func run(o *options) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	c := &coordinator{o: o, ctx: ctx, start: time.Now(), lastMod: make([]int64, o.channels), newest: make([]int32, o.channels)}
	for i := range c.newest {
		c.newest[i] = -1
	}
	p, err := plan(o.streams, o.channels, o.zipfS)
	if err != nil {
		return false, err
	}
	per := perChannel(p, o.channels)
	c.sum = &summary{Streams: o.streams, Channels: o.channels, Gateways: len(o.targets), Workers: o.workers,
		ZipfS: o.zipfS, Largest: per[0], Smallest: slices.Min(per), ChannelsUpTo2: countUpTo(per, 2), Drain: o.drain.String()}
	for _, n := range per {
		if n >= 1000 {
			c.sum.ChannelsOver1000++
		}
	}

	opt, err := redis.ParseURL(o.redisURL)
	if err != nil {
		return false, fmt.Errorf("--redis-url: %w", err)
	}
	opt.PoolSize = 2
	c.rdb = redis.NewClient(opt)
	defer c.rdb.Close()
	if err := c.rdb.Ping(ctx).Err(); err != nil {
		return false, fmt.Errorf("redis ping: %w", err)
	}
	if err := c.startWorkers(); err != nil {
		return false, err
	}
	defer c.stopWorkers()
	if err := c.phases(); err != nil {
		return false, err
	}
	c.sum.OK = len(c.sum.Problems) == 0
	if o.jsonOut != "" {
		b, _ := json.MarshalIndent(c.sum, "", " ")
		if err := os.WriteFile(o.jsonOut, b, 0o644); err != nil {
			return false, err
		}
	}
	if o.svgOut != "" {
		if err := os.WriteFile(o.svgOut, []byte(plot(c.sum)), 0o644); err != nil {
			return false, err
		}
	}
	report(os.Stdout, c.sum, o)
	return c.sum.OK, nil
}

func countUpTo(per []int, n int) int {
	k := 0
	for _, v := range per {
		if v <= n {
			k++
		}
	}
	return k
}

func (c *coordinator) startWorkers() error {
	o := c.o
	deadline := time.Now().Add(o.timeout + 30*time.Second).UnixNano()
	for i := range o.workers {
		cfg := workerConfig{
			Index: i, Targets: o.targets, Path: "/event-stream?key=" + o.key,
			Lo: i * o.streams / o.workers, Hi: (i + 1) * o.streams / o.workers,
			Channels: o.channels, ZipfS: o.zipfS, Streams: o.streams, ChannelPrefix: o.channelPrefix,
			SourceIPs: o.sourceIPs, ConnectConcurrency: o.connectConcurrency,
			ConnectTimeoutMs: o.connectTimeout.Milliseconds(), MaxRounds: o.maxRounds(), DeadlineUnixNs: deadline,
		}
		p, err := workerproc.Start(workerEnv, i, cfg)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(p.Out)
		sc.Buffer(make([]byte, 64<<10), 256<<20)
		c.workers = append(c.workers, &workerProc{Proc: p, out: sc})
	}
	return nil
}

// maxRounds bounds the rounds of a run: measured, after the shed (one per 500 ms), during
// the drain, and one after.
func (o *options) maxRounds() int {
	return o.rounds + int(o.roundTimeout/(500*time.Millisecond)) + int((o.drain+o.reconnectTimeout)/o.drainPublishEvery) + 3
}

// all sends cmd to every worker and returns their answers, in worker order.
func (c *coordinator) all(cmd command) ([]workerMsg, error) {
	for _, wp := range c.workers {
		if err := wp.Send(cmd); err != nil {
			return nil, fmt.Errorf("worker %d: %w", wp.Index, err)
		}
	}
	out := make([]workerMsg, len(c.workers))
	for i, wp := range c.workers {
		if !wp.out.Scan() {
			return nil, fmt.Errorf("worker %d ended (%v) during %s", wp.Index, wp.out.Err(), cmd.Cmd)
		}
		if err := json.Unmarshal(wp.out.Bytes(), &out[i]); err != nil {
			return nil, fmt.Errorf("worker %d: %w", wp.Index, err)
		}
		if out[i].Type == "fatal" {
			return nil, fmt.Errorf("worker %d: %s", wp.Index, out[i].Error)
		}
	}
	return out, nil
}

func (c *coordinator) stopWorkers() {
	for _, wp := range c.workers {
		wp.CloseInput()
	}
	for _, wp := range c.workers {
		wp.Wait(10 * time.Second)
	}
}

// publishRound publishes once on every channel, in one pipeline.
func (c *coordinator) publishRound() error {
	r := c.round
	pipe := c.rdb.Pipeline()
	for ch := range c.o.channels {
		now := time.Now()
		lm := max(now.UnixMilli(), c.lastMod[ch]+1)
		c.lastMod[ch] = lm
		seq := int64(r*c.o.channels + ch + 1)
		payload := `{"etag":"\"lt-` + strconv.FormatInt(seq, 10) + `\"","lastModified":` + strconv.FormatInt(lm, 10) +
			`,"sentAtNs":` + strconv.FormatInt(now.UnixNano(), 10) + `}`
		pipe.Publish(c.ctx, c.o.redisPrefix+c.o.channelPrefix+strconv.Itoa(ch), payload)
	}
	if _, err := pipe.Exec(c.ctx); err != nil {
		return fmt.Errorf("redis publish: %w", err)
	}
	for ch := range c.newest {
		c.newest[ch] = int32(r)
	}
	c.round++
	return nil
}

// progress sums the workers' progress.
func (c *coordinator) progress() (rounds []int64, down, live int, err error) {
	msgs, err := c.all(command{Cmd: "progress"})
	if err != nil {
		return nil, 0, 0, err
	}
	rounds = make([]int64, c.o.maxRounds())
	for _, m := range msgs {
		for i, n := range m.RoundCounts {
			rounds[i] += n
		}
		down += m.Down
		live += m.Live
	}
	return rounds, down, live, nil
}

// waitRound waits until round r reached want streams, at most --round-timeout.
func (c *coordinator) waitRound(r int, want int64) (int64, error) {
	deadline := time.Now().Add(c.o.roundTimeout)
	for {
		rounds, _, _, err := c.progress()
		if err != nil {
			return 0, err
		}
		if rounds[r] >= want || time.Now().After(deadline) {
			return rounds[r], nil
		}
		if !sleepCtx(c.ctx, 20*time.Millisecond) {
			return 0, c.ctx.Err()
		}
	}
}

// gatewayCPU sums the gateways' CPU time (those still running).
func (c *coordinator) gatewayCPU() time.Duration {
	var t time.Duration
	for _, pid := range c.o.pids {
		if d, err := procstat.ReadCPU(pid); err == nil {
			t += d
		}
	}
	return t
}

// exited reports whether pid is gone (or a zombie its parent has not reaped).
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

func (c *coordinator) phases() error {
	o, s := c.o, c.sum
	n := len(o.targets)
	// Before: each gateway's RSS and the host's socket figures.
	rss0 := make([]int64, n)
	for i, pid := range o.pids {
		m, err := procstat.ReadMem(pid)
		if err != nil {
			return fmt.Errorf("gateway %s: %w", o.targets[i], err)
		}
		rss0[i] = m.RSS
	}
	sock0, err := procstat.ReadSockstat()
	if err != nil {
		return err
	}
	slab0, err := procstat.ReadSlab()
	if err != nil {
		return err
	}
	cpu0 := c.gatewayCPU()

	c.logf("connecting %d streams (%d channels, largest %d, %d with at most 2) to %d gateways from %d workers",
		o.streams, o.channels, s.Largest, s.ChannelsUpTo2, n, o.workers)
	msgs, err := c.all(command{Cmd: "connect"})
	if err != nil {
		return err
	}
	var lat stats.Hist
	s.PerGateway = make([]gatewayResult, n)
	s.ConnectErrors = map[string]int{}
	var first, last int64
	for _, m := range msgs {
		s.Established += m.Established
		s.Failed += m.Failed
		for k, v := range m.Errors {
			s.ConnectErrors[k] += v
		}
		for i, v := range m.PerTarget {
			s.PerGateway[i].Streams += v
		}
		if first == 0 || (m.FirstDialNs != 0 && m.FirstDialNs < first) {
			first = m.FirstDialNs
		}
		last = max(last, m.LastUpNs)
		if m.ConnectLat != nil {
			lat.Merge(stats.FromSnapshot(*m.ConnectLat))
		}
	}
	s.ConnectS = float64(last-first) / 1e9
	s.ConnectLatency = lat.Summary()
	c.logf("connected %d of %d in %.1fs (%d failed: %v)", s.Established, o.streams, s.ConnectS, s.Failed, s.ConnectErrors)
	if s.Failed > 0 {
		c.problem("%d of %d streams did not open: %v", s.Failed, o.streams, s.ConnectErrors)
	}
	cpu1 := c.gatewayCPU()
	s.GatewayCPUConnectS = (cpu1 - cpu0).Seconds()
	if s.Established > 0 {
		s.CPUPerConnectUs = s.GatewayCPUConnectS * 1e6 / float64(s.Established)
	}
	sleepCtx(c.ctx, o.settle)
	sock1, err := procstat.ReadSockstat()
	if err != nil {
		return err
	}
	s.SockBefore, s.SockAfter = sock0, sock1
	if slab1, err := procstat.ReadSlab(); err == nil {
		s.SlabBefore, s.SlabAfter = slab0, slab1
	}
	for i, pid := range o.pids {
		m, err := procstat.ReadMem(pid)
		if err != nil {
			return fmt.Errorf("gateway %s: %w", o.targets[i], err)
		}
		g := &s.PerGateway[i]
		g.Addr, g.RSSBefore, g.RSSAfter = o.targets[i], rss0[i], m.RSS
		if g.Streams > 0 {
			g.RSSPerStream = float64(m.RSS-rss0[i]) / float64(g.Streams)
		}
	}

	// Measured rounds: every channel once per round, wait until every stream has it.
	if _, err := c.all(command{Cmd: "phase", Round: 0}); err != nil {
		return err
	}
	cpuP0 := c.gatewayCPU()
	var redis0 time.Duration
	if o.redisPID > 0 {
		if redis0, err = procstat.ReadCPU(o.redisPID); err != nil {
			return err
		}
	}
	recv0, _, err := sumOver(c.ctx, o.targets, "sse_gateway_events_received_total")
	if err != nil {
		return err
	}
	var delivered int64
	for r := 0; r < o.rounds; r++ {
		if r > 0 {
			sleepCtx(c.ctx, o.publishGap)
		}
		if err := c.publishRound(); err != nil {
			return err
		}
		got, err := c.waitRound(r, int64(s.Established))
		if err != nil {
			return err
		}
		delivered += got
		if got < int64(s.Established) {
			c.problem("round %d reached %d of %d streams within %v", r+1, got, s.Established, o.roundTimeout)
		}
	}
	s.GatewayCPUPublishS = (c.gatewayCPU() - cpuP0).Seconds()
	recv1, _, err := sumOver(c.ctx, o.targets, "sse_gateway_events_received_total")
	if err != nil {
		return err
	}
	s.RedisMessagesPerPublishPerGateway = (recv1 - recv0) / float64(o.rounds*o.channels*n)
	if o.redisPID > 0 {
		redis1, err := procstat.ReadCPU(o.redisPID)
		if err != nil {
			return err
		}
		s.RedisCPUPublishS = (redis1 - redis0).Seconds()
		s.RedisCPUPerMessageUs = s.RedisCPUPublishS * 1e6 / (recv1 - recv0)
	}
	if delivered > 0 {
		s.CPUPerDeliveryUs = s.GatewayCPUPublishS * 1e6 / float64(delivered)
	}
	c.logf("%d rounds delivered (%d deliveries, gateway CPU %.2fs)", o.rounds, delivered, s.GatewayCPUPublishS)

	// Room for the drained gateway's streams on the others, then SIGTERM the last gateway.
	if o.shedEvery > 0 {
		msgs, err := c.all(command{Cmd: "shed", ShedEvery: o.shedEvery})
		if err != nil {
			return err
		}
		s.DrainStreams = 0
		for _, m := range msgs {
			s.DrainStreams += m.Live
		}
	} else {
		s.DrainStreams = s.Established
	}
	// A gateway notices a closed idle stream when it next writes to it: publish until the
	// fleet's open-stream count is down to the streams still live (bounded), so the drain
	// starts from the room the shed made.
	shedStart := time.Now()
	for {
		open, _, err := sumOver(c.ctx, o.targets, "sse_gateway_streams_open")
		if err != nil {
			return err
		}
		if int(open) == s.DrainStreams {
			s.ShedNoticedS = time.Since(shedStart).Seconds()
			break
		}
		if time.Since(shedStart) > o.roundTimeout {
			c.problem("after shedding, the gateways still count %.0f open streams, %d are live", open, s.DrainStreams)
			break
		}
		if err := c.publishRound(); err != nil {
			return err
		}
		sleepCtx(c.ctx, 500*time.Millisecond)
	}
	c.logf("the gateways count %d open streams %.1fs after the shed", s.DrainStreams, s.ShedNoticedS)
	drained := o.pids[n-1]
	s.DrainedGateway = o.targets[n-1]
	for i := n - 1; i < o.streams; i += n {
		if !isShed(i, n, o.shedEvery) {
			s.DrainedStreams++
		}
	}
	c.logf("%d streams live; SIGTERM to gateway %s (pid %d)", s.DrainStreams, s.DrainedGateway, drained)
	drainRound := c.round
	t0 := time.Now()
	s.SigtermNs = t0.UnixNano()
	if err := syscall.Kill(drained, syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM %d: %w", drained, err)
	}
	// Publish on every channel every --drain-publish-every until the gateway exited and
	// every stream is back, then once more so the last publish is after the last reconnect.
	next := t0
	for {
		if time.Now().After(next) {
			if err := c.publishRound(); err != nil {
				return err
			}
			next = next.Add(o.drainPublishEvery)
		}
		_, down, _, err := c.progress()
		if err != nil {
			return err
		}
		gone := exited(drained)
		if gone && s.GatewayExitS == 0 {
			s.GatewayExitS = time.Since(t0).Seconds()
		}
		if gone && down == 0 && time.Since(t0) > o.drain {
			break
		}
		if time.Since(t0) > o.reconnectTimeout || c.round >= o.maxRounds()-1 {
			c.problem("after %v: drained gateway exited=%v, %d streams not back", time.Since(t0).Round(time.Millisecond), gone, down)
			break
		}
		sleepCtx(c.ctx, 50*time.Millisecond)
	}
	s.DrainRounds = c.round - drainRound
	c.logf("drain over after %.1fs (%d rounds published during it); checking every stream has its channel's newest", time.Since(t0).Seconds(), s.DrainRounds)
	// Every stream must hold its channel's newest publish (delivered live, or replayed on
	// reconnect for its Last-Event-ID); give the last publish its fan-out time first.
	deadline := time.Now().Add(o.roundTimeout)
	for {
		msgs, err := c.all(command{Cmd: "check", Newest: c.newest})
		if err != nil {
			return err
		}
		s.DrainMissed, s.DrainMissedSample = 0, ""
		for _, m := range msgs {
			s.DrainMissed += m.Missed
			if s.DrainMissedSample == "" {
				s.DrainMissedSample = m.MissedSample
			}
		}
		if s.DrainMissed == 0 || time.Now().After(deadline) {
			break
		}
		sleepCtx(c.ctx, 100*time.Millisecond)
	}
	if s.DrainMissed > 0 {
		c.problem("%d streams lack their channel's newest event after the drain (%s)", s.DrainMissed, s.DrainMissedSample)
	}

	// One measured round on the survivors.
	if _, err := c.all(command{Cmd: "phase", Round: c.round}); err != nil {
		return err
	}
	after := c.round
	if err := c.publishRound(); err != nil {
		return err
	}
	got, err := c.waitRound(after, int64(s.DrainStreams))
	if err != nil {
		return err
	}
	if got < int64(s.DrainStreams) {
		c.problem("the round after the drain reached %d of %d streams", got, s.DrainStreams)
	}
	for i, pid := range o.pids[:n-1] {
		if m, err := procstat.ReadMem(pid); err == nil {
			s.PerGateway[i].RSSAfterDrain = m.RSS
		}
	}
	return c.collect(after)
}

// collect merges the workers' results into the summary.
func (c *coordinator) collect(afterRound int) error {
	o, s := c.o, c.sum
	msgs, err := c.all(command{Cmd: "finish"})
	if err != nil {
		return err
	}
	hists := make([]stats.Hist, o.maxRounds())
	seqN := map[int64]int64{}
	seqMax := map[int64]int64{}
	s.ReconnectErrors = map[string]int{}
	for _, m := range msgs {
		for i, h := range m.RoundLat {
			hists[i].Merge(stats.FromSnapshot(h))
		}
		for _, q := range m.Seqs {
			seqN[q.Seq] += q.Count
			seqMax[q.Seq] = max(seqMax[q.Seq], q.MaxNs)
		}
		for _, t := range m.ClosesNs {
			s.ClosesMs = append(s.ClosesMs, float64(t-s.SigtermNs)/1e6)
		}
		for _, t := range m.ReconnectsNs {
			s.ReconnectsMs = append(s.ReconnectsMs, float64(t-s.SigtermNs)/1e6)
		}
		for k, v := range m.ReconnectErrors {
			s.ReconnectErrors[k] += v
		}
		s.ResumedWithID += m.ResumedWithID
		s.GaveUp += m.GaveUp
		s.Duplicates += m.Duplicates
		s.ProtocolErrors += m.ProtocolErrors
		if s.ProtocolSample == "" {
			s.ProtocolSample = m.ProtocolSample
		}
	}
	slices.Sort(s.ClosesMs)
	slices.Sort(s.ReconnectsMs)
	s.Closes, s.Reconnects = len(s.ClosesMs), len(s.ReconnectsMs)
	if n := len(s.ReconnectsMs); n > 0 {
		nb := int(s.ReconnectsMs[n-1]/100) + 1
		s.ClosesPer100ms, s.ReconnectsPer100ms = buckets(s.ClosesMs, nb), buckets(s.ReconnectsMs, nb)
	}
	per, _ := plan(o.streams, o.channels, o.zipfS)
	readers := perChannel(per, o.channels)
	// Per round: latency quantiles and the slowest publish; per publish: complete or not.
	measured := append(seqRange(0, o.rounds), afterRound)
	var all stats.Hist
	for _, r := range measured {
		want := s.Established
		if r == afterRound {
			want = s.DrainStreams
		}
		rr := roundResult{Round: r + 1, AfterDrain: r == afterRound, Streams: want, Latency: hists[r].Summary()}
		for ch := range o.channels {
			seq := int64(r*o.channels + ch + 1)
			rr.LastMs = max(rr.LastMs, float64(seqMax[seq])/1e6)
			wantCh := int64(readers[ch])
			if r == afterRound {
				wantCh = 0 // shed streams: compare the round's total instead
			}
			if wantCh > 0 && seqN[seq] < wantCh {
				rr.Incomplete++
			}
			if ch == 0 {
				rr.LargestLastMs = float64(seqMax[seq]) / 1e6
			}
		}
		if rr.Latency.N < uint64(want) {
			rr.Incomplete++
		}
		if rr.Incomplete > 0 {
			c.problem("round %d: %d publishes did not reach all their streams", rr.Round, rr.Incomplete)
		}
		all.Merge(&hists[r])
		s.Rounds = append(s.Rounds, rr)
	}
	s.LatencyHist = all.Snapshot()
	if len(s.ClosesMs) > 0 {
		s.CloseSpreadS = (s.ClosesMs[len(s.ClosesMs)-1] - s.ClosesMs[0]) / 1e3
	}
	if s.GaveUp > 0 {
		c.problem("%d streams found no gateway to reconnect to", s.GaveUp)
	}
	if s.ProtocolErrors > 0 {
		c.problem("%d protocol errors (%s)", s.ProtocolErrors, s.ProtocolSample)
	}
	if len(s.ClosesMs) != s.DrainedStreams {
		c.problem("%d streams were closed by a server, want the drained gateway's %d", len(s.ClosesMs), s.DrainedStreams)
	}
	if len(s.ReconnectsMs) != len(s.ClosesMs) {
		c.problem("%d reconnects for %d closes", len(s.ReconnectsMs), len(s.ClosesMs))
	}
	if s.ResumedWithID != len(s.ReconnectsMs) {
		c.problem("%d of %d reconnects sent Last-Event-ID", s.ResumedWithID, len(s.ReconnectsMs))
	}
	// The closes must be spread over --drain, not a burst: at least half the window.
	if d := o.drain.Seconds(); d >= 1 && s.CloseSpreadS < d/2 {
		c.problem("the drain's closes spanned %.1fs of --drain %v", s.CloseSpreadS, o.drain)
	}
	return nil
}

func seqRange(lo, hi int) []int {
	var out []int
	for i := lo; i < hi; i++ {
		out = append(out, i)
	}
	return out
}
