package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/procstat"
	"github.com/sse-gateway/sse-gateway/loadtest/internal/result"
)

// publishedSeq is one publish: its sequence number (the "lt-<seq>" etag) and channel.
type publishedSeq struct {
	seq     int64
	channel int
}

// publisher PUBLISHes the generator's payloads to Redis. Not safe for concurrent use.
type publisher struct {
	rdb         *redis.Client
	redisPrefix string
	chPrefix    string
	pad         string  // `,"pad":"xxx"` or "": added while filling
	lastMod     []int64 // per channel: strictly increasing lastModified (ms)
	seq         int64
}

// payload is the inner JSON; sentAtNs is the publisher's clock, which the
// workers (same host, same clock) subtract from their receive time.
func (p *publisher) payload(seq, lastModified, sentAtNs int64, padded bool) string {
	pad := ""
	if padded {
		pad = p.pad
	}
	return `{"etag":"\"lt-` + strconv.FormatInt(seq, 10) + `\"","lastModified":` + strconv.FormatInt(lastModified, 10) +
		`,"sentAtNs":` + strconv.FormatInt(sentAtNs, 10) + pad + `}`
}

// publish sends one event to each of chans (repeats allowed) in one pipeline
// and reports how many reached no Redis subscriber.
func (p *publisher) publish(ctx context.Context, chans []int, padded bool) ([]publishedSeq, int, error) {
	pipe := p.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(chans))
	out := make([]publishedSeq, len(chans))
	for i, ch := range chans {
		p.seq++
		now := time.Now()
		lm := max(now.UnixMilli(), p.lastMod[ch]+1)
		p.lastMod[ch] = lm
		cmds[i] = pipe.Publish(ctx, p.redisPrefix+channelName(p.chPrefix, ch), p.payload(p.seq, lm, now.UnixNano(), padded))
		out[i] = publishedSeq{seq: p.seq, channel: ch}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, 0, fmt.Errorf("redis publish: %w", err)
	}
	none := 0
	for _, c := range cmds {
		if c.Val() == 0 {
			none++
		}
	}
	return out, none, nil
}

// publishPhase runs the optional fill, then the measured rounds: each round
// publishes one event per channel and waits until every reader has it (or
// --round-timeout), so the next round starts on a quiet server.
func (c *coordinator) publishPhase(srv *result.Server) error {
	o := c.o
	opt, err := redis.ParseURL(o.redisURL)
	if err != nil {
		return fmt.Errorf("--redis-url: %w", err)
	}
	opt.PoolSize = 2
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	pctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	err = rdb.Ping(pctx).Err()
	cancel()
	if err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	pub := &publisher{rdb: rdb, redisPrefix: o.redisPrefix, chPrefix: o.channelPrefix, lastMod: make([]int64, o.channels)}
	if o.pad > 0 {
		pub.pad = `,"pad":"` + strings.Repeat("x", o.pad) + `"`
	}
	p := &result.Publish{Rounds: o.publishes}
	c.sum.Publish = p

	if o.fillPublishes > 0 {
		c.logf("fill: %d publishes on each of %d channel(s), %d bytes padding", o.fillPublishes, o.fillChannels, o.pad)
		var batch []int
		for i := 0; i < o.fillPublishes; i++ {
			for ch := 0; ch < o.fillChannels; ch++ {
				batch = append(batch, ch)
			}
			if len(batch) >= 200 || i == o.fillPublishes-1 {
				if _, _, err := pub.publish(c.ctx, batch, true); err != nil {
					return err
				}
				p.FillPublishes += len(batch)
				batch = batch[:0]
			}
		}
		// Wait until the fill stops arriving (no new frame for 1 s: delivered, or
		// stuck behind the slow consumers), at most --fill-wait, so the measured
		// phase does not compete with the fill's fan-out.
		deadline := time.Now().Add(o.fillWait)
		var last uint64
		quietSince := time.Now()
		for time.Now().Before(deadline) {
			if err := sleepCtx(c.ctx, 100*time.Millisecond); err != nil {
				return err
			}
			_, pre, err := c.progress()
			if err != nil {
				return err
			}
			if pre != last {
				last, quietSince = pre, time.Now()
			} else if time.Since(quietSince) >= time.Second {
				break
			}
		}
		c.logf("fill settled: %d frames received by readers", last)
		c.phase("fill done")
	}
	if o.publishes == 0 && o.publishRate == 0 {
		return nil
	}

	// Frames sent before this instant (replay on connect, fill) are not measured.
	if err := c.broadcast(command{Cmd: "phase", StartNs: time.Now().UnixNano()}); err != nil {
		return err
	}
	for _, wp := range c.workers {
		if _, err := c.expect(wp, "ack"); err != nil {
			return err
		}
	}
	waitProfile := c.fetchProfileAsync("cpu-publish", fmt.Sprintf("/debug/pprof/profile?seconds=%d", o.pprofSeconds),
		time.Duration(o.pprofSeconds+30)*time.Second)
	defer waitProfile()

	var cpu0 time.Duration
	if srv != nil {
		cpu0, _ = procstat.ReadCPU(o.serverPID)
	}
	phaseStart := time.Now()
	var delivered uint64
	if o.publishRate > 0 {
		delivered, err = c.ratePhase(pub, p)
	} else {
		delivered, err = c.roundsPhase(pub, p)
	}
	if err != nil {
		return err
	}
	p.ElapsedS = time.Since(phaseStart).Seconds()
	c.phase("published")
	if srv != nil {
		cpu1, _ := procstat.ReadCPU(o.serverPID)
		srv.CPUPublishS = (cpu1 - cpu0).Seconds()
		if delivered > 0 {
			srv.CPUPerDeliveryUs = srv.CPUPublishS * 1e6 / float64(delivered)
		}
		if p.Publishes > 0 {
			srv.CPUPerPublishUs = srv.CPUPublishS * 1e6 / float64(p.Publishes)
		}
		if m, err := procstat.ReadMem(o.serverPID); err == nil {
			srv.RSSAfterPublish = m.RSS
		}
		c.logf("server CPU %.3fs over %d deliveries (%d publishes): %.2f µs per delivery, %.2f µs per publish",
			srv.CPUPublishS, delivered, p.Publishes, srv.CPUPerDeliveryUs, srv.CPUPerPublishUs)
	}
	return nil
}

