package reliability

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// version orders a channel's events as the gateway does: by lastModified, then by the
// FNV-1a 32 hash of the ETag. Clients read it back from the SSE id "<lastModified>-<8 hex>".
type version struct {
	lm  int64
	tie uint32
}

func (v version) less(o version) bool { return v.lm < o.lm || (v.lm == o.lm && v.tie < o.tie) }

func (v version) String() string { return fmt.Sprintf("%d-%08x", v.lm, v.tie) }

// versionOf is the version the gateway gives a payload with this etag and lastModified.
func versionOf(etag string, lm int64) version {
	h := fnv.New32a()
	h.Write([]byte(etag))
	return version{lm: lm, tie: h.Sum32()}
}

// parseID reads an SSE id written by the gateway.
func parseID(id string) (version, bool) {
	lm, tie, ok := strings.Cut(id, "-")
	if !ok || len(tie) != 8 {
		return version{}, false
	}
	n, err := strconv.ParseInt(lm, 10, 64)
	if err != nil {
		return version{}, false
	}
	h, err := strconv.ParseUint(tie, 16, 32)
	if err != nil {
		return version{}, false
	}
	return version{lm: n, tie: uint32(h)}, true
}

// event is one SSE event a client received.
type event struct {
	id       string
	v        version
	channel  string
	at       time.Time
	sentAtNs int64
	conn     int      // which of the client's connections it arrived on (1-based)
	fields   []string // the frame's field names in order, when clientConfig.record
	data     string   // the data field, when clientConfig.record
}

// clientConfig describes one raw SSE client.
type clientConfig struct {
	// channels is the channels query parameter.
	channels string
	// lastID is sent as Last-Event-ID on the first connection; later connections send the
	// id of the newest event received.
	lastID string
	// source is the local IP to connect from (127.0.0.x); "" lets the kernel choose.
	source string
	// target returns the host:port of the attempt-th connection (1-based).
	target func(attempt int) string
	// reconnect makes the client reconnect at once when its stream ends.
	reconnect bool
	// dial, when set, opens the connection instead of a plain dial from source.
	dial func(ctx context.Context, addr string) (net.Conn, error)
	// record keeps every event's field names and data (for the hostile-input tests).
	record bool
	// bufSize is the read buffer (default 4 KiB).
	bufSize int
	// cycleEvery, when > 0, makes the client hang up after every cycleEvery events (and,
	// with reconnect, come back with its Last-Event-ID).
	cycleEvery int
	// idleTimeout, when > 0, ends a stream on which nothing (not even a heartbeat) arrived
	// for this long, as a mobile SDK's read timeout does; with reconnect it comes back.
	idleTimeout time.Duration
	// foreground, when set, says how long each stream is kept before the client hangs up (an
	// app going to the background); background then says how long it waits before it comes
	// back (with reconnect) with its Last-Event-ID.
	foreground, background func() time.Duration
}

// sseClient is an SSE client written against the raw socket: it speaks HTTP/1.1 itself,
// parses the stream as the SSE specification says (CR, LF and CRLF all end a line), and
// records what arrived when, and on which connection.
type sseClient struct {
	n   int
	cfg clientConfig

	mu        sync.Mutex
	events    []event
	newest    map[string]version // per channel
	lastID    string
	conns     int // connections that got a 200 stream
	open      bool
	opened    time.Time
	closes    []time.Time // when each stream that had opened ended
	retries   []int       // retry: values received, ms
	conn      net.Conn    // the current connection, for drop
	cycles    int         // streams the client ended on purpose (cycleEvery, foreground)
	beats     int
	status    int // status of the latest refused request
	body      string
	lastErr   string
	localAddr string
}

// clients starts and owns raw SSE clients; they stop when the test ends.
type clients struct {
	t      testing.TB
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// dial bounds concurrent connection attempts, so that thousands of clients starting
	// at once do not overflow the listen backlog.
	dial chan struct{}
	list []*sseClient
}

func newClients(t testing.TB) *clients {
	ctx, cancel := context.WithCancel(context.Background())
	cs := &clients{t: t, ctx: ctx, cancel: cancel, dial: make(chan struct{}, 64)}
	t.Cleanup(cs.stop)
	return cs
}

// stop closes every client's connection and waits for their goroutines.
func (cs *clients) stop() {
	cs.cancel()
	cs.wg.Wait()
}

// start starts one client.
func (cs *clients) start(cfg clientConfig) *sseClient {
	c := &sseClient{n: len(cs.list), cfg: cfg, newest: map[string]version{}, lastID: cfg.lastID}
	if c.cfg.bufSize == 0 {
		c.cfg.bufSize = 4 << 10
	}
	cs.list = append(cs.list, c)
	cs.wg.Add(1)
	go func() {
		defer cs.wg.Done()
		c.run(cs.ctx, cs.dial)
	}()
	return c
}

