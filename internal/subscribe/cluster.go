package subscribe

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/internal/redisconn"
)

const (
	// topologyTimeout bounds one CLUSTER NODES round trip while the subscriber looks for a
	// node: short, as the next node is tried after it.
	topologyTimeout = time.Second
	// suspectFor is how long a node that failed a request is avoided when choosing where to
	// subscribe or probe. A frozen node still looks healthy in CLUSTER NODES until the
	// cluster's node timeout passes; meanwhile every request to it waits out a timeout.
	suspectFor = 10 * time.Second
)

// clusterView is the subscriber's picture of a Redis Cluster: which nodes are healthy
// masters, and a client per node it talks to directly (its subscription, its probes). The
// subscriber chooses its node itself, rather than letting go-redis pick one at random from
// a slot map that may still name a dead node, so that after a failure it goes straight to
// a live master and knows which node its subscription is on.
type clusterView struct {
	cc *redis.ClusterClient

	mu       sync.Mutex
	nodes    []clusterNode            // guarded by mu: the last CLUSTER NODES answer
	clients  map[string]*redis.Client // guarded by mu: per node address, closed by close
	suspects map[string]time.Time     // guarded by mu: nodes to avoid, until when
}

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	id, addr string
	master   bool
	healthy  bool // not failed or suspected failed, connected, not in a handshake
	slots    [][2]int
}

func newClusterView(cc *redis.ClusterClient) *clusterView {
	return &clusterView{cc: cc, clients: make(map[string]*redis.Client), suspects: make(map[string]time.Time)}
}

// client returns the client for the node at addr, creating it on first use.
func (v *clusterView) client(addr string) *redis.Client {
	v.mu.Lock()
	defer v.mu.Unlock()
	c := v.clients[addr]
	if c == nil {
		c = redis.NewClient(redisconn.NodeOptions(v.cc, addr))
		v.clients[addr] = c
	}
	return c
}

// close closes every node client.
func (v *clusterView) close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	for addr, c := range v.clients {
		_ = c.Close()
		delete(v.clients, addr)
	}
}

// suspect records that the node at addr failed a request: it is avoided for a while.
func (v *clusterView) suspect(addr string) {
	if addr == "" {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.suspects[addr] = time.Now().Add(suspectFor)
}

// suspectedLocked reports whether addr is to be avoided now, forgetting it once its time is up.
func (v *clusterView) suspectedLocked(addr string, now time.Time) bool {
	until, ok := v.suspects[addr]
	if ok && !now.Before(until) {
		delete(v.suspects, addr)
		return false
	}
	return ok
}

// refresh asks the cluster for its nodes: the healthy nodes of the last answer, then the
// seed addresses, each in random order and suspects last, until one answers. It also asks
// go-redis to reload its slot map, so that commands follow the same change.
func (v *clusterView) refresh(ctx context.Context) error {
	v.cc.ReloadState(ctx)
	now := time.Now()
	var try, later []string
	seen := map[string]bool{}
	add := func(addr string) {
		if seen[addr] {
			return
		}
		seen[addr] = true
		if v.suspectedLocked(addr, now) {
			later = append(later, addr)
		} else {
			try = append(try, addr)
		}
	}
	v.mu.Lock()
	for _, i := range rand.Perm(len(v.nodes)) {
		if v.nodes[i].healthy {
			add(v.nodes[i].addr)
		}
	}
	seeds := v.cc.Options().Addrs
	for _, i := range rand.Perm(len(seeds)) {
		add(seeds[i])
	}
	v.mu.Unlock()
	var lastErr error
	for _, addr := range append(try, later...) {
		cctx, cancel := context.WithTimeout(ctx, topologyTimeout)
		s, err := v.client(addr).ClusterNodes(cctx).Result()
		cancel()
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				return ctx.Err()
			}
			v.suspect(addr)
			continue
		}
		nodes, err := parseClusterNodes(s, addr)
		if err != nil {
			lastErr = err
			continue
		}
		v.mu.Lock()
		v.nodes = nodes
		v.mu.Unlock()
		return nil
	}
	if lastErr == nil {
		lastErr = errors.New("no cluster node address known")
	}
	return fmt.Errorf("cluster topology: %w", lastErr)
}

// pickMaster returns the address of a healthy master serving slots, chosen at random so that
// a fleet spreads its subscriptions: one that is neither avoid nor suspected if there is
// one, else one that is not avoid, else any.
func (v *clusterView) pickMaster(avoid string) (string, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := time.Now()
	var best, other, any []string
	for _, n := range v.nodes {
		if !n.master || !n.healthy || len(n.slots) == 0 {
			continue
		}
		any = append(any, n.addr)
		if n.addr == avoid {
			continue
		}
		if v.suspectedLocked(n.addr, now) {
			other = append(other, n.addr)
		} else {
			best = append(best, n.addr)
		}
	}
	for _, cands := range [][]string{best, other, any} {
		if len(cands) > 0 {
			return cands[rand.IntN(len(cands))], true
		}
	}
	return "", false
}

// owner returns the healthy master that serves slot, by the last answer.
func (v *clusterView) owner(slot int) (string, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, n := range v.nodes {
		if !n.master || !n.healthy {
			continue
		}
		for _, r := range n.slots {
			if slot >= r[0] && slot <= r[1] {
				return n.addr, true
			}
		}
	}
	return "", false
}

// someSlot returns a slot the node at addr serves, by the last answer.
func (v *clusterView) someSlot(addr string) (int, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, n := range v.nodes {
		if n.addr == addr && n.master && len(n.slots) > 0 {
			return n.slots[0][0], true
		}
	}
	return 0, false
}

// parseClusterNodes reads CLUSTER NODES. from is the address the answer came from: a node
// that does not know its own address yet reports ":0" for itself.
func parseClusterNodes(s, from string) ([]clusterNode, error) {
	var out []clusterNode
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		addr, _, _ = strings.Cut(addr, ",") // ip:port@cport,hostname
		flags := "," + f[2] + ","
		if strings.Contains(flags, ",myself,") && strings.HasPrefix(addr, ":") {
			addr = from
		}
		n := clusterNode{
			id:     f[0],
			addr:   addr,
			master: strings.Contains(flags, ",master,"),
			healthy: !strings.Contains(flags, ",fail,") && !strings.Contains(flags, ",fail?,") &&
				!strings.Contains(flags, ",handshake,") && !strings.Contains(flags, ",noaddr,") &&
				f[7] == "connected",
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being imported or migrated
			}
			lo, hi, ok := strings.Cut(r, "-")
			if !ok {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("cluster nodes: bad slot range %q", r)
			}
			n.slots = append(n.slots, [2]int{a, b})
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("cluster nodes: empty answer")
	}
	return out, nil
}
