package reliability

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// netns is a network namespace joined to the root one by a veth pair: the root side has
// hostIP, the namespace side peerIP. Taking the namespace side down drops every packet
// without any FIN or RST: the peer is simply gone, as a phone that left coverage.
type netns struct {
	name, hostIf, peerIf string
	hostIP, peerIP       string
}

// newNetns creates the namespace and the veth pair, removed when the test ends. It fails
// (never skips) without root or iproute2.
func newNetns(t testing.TB) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("the half-open test needs root (it creates a network namespace and a veth pair); run it as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("the half-open test needs iproute2 (ip netns, ip link): %v", err)
	}
	pid := os.Getpid()
	// A /30 per process in 10.0.0.0/8, away from the common 10.0.x and 10.1.x nets.
	a, b := 100+(pid>>8)%150, pid&0xff
	ns := &netns{
		name:   fmt.Sprintf("sserel%d", pid),
		hostIf: fmt.Sprintf("srl%da", pid%10000000),
		peerIf: fmt.Sprintf("srl%db", pid%10000000),
		hostIP: fmt.Sprintf("10.%d.%d.1", a, b),
		peerIP: fmt.Sprintf("10.%d.%d.2", a, b),
	}
	if out, _ := exec.Command("ip", "-4", "-br", "addr").CombinedOutput(); strings.Contains(string(out), fmt.Sprintf("10.%d.%d.", a, b)) {
		t.Fatalf("the address range 10.%d.%d.0/30 chosen for the test namespace is already in use here:\n%s", a, b, out)
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", ns.name).Run()
		_ = exec.Command("ip", "link", "del", ns.hostIf).Run()
	})
	for _, args := range [][]string{
		{"netns", "add", ns.name},
		{"link", "add", ns.hostIf, "type", "veth", "peer", "name", ns.peerIf},
		{"link", "set", ns.peerIf, "netns", ns.name},
		{"addr", "add", ns.hostIP + "/30", "dev", ns.hostIf},
		{"link", "set", ns.hostIf, "up"},
		{"-n", ns.name, "addr", "add", ns.peerIP + "/30", "dev", ns.peerIf},
		{"-n", ns.name, "link", "set", ns.peerIf, "up"},
		{"-n", ns.name, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s\n(the half-open test needs network namespaces and veth: root in a host or privileged container)", strings.Join(args, " "), err, out)
		}
	}
	return ns
}

// cut takes the namespace side of the link down: packets to the peer are dropped, silently.
func (ns *netns) cut(t testing.TB) {
	t.Helper()
	if out, err := exec.Command("ip", "-n", ns.name, "link", "set", ns.peerIf, "down").CombinedOutput(); err != nil {
		t.Fatalf("ip link set down: %v\n%s", err, out)
	}
}

// dial connects to addr from inside the namespace: the socket is created by a thread that
// joined the namespace, so it lives there; the thread then returns to its own namespace.
func (ns *netns) dial(ctx context.Context, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, err}
			return
		}
		defer own.Close()
		target, err := os.Open("/run/netns/" + ns.name)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, fmt.Errorf("setns: %w", err)}
			return
		}
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		// A thread that cannot go back stays locked, and exits with this goroutine.
		if unix.Setns(int(own.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- result{c, err}
	}()
	r := <-done
	return r.c, r.err
}

// TestHalfOpenClient is scenario 5 (half-open): a client in a network namespace whose link
// is then taken down never sends a FIN or RST; its stream would stay open forever if
// nothing wrote to it. With --heartbeat 1s --write-timeout 2s the heartbeat stays
// unacknowledged and the kernel fails the socket (TCP_USER_TIMEOUT = the write timeout):
// the gateway must close the stream (stream_closes_total grows, streams_open drops), count
// it "slow", while a client on a healthy link keeps its stream and still receives a publish.
func TestHalfOpenClient(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	r := startRedis(t)
	g := startGateway(t, "halfopen", r.URL(), "--addr", ns.hostIP+":0", "--heartbeat", "1s", "--write-timeout", "2s")
	cs := newClients(t)
	const ch = "halfopen"
	remote := cs.start(clientConfig{channels: ch, target: fixed(g.Addr), dial: ns.dial})
	local := cs.start(clientConfig{channels: ch, target: fixed(g.Addr)})
	waitOpen(t, 10*time.Second, []*sseClient{remote, local})
	// The namespaced client really streams: it receives heartbeats.
	waitFor(t, 10*time.Second, func() string { return "the namespaced client got no heartbeat: " + remote.describe() }, func() bool {
		remote.mu.Lock()
		defer remote.mu.Unlock()
		return remote.beats >= 2
	})
	m := g.metrics()
	closes0 := m.get("sse_gateway_stream_closes_total")
	if open := m.get("sse_gateway_streams_open"); open != 2 {
		t.Fatalf("streams_open = %v before the cut, want 2", open)
	}

	ns.cut(t)
	cut := time.Now()
	var m1 metricSet
	waitFor(t, 30*time.Second, func() string {
		return fmt.Sprintf("the half-open stream was not closed: streams_open=%v closes=%v", m1.get("sse_gateway_streams_open"), m1.get("sse_gateway_stream_closes_total"))
	}, func() bool {
		m1 = g.metrics()
		return m1.get("sse_gateway_streams_open") == 1 && m1.get("sse_gateway_stream_closes_total") == closes0+1
	})
	found := time.Since(cut)
	reason := "?"
	for _, rs := range []string{"client", "slow", "drain", "revoked", "lifetime"} {
		if m1.get("sse_gateway_stream_closes_total", `reason="`+rs+`"`) > m.get("sse_gateway_stream_closes_total", `reason="`+rs+`"`) {
			reason = rs
		}
	}
	if reason != "slow" {
		t.Errorf("the half-open stream was counted %q, want \"slow\" (its writes could not complete: the peer is gone, not hung up)", reason)
	}
	if !remote.isOpen() {
		t.Errorf("the namespaced client saw its stream end, so the connection was not half-open: %s", remote.describe())
	}
	etag := `"h1"`
	lm := time.Now().UnixMilli()
	r.publishRaw(ch, payload(etag, lm, 0, false))
	waitHave(t, 10*time.Second, []*sseClient{local}, ch, versionOf(etag, lm))
	t.Logf("link to a streaming client cut (no FIN/RST): the gateway closed its stream %v later (heartbeat 1s, write timeout 2s), counted with reason %q; the healthy client kept its stream and got a publish",
		found.Round(time.Millisecond), reason)
}
