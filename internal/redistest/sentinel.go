package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the name the test sentinels monitor their master under.
const SentinelMaster = "gwmaster"

// DownAfter is the sentinels' down-after-milliseconds: a master that does not answer for this
// long is subjectively down; a failover follows within about a second on loopback.
const DownAfter = time.Second

// Sentinels is a private Sentinel deployment on loopback: a master, its replicas and the
// sentinels that watch them, every process killed when the test ends.
type Sentinels struct {
	t testing.TB
	// Data are the master and its replicas, master first as started; roles change with
	// failovers, a Server keeps its port.
	Data []*Server
	// Sentinels are the sentinel processes.
	Sentinels []*Server
	// Password is the data nodes' requirepass ("" for none); SentinelPassword the
	// sentinels' own.
	Password, SentinelPassword string
}

// StartSentinels starts a master with replicas and sentinels (quorum: a majority of them)
// and waits until every sentinel knows every replica and the other sentinels.
func StartSentinels(t testing.TB, replicas, sentinels int, password, sentinelPassword string) *Sentinels {
	t.Helper()
	d := &Sentinels{t: t, Password: password, SentinelPassword: sentinelPassword}
	dataBase := func(port int, dir string) []string {
		a := []string{"--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0"}
		if password != "" {
			a = append(a, "--requirepass", password, "--masterauth", password)
		}
		return a
	}
	master := startServer(t, dataBase, func() int { return FreePort(t) }, nil)
	d.Data = append(d.Data, master)
	for range replicas {
		r := startServer(t, dataBase, func() int { return FreePort(t) }, []string{"--replicaof", "127.0.0.1", strconv.Itoa(master.Port())})
		d.Data = append(d.Data, r)
	}
	quorum := sentinels/2 + 1
	for range sentinels {
		base := func(port int, dir string) []string {
			conf := filepath.Join(dir, "sentinel.conf")
			if _, err := os.Stat(conf); err != nil {
				// Written once: the sentinel rewrites it with what it learns, and a
				// restarted sentinel starts from that.
				var b strings.Builder
				fmt.Fprintf(&b, "sentinel monitor %s 127.0.0.1 %d %d\n", SentinelMaster, master.Port(), quorum)
				fmt.Fprintf(&b, "sentinel down-after-milliseconds %s %d\n", SentinelMaster, DownAfter.Milliseconds())
				fmt.Fprintf(&b, "sentinel failover-timeout %s 10000\n", SentinelMaster)
				fmt.Fprintf(&b, "sentinel parallel-syncs %s 1\n", SentinelMaster)
				if password != "" {
					fmt.Fprintf(&b, "sentinel auth-pass %s %s\n", SentinelMaster, password)
				}
				if sentinelPassword != "" {
					fmt.Fprintf(&b, "requirepass %s\nsentinel sentinel-pass %s\n", sentinelPassword, sentinelPassword)
				}
				if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
					t.Fatalf("writing %s: %v", conf, err)
				}
			}
			return []string{conf, "--sentinel"}
		}
		d.Sentinels = append(d.Sentinels, startServer(t, base, func() int { return FreePort(t) }, nil))
	}
	d.waitSettled(30*time.Second, replicas, sentinels-1)
	return d
}

// URL is the deployment as the gateway's --redis-url takes it.
func (d *Sentinels) URL() string {
	var hosts []string
	for _, s := range d.Sentinels {
		hosts = append(hosts, s.Addr())
	}
	u := "redis+sentinel://"
	if d.Password != "" {
		u += ":" + d.Password + "@"
	}
	u += strings.Join(hosts, ",") + "/" + SentinelMaster
	if d.SentinelPassword != "" {
		u += "?sentinel_password=" + d.SentinelPassword
	}
	return u
}

func (d *Sentinels) sentinelClient(s *Server) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: s.Addr(), Password: d.SentinelPassword,
		DialTimeout: time.Second, ReadTimeout: time.Second, MaxRetries: -1})
}

// Master returns the data node the running sentinels agree is the master now, or nil if they
// do not agree (a failover under way).
func (d *Sentinels) Master() *Server {
	var addr string
	for _, s := range d.Sentinels {
		if !s.Running() {
			continue
		}
		sc := d.sentinelClient(s)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		hp, err := sc.GetMasterAddrByName(ctx, SentinelMaster).Result()
		cancel()
		sc.Close()
		if err != nil || len(hp) != 2 {
			return nil
		}
		a := net.JoinHostPort(hp[0], hp[1])
		if addr != "" && a != addr {
			return nil
		}
		addr = a
	}
	for _, n := range d.Data {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// WaitMaster waits until every running sentinel names a running data node other than not as
// the master, and that node answers ROLE as master; it returns that node.
func (d *Sentinels) WaitMaster(not *Server, timeout time.Duration) *Server {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := d.Master(); m != nil && m != not && m.Running() && d.role(m) == "master" {
			return m
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("sentinels named no new master within %v", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *Sentinels) role(n *Server) string {
	cl := redis.NewClient(&redis.Options{Addr: n.Addr(), Password: d.Password, DialTimeout: time.Second, ReadTimeout: time.Second, MaxRetries: -1})
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	v, err := cl.Do(ctx, "ROLE").Slice()
	if err != nil || len(v) == 0 {
		return ""
	}
	s, _ := v[0].(string)
	return s
}

// replicaSynced reports whether n is a replica whose link to its master is up.
func (d *Sentinels) replicaSynced(n *Server) bool {
	cl := redis.NewClient(&redis.Options{Addr: n.Addr(), Password: d.Password, DialTimeout: time.Second, ReadTimeout: time.Second, MaxRetries: -1})
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := cl.Info(ctx, "replication").Result()
	return err == nil && strings.Contains(s, "master_link_status:up")
}

// waitSettled waits until every sentinel sees the master with its replicas and the other
// sentinels: before that a failover could not reach quorum.
func (d *Sentinels) waitSettled(timeout time.Duration, replicas, others int) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		why := ""
		for _, n := range d.Data[1:] {
			if !d.replicaSynced(n) {
				why = n.Addr() + ": replica not in sync with the master"
			}
		}
		for _, s := range d.Sentinels {
			if why != "" {
				break
			}
			sc := d.sentinelClient(s)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			m, err := sc.Master(ctx, SentinelMaster).Result()
			cancel()
			sc.Close()
			if err != nil {
				why = fmt.Sprintf("sentinel %s: %v", s.Addr(), err)
				break
			}
			nr, _ := strconv.Atoi(m["num-slaves"])
			ns, _ := strconv.Atoi(m["num-other-sentinels"])
			if nr < replicas || ns < others {
				why = fmt.Sprintf("sentinel %s sees %d replicas and %d other sentinels", s.Addr(), nr, ns)
				break
			}
		}
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("sentinels not settled within %v: %s", timeout, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
