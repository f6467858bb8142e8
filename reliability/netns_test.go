package reliability

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// netns is a network namespace joined to the root one by a link: the root side has hostIP,
// the namespace side peerIP (and spareIP, for a client that moves to a new address). Clients
// dial from inside it; gateways listen on hostIP.
//
// The link is a veth pair (newNetns), or a pair of TUN devices whose packets the test process
// itself carries across (newImpairedNetns), delaying, dropping and blackholing them as a
// mobile network does: this kernel has no netem (CONFIG_NET_SCH_NETEM is not set, and there
// are no modules to load), so the impairment is done where the packets pass through the test.
type netns struct {
	name, hostIf, peerIf    string
	hostIP, peerIP, spareIP string
	link                    *impairedLink // nil for a veth pair
}

// netnsPreflight fails (never skips) without root or iproute2.
func netnsPreflight(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("%s needs root (it creates a network namespace and a link into it); run it as root", what)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("%s needs iproute2 (ip netns, ip link): %v; run scripts/mobile-deps", what, err)
	}
}

// allocNetns names a namespace, its link and its addresses (a /29 per test in 10.0.0.0/8,
// away from the common 10.0.x and 10.1.x nets, chosen from the pid and a counter so that
// parallel tests and processes do not collide); the namespace and the link are removed when
// the test ends.
func allocNetns(t testing.TB) *netns {
	t.Helper()
	n := int(netnsSeq.Add(1))
	pid := os.Getpid()
	a, b, c := 100+(pid>>8)%150, pid&0xff, (n%31)*8
	ns := &netns{
		name:    fmt.Sprintf("sserel%d-%d", pid, n),
		hostIf:  fmt.Sprintf("srl%d%da", pid%100000, n%100),
		peerIf:  fmt.Sprintf("srl%d%db", pid%100000, n%100),
		hostIP:  fmt.Sprintf("10.%d.%d.%d", a, b, c+1),
		peerIP:  fmt.Sprintf("10.%d.%d.%d", a, b, c+2),
		spareIP: fmt.Sprintf("10.%d.%d.%d", a, b, c+3),
	}
	if out, _ := exec.Command("ip", "-4", "-br", "addr").CombinedOutput(); strings.Contains(string(out), " "+ns.hostIP+"/") ||
		strings.Contains(string(out), " "+ns.peerIP+"/") {
		t.Fatalf("the addresses chosen for the test namespace (%s, %s) are already in use here:\n%s", ns.hostIP, ns.peerIP, out)
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", ns.name).Run()
		_ = exec.Command("ip", "link", "del", ns.hostIf).Run()
	})
	ipRun(t, "netns", "add", ns.name)
	ipRun(t, "-n", ns.name, "link", "set", "lo", "up")
	return ns
}

var netnsSeq atomic.Int32

// ipRun runs `ip args...` and fails the test with its output when it fails.
func ipRun(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s\n(network namespaces need root in a host or a privileged container)", strings.Join(args, " "), err, out)
	}
}

// newNetns creates the namespace joined by a veth pair. It fails (never skips) without root
// or iproute2.
func newNetns(t testing.TB) *netns {
	t.Helper()
	netnsPreflight(t, "the half-open test")
	ns := allocNetns(t)
	for _, args := range [][]string{
		{"link", "add", ns.hostIf, "type", "veth", "peer", "name", ns.peerIf},
		{"link", "set", ns.peerIf, "netns", ns.name},
		{"addr", "add", ns.hostIP + "/29", "dev", ns.hostIf},
		{"link", "set", ns.hostIf, "up"},
		{"-n", ns.name, "addr", "add", ns.peerIP + "/29", "dev", ns.peerIf},
		{"-n", ns.name, "link", "set", ns.peerIf, "up"},
	} {
		ipRun(t, args...)
	}
	return ns
}

// newImpairedNetns creates the namespace joined by a TUN device on each side, with the test
// process carrying the packets between them (see impairedLink); it starts as a clean link.
// Both peerIP and spareIP are the namespace's, so a client can move from one to the other.
func newImpairedNetns(t testing.TB) *netns {
	t.Helper()
	netnsPreflight(t, "the flaky-network tests")
	ns := allocNetns(t)
	host, err := openTUN(ns.hostIf)
	if err != nil {
		t.Fatalf("creating TUN device %s: %v (needs /dev/net/tun: CONFIG_TUN)", ns.hostIf, err)
	}
	var peer *os.File
	if err := ns.run(func() error {
		var err error
		peer, err = openTUN(ns.peerIf)
		return err
	}); err != nil {
		host.Close()
		t.Fatalf("creating TUN device %s in %s: %v", ns.peerIf, ns.name, err)
	}
	ns.link = startImpairedLink(host, peer)
	t.Cleanup(ns.link.stop) // before the namespace is deleted (cleanups run last-in first-out)
	for _, args := range [][]string{
		{"addr", "add", ns.hostIP, "peer", ns.peerIP, "dev", ns.hostIf},
		{"link", "set", ns.hostIf, "up"},
		{"route", "add", ns.spareIP + "/32", "dev", ns.hostIf},
		{"-n", ns.name, "addr", "add", ns.peerIP, "peer", ns.hostIP, "dev", ns.peerIf},
		{"-n", ns.name, "addr", "add", ns.spareIP + "/32", "dev", ns.peerIf},
		{"-n", ns.name, "link", "set", ns.peerIf, "up"},
	} {
		ipRun(t, args...)
	}
	return ns
}