// source spreads clients over 8 loopback source addresses, 127.0.0.2-9.
func source(i int) string { return "127.0.0." + strconv.Itoa(2+i%8) }

// fixed is a target that always returns addr.
func fixed(addr string) func(int) string { return func(int) string { return addr } }

func (c *sseClient) run(ctx context.Context, sem chan struct{}) {
	for attempt := 1; ctx.Err() == nil; attempt++ {
		err := c.session(ctx, c.cfg.target(attempt), sem)
		c.mu.Lock()
		if c.open {
			c.open = false
			if ctx.Err() == nil {
				c.closes = append(c.closes, time.Now())
			}
		}
		if err != nil && ctx.Err() == nil {
			c.lastErr = err.Error()
		}
		c.mu.Unlock()
		if !c.cfg.reconnect {
			return
		}
		if errors.Is(err, errCycle) && c.cfg.background != nil {
			select {
			case <-ctx.Done():
			case <-time.After(c.cfg.background()):
			}
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, errCycle) {
			// Refused or reset: do not spin.
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// statusError is a request the gateway refused.
type statusError struct {
	status int
	body   string
}

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.body) }

func (c *sseClient) session(ctx context.Context, addr string, sem chan struct{}) error {
	sem <- struct{}{}
	held := true
	release := func() {
		if held {
			held = false
			<-sem
		}
	}
	defer release()
	dial := c.cfg.dial
	if dial == nil {
		d := net.Dialer{Timeout: 5 * time.Second}
		if c.cfg.source != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(c.cfg.source)}
		}
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	conn, err := dial(ctx, addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	c.mu.Lock()
	lastID := c.lastID
	c.mu.Unlock()
	var req strings.Builder
	req.WriteString("GET " + streamPath(c.cfg.channels) + " HTTP/1.1\r\nHost: " + addr + "\r\nAccept: text/event-stream\r\n")
	if lastID != "" {
		req.WriteString("Last-Event-ID: " + lastID + "\r\n")
	}
	req.WriteString("\r\n")
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(conn, req.String()); err != nil {
		return err
	}
	br := bufio.NewReaderSize(conn, c.cfg.bufSize)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	// No resp.Body.Close: it would drain an endless stream. Closing conn ends it.
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		c.mu.Lock()
		c.status, c.body = resp.StatusCode, string(b)
		c.mu.Unlock()
		return &statusError{resp.StatusCode, string(b)}
	}
	_ = conn.SetDeadline(time.Time{})
	c.mu.Lock()
	c.conns++
	c.open = true
	c.opened = time.Now()
	c.localAddr = conn.LocalAddr().String()
	c.conn = conn
	num := c.conns
	c.mu.Unlock()
	release()
	var body io.Reader = resp.Body
	if c.cfg.idleTimeout > 0 {
		body = &idleReader{r: resp.Body, conn: conn, d: c.cfg.idleTimeout}
		_ = conn.SetReadDeadline(time.Now().Add(c.cfg.idleTimeout))
	}
	var hungUp atomic.Bool
	if c.cfg.foreground != nil {
		stop := time.AfterFunc(c.cfg.foreground(), func() { hungUp.Store(true); conn.Close() })
		defer stop.Stop()
	}
	err = c.read(bufio.NewReaderSize(body, c.cfg.bufSize), num)
	if hungUp.Load() {
		err = errCycle
	}
	if errors.Is(err, errCycle) {
		c.mu.Lock()
		c.cycles++
		c.mu.Unlock()
	}
	return err
}

// idleReader pushes the connection's read deadline d ahead of every read: a stream that
// stays silent for d fails with a timeout.
type idleReader struct {
	r    io.Reader
	conn net.Conn
	d    time.Duration
}

func (r *idleReader) Read(p []byte) (int, error) {
	_ = r.conn.SetReadDeadline(time.Now().Add(r.d))
	return r.r.Read(p)
}

// drop closes the client's current connection, as a phone does with its sockets when it
// leaves a network; with reconnect the client comes back at once (from wherever its dial
// function now dials from).
func (c *sseClient) drop() {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}