// roundsPhase publishes --publishes rounds of one event per channel, each
// round waiting until every reader has it (or --round-timeout), so the next
// round starts on a quiet server. It returns the measured deliveries.
func (c *coordinator) roundsPhase(pub *publisher, p *result.Publish) (uint64, error) {
	o := c.o
	all := make([]int, o.channels)
	for ch := range all {
		all[ch] = ch
	}
	var delivered uint64
	var err error
	stalled := 0
	for r := 0; r < o.publishes; r++ {
		if r > 0 {
			if err := sleepCtx(c.ctx, o.publishGap); err != nil {
				return 0, err
			}
		}
		if err := c.publishRound(pub, p, all); err != nil {
			return 0, err
		}
		deadline := time.Now().Add(o.roundTimeout)
		for {
			delivered, _, err = c.progress()
			if err != nil {
				return 0, err
			}
			if delivered >= p.Expected {
				break
			}
			if time.Now().After(deadline) {
				stalled++
				break
			}
			if err := sleepCtx(c.ctx, 5*time.Millisecond); err != nil {
				return 0, err
			}
		}
	}
	if stalled > 0 {
		c.problem("%d of %d rounds not fully delivered within --round-timeout %v", stalled, o.publishes, o.roundTimeout)
	}
	return delivered, nil
}