// openTUN creates TUN device name (layer 3, no packet-information header) in the calling
// thread's network namespace; it lives while the file is open.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF: %w", err)
	}
	// Non-blocking, so reads go through the runtime's poller and Close ends them.
	return os.NewFile(uintptr(fd), name), nil
}

// cut takes the namespace side of the link down: packets to the peer are dropped, silently.
func (ns *netns) cut(t testing.TB) {
	t.Helper()
	ipRun(t, "-n", ns.name, "link", "set", ns.peerIf, "down")
}

// run calls fn on a thread that joined the namespace (sockets and devices it creates live
// there); the thread then returns to its own namespace.
func (ns *netns) run(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer own.Close()
		target, err := os.Open("/run/netns/" + ns.name)
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("setns: %w", err)
			return
		}
		err = fn()
		// A thread that cannot go back stays locked, and exits with this goroutine.
		if unix.Setns(int(own.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

// dial connects to addr from inside the namespace.
func (ns *netns) dial(ctx context.Context, addr string) (net.Conn, error) {
	return ns.dialFrom(func() string { return "" })(ctx, addr)
}

// dialFrom returns a dial function that connects from inside the namespace, from the local
// address src() returns at each dial ("" lets the kernel choose).
func (ns *netns) dialFrom(src func() string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.run(func() error {
			d := net.Dialer{Timeout: 5 * time.Second}
			if s := src(); s != "" {
				d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(s)}
			}
			var err error
			c, err = d.DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}
}

// impairedLink carries IPv4 packets between two TUN devices, each direction through its own
// queue, as netem would: a fixed one-way delay, random loss, an outage (everything dropped),
// and blackholed addresses (every packet from or to them dropped: a phone's old address after
// it moved from Wi-Fi to cellular). A full queue drops, like netem's default limit of 1,000
// packets.
type impairedLink struct {
	mu        sync.Mutex
	delay     time.Duration // one way
	loss      float64       // per packet, each direction
	down      bool
	blackhole map[netip.Addr]bool
	dropped   int // packets dropped on purpose (loss, outage, blackhole)
	carried   int

	files  []*os.File
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

const impairedQueue = 1000

type delayedPacket struct {
	due time.Time
	b   []byte
}

func startImpairedLink(host, peer *os.File) *impairedLink {
	ctx, cancel := context.WithCancel(context.Background())
	l := &impairedLink{blackhole: map[netip.Addr]bool{}, files: []*os.File{host, peer}, cancel: cancel}
	for _, dir := range [][2]*os.File{{host, peer}, {peer, host}} {
		q := make(chan delayedPacket, impairedQueue)
		l.wg.Add(2)
		go func() { defer l.wg.Done(); l.read(dir[0], q) }()
		go func() { defer l.wg.Done(); l.deliver(ctx, dir[1], q) }()
	}
	return l
}

// set changes the one-way delay and the loss rate.
func (l *impairedLink) set(delay time.Duration, loss float64) {
	l.mu.Lock()
	l.delay, l.loss = delay, loss
	l.mu.Unlock()
}

// setDown starts (true) or ends an outage.
func (l *impairedLink) setDown(down bool) {
	l.mu.Lock()
	l.down = down
	l.mu.Unlock()
}

// drop blackholes every packet from or to ip.
func (l *impairedLink) drop(ip string) {
	l.mu.Lock()
	l.blackhole[netip.MustParseAddr(ip)] = true
	l.mu.Unlock()
}

// counts returns the packets carried and dropped on purpose so far.
func (l *impairedLink) counts() (carried, dropped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.carried, l.dropped
}

func (l *impairedLink) read(from *os.File, q chan<- delayedPacket) {
	defer close(q)
	buf := make([]byte, 65536)
	for {
		n, err := from.Read(buf)
		if err != nil {
			return // closed by stop
		}
		if n < 20 || buf[0]>>4 != 4 {
			continue // not IPv4 (the kernel's IPv6 chatter): never carried
		}
		src, _ := netip.AddrFromSlice(buf[12:16])
		dst, _ := netip.AddrFromSlice(buf[16:20])
		l.mu.Lock()
		drop := l.down || l.blackhole[src] || l.blackhole[dst] || (l.loss > 0 && rand.Float64() < l.loss)
		delay := l.delay
		if drop {
			l.dropped++
		} else {
			l.carried++
		}
		l.mu.Unlock()
		if drop {
			continue
		}
		p := delayedPacket{due: time.Now().Add(delay), b: append([]byte(nil), buf[:n]...)}
		select {
		case q <- p:
		default: // queue full: dropped, as by netem's limit
		}
	}
}

// deliver writes each packet when it is due; packets keep their order (a fixed delay).
func (l *impairedLink) deliver(ctx context.Context, to *os.File, q <-chan delayedPacket) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for p := range q {
		if d := time.Until(p.due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		if _, err := to.Write(p.b); err != nil && !errors.Is(err, unix.EIO) {
			if errors.Is(err, os.ErrClosed) {
				return
			}
		}
	}
}

// stop closes both devices (which ends the readers, then the deliverers) and waits.
func (l *impairedLink) stop() {
	l.cancel()
	for _, f := range l.files {
		f.Close()
	}
	l.wg.Wait()
}