// read parses the stream until it ends.
func (c *sseClient) read(br *bufio.Reader, conn int) error {
	var (
		scratch []byte
		id      string
		data    []byte
		hasData bool
		fields  []string
		got     int
	)
	handle := func(line []byte) {
		if len(line) == 0 {
			if hasData {
				c.dispatch(id, data, fields, conn)
				got++
			}
			data, hasData, fields = data[:0], false, nil
			return
		}
		if line[0] == ':' {
			c.mu.Lock()
			c.beats++
			c.mu.Unlock()
			return
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		if c.cfg.record {
			fields = append(fields, string(name))
		}
		switch string(name) {
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				id = string(value)
			}
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		case "retry":
			if ms, err := strconv.Atoi(string(value)); err == nil {
				c.mu.Lock()
				c.retries = append(c.retries, ms)
				c.mu.Unlock()
			}
		}
	}
	for {
		line, err := readLine(br, &scratch)
		if err != nil {
			return err
		}
		// The SSE specification ends a line at CRLF, LF or a lone CR: a CR the gateway let
		// through would be a line break to a browser, so it is one here too.
		line = bytes.TrimSuffix(line, []byte("\r"))
		for {
			i := bytes.IndexByte(line, '\r')
			if i < 0 {
				break
			}
			handle(line[:i])
			line = line[i+1:]
		}
		handle(line)
		if c.cfg.cycleEvery > 0 && got >= c.cfg.cycleEvery {
			return errCycle
		}
	}
}

// errCycle ends a connection the client hangs up on purpose.
var errCycle = errors.New("client hung up on purpose")

// readLine returns the next line without its '\n'; it is valid until the next call.
func readLine(br *bufio.Reader, scratch *[]byte) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == nil {
		return line[:len(line)-1], nil
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		return nil, err
	}
	*scratch = append((*scratch)[:0], line...)
	for {
		line, err = br.ReadSlice('\n')
		*scratch = append(*scratch, line...)
		if err == nil {
			s := *scratch
			return s[:len(s)-1], nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}

func (c *sseClient) dispatch(id string, data []byte, fields []string, conn int) {
	ev := event{id: id, at: time.Now(), conn: conn, channel: stringAfter(data, `"channel":"`), sentAtNs: numberAfter(data, `sentAtNs\":`)}
	ev.v, _ = parseID(id)
	if c.cfg.record {
		ev.fields, ev.data = fields, string(data)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, ev)
	if c.newest[ev.channel].less(ev.v) {
		c.newest[ev.channel] = ev.v
	}
	c.lastID = id
}

// stringAfter returns the JSON string value that follows key in data (no escapes in it).
func stringAfter(data []byte, key string) string {
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return ""
	}
	rest := data[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// numberAfter returns the integer that follows key in data, or 0.
func numberAfter(data []byte, key string) int64 {
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return 0
	}
	var n int64
	for _, b := range data[i+len(key):] {
		if b < '0' || b > '9' {
			break
		}
		n = n*10 + int64(b-'0')
	}
	return n
}

// has reports whether the client received channel's version v or a newer one.
func (c *sseClient) has(channel string, v version) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.newest[channel].less(v)
}

// isOpen reports whether the client's stream is open.
func (c *sseClient) isOpen() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open
}

// snapshot copies the client's events.
func (c *sseClient) snapshot() []event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]event(nil), c.events...)
}

// describe is a one-line summary for failure messages.
func (c *sseClient) describe() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for _, e := range c.events[max(0, len(c.events)-6):] {
		ids = append(ids, fmt.Sprintf("%s@conn%d", e.id, e.conn))
	}
	return fmt.Sprintf("client %d (%s from %s): open=%v conns=%d events=%d last=[%s] status=%d %q err=%q",
		c.n, c.cfg.channels, c.localAddr, c.open, c.conns, len(c.events), strings.Join(ids, " "), c.status, c.body, c.lastErr)
}

// waitOpen waits until every client in list has its stream open.
func waitOpen(t testing.TB, timeout time.Duration, list []*sseClient) {
	t.Helper()
	var bad *sseClient
	waitFor(t, timeout, func() string {
		return fmt.Sprintf("not every client has an open stream; first one without: %s", bad.describe())
	}, func() bool {
		for _, c := range list {
			if !c.isOpen() {
				bad = c
				return false
			}
		}
		return true
	})
}

// waitHave waits until every client in list has channel's version v (or newer).
func waitHave(t testing.TB, timeout time.Duration, list []*sseClient, channel string, v version) {
	t.Helper()
	missing := func() (int, *sseClient) {
		n := 0
		var first *sseClient
		for _, c := range list {
			if !c.has(channel, v) {
				if first == nil {
					first = c
				}
				n++
			}
		}
		return n, first
	}
	waitFor(t, timeout, func() string {
		n, first := missing()
		return fmt.Sprintf("%d of %d clients never received %s on %s; e.g. %s", n, len(list), v, channel, first.describe())
	}, func() bool { n, _ := missing(); return n == 0 })
}