// ratePhase publishes at --publish-rate per second for --publish-duration,
// channel after channel (publish k goes to channel k % channels, so each
// channel gets rate/channels per second and each publish fans out on its
// own, as a bulk change touching many environments does), then waits up to
// --round-timeout for the last ones to arrive. Publishes due in the same
// millisecond go in one pipeline; each carries its own send time. It returns
// the measured deliveries.
func (c *coordinator) ratePhase(pub *publisher, p *result.Publish) (uint64, error) {
	o := c.o
	total := int(math.Round(o.publishRate * o.publishDuration.Seconds()))
	p.TargetRatePerS = o.publishRate
	c.logf("publishing %d events at %.0f/s over %d channel(s)", total, o.publishRate, o.channels)
	start := time.Now()
	next := 0
	var batch []int
	for next < total {
		due := min(total, int(o.publishRate*time.Since(start).Seconds())+1)
		if due-next > maxRateBatch {
			due = next + maxRateBatch
		}
		batch = batch[:0]
		for ; next < due; next++ {
			batch = append(batch, next%o.channels)
		}
		if len(batch) > 0 {
			seqs, none, err := pub.publish(c.ctx, batch, false)
			if err != nil {
				return 0, err
			}
			p.Publishes += len(seqs)
			p.NoReceivers += none
			for _, s := range seqs {
				c.measured = append(c.measured, s)
				p.Expected += uint64(c.readers[s.channel])
			}
		}
		if next < total {
			// Sleep until the next publish is due (at least a scheduler tick).
			wait := time.Until(start.Add(time.Duration(float64(next) / o.publishRate * float64(time.Second))))
			if err := sleepCtx(c.ctx, max(wait, 200*time.Microsecond)); err != nil {
				return 0, err
			}
		}
	}
	if el := time.Since(start).Seconds(); el > 0 {
		p.RatePerS = math.Round(float64(p.Publishes) / el)
	}
	if p.RatePerS < 0.95*o.publishRate {
		c.problem("published at %.0f/s, below the asked %.0f/s (the generator or Redis could not keep up)", p.RatePerS, o.publishRate)
	}
	deadline := time.Now().Add(o.roundTimeout)
	for {
		delivered, _, err := c.progress()
		if err != nil {
			return 0, err
		}
		if delivered >= p.Expected {
			return delivered, nil
		}
		if time.Now().After(deadline) {
			c.problem("%d of %d events not delivered within --round-timeout %v after the last publish", p.Expected-delivered, p.Expected, o.roundTimeout)
			return delivered, nil
		}
		if err := sleepCtx(c.ctx, 5*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// maxRateBatch bounds one pipeline of a rate phase: a generator that fell
// behind catches up in bounded steps rather than one huge burst.
const maxRateBatch = 500

// publishRound publishes one event per channel: in one pipeline, or spread
// evenly over --round-spread so each publish fans out on its own.
func (c *coordinator) publishRound(pub *publisher, p *result.Publish, chans []int) error {
	batches := [][]int{chans}
	var step time.Duration
	if c.o.roundSpread > 0 && len(chans) > 1 {
		batches = batches[:0]
		for _, ch := range chans {
			batches = append(batches, []int{ch})
		}
		step = c.o.roundSpread / time.Duration(len(chans))
	}
	start := time.Now()
	for i, b := range batches {
		if step > 0 {
			if err := sleepCtx(c.ctx, time.Until(start.Add(time.Duration(i)*step))); err != nil {
				return err
			}
		}
		seqs, none, err := pub.publish(c.ctx, b, false)
		if err != nil {
			return err
		}
		p.Publishes += len(seqs)
		p.NoReceivers += none
		for _, s := range seqs {
			c.measured = append(c.measured, s)
			p.Expected += uint64(c.readers[s.channel])
		}
	}
	return nil
}

// fetchProfile saves one pprof endpoint of the server (with --pprof-url).
func (c *coordinator) fetchProfile(name, path string, timeout time.Duration) {
	c.fetchProfileAsync(name, path, timeout)()
}

// fetchProfileAsync starts fetching a pprof endpoint and returns a function
// that waits for it (a no-op without --pprof-url).
func (c *coordinator) fetchProfileAsync(name, path string, timeout time.Duration) (wait func()) {
	if c.o.pprofURL == "" {
		return func() {}
	}
	ext := ".pb.gz"
	if strings.Contains(path, "debug=") {
		ext = ".txt"
	}
	file := filepath.Join(c.o.pprofDir, sanitize(c.o.label)+name+ext)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(c.ctx, timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.o.pprofURL, "/")+path, nil)
		if err != nil {
			done <- err
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			done <- fmt.Errorf("status %d", resp.StatusCode)
			return
		}
		f, err := os.Create(file)
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		done <- err
	}()
	return func() {
		if err := <-done; err != nil {
			c.problem("profile %s: %v", name, err)
			return
		}
		c.sum.Profiles = append(c.sum.Profiles, file)
	}
}

func sanitize(label string) string {
	if label == "" {
		return ""
	}
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' {
			return '_'
		}
		return r
	}, label) + "-"
}
