package redistest

import (
	"context"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"
)

// TestClusterFailover checks the harness itself: a cluster starts healthy, serves a key, and
// promotes a replica when the key's master is killed; a restarted node rejoins.
func TestClusterFailover(t *testing.T) {
	c := StartCluster(t, 3, 1)
	cl := c.Client()
	ctx := context.Background()
	if err := cl.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	old := c.MasterOf(Slot("k"))
	old.Kill()
	c.WaitFailover(old, 30*time.Second)
	if n := c.MasterOf(Slot("k")); n == old {
		t.Fatalf("slot still on the killed node")
	}
	old.Restart()
	c.WaitHealthy(30 * time.Second)
	nodes, err := c.Topology()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range nodes {
		if v.Addr == old.Addr() && v.Master && len(v.Slots) > 0 {
			t.Fatalf("restarted node %s came back as a master with slots: %+v", old.Addr(), v)
		}
	}
}

// TestSentinelFailover checks the harness itself: sentinels promote a replica when the
// master is killed.
func TestSentinelFailover(t *testing.T) {
	d := StartSentinels(t, 1, 3, "datapw", "sentpw")
	m := d.Master()
	if m != d.Data[0] {
		t.Fatalf("master is %v, want the first data node", m)
	}
	m.Kill()
	nm := d.WaitMaster(m, 30*time.Second)
	if nm == m {
		t.Fatal("no failover")
	}
}

// TestLaunchCluster checks the core a command uses: it starts a healthy cluster without a
// testing.TB, runs Setup on every node's command, and Stop leaves no node running.
func TestLaunchCluster(t *testing.T) {
	var setups atomic.Int32
	c, err := LaunchCluster(context.Background(), ClusterConfig{Dir: t.TempDir(), Masters: 3,
		Setup: func(*exec.Cmd) { setups.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if n := setups.Load(); n != 3 {
		t.Fatalf("Setup ran %d times for 3 nodes", n)
	}
	for _, n := range c.Nodes {
		if n.PID() <= 0 {
			t.Fatalf("node %s: no pid", n.Addr())
		}
	}
	cl := c.Client()
	defer cl.Close()
	if err := cl.Set(context.Background(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	c.Stop()
	for _, n := range c.Nodes {
		if n.Running() || n.PID() != 0 {
			t.Fatalf("node %s still running after Stop", n.Addr())
		}
	}
}
