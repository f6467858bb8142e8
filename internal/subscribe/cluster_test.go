package subscribe

import (
	"errors"
	"reflect"
	"testing"

	"github.com/sse-gateway/sse-gateway/internal/redisconn"
)

func TestParseClusterNodes(t *testing.T) {
	// CLUSTER NODES of a 3+3 cluster in the middle of a failover: the master on 7001 is
	// failed, its replica on 7004 promoted; 7002 is suspected (fail?); a slot is migrating.
	answer := `a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master,fail - 1700000000000 1700000000000 2 disconnected
c3 127.0.0.1:7002@17002,cache-2.internal master,fail? - 0 1700000000000 3 connected 10923-16383 [10923->-a1]
d4 127.0.0.1:7004@17004 master - 0 1700000000000 7 connected 5461-10922
e5 127.0.0.1:7005@17005 slave c3 0 1700000000000 3 connected
f6 :0@0 slave,noaddr a1 0 0 1 disconnected
`
	got, err := parseClusterNodes(answer, "127.0.0.1:7000")
	if err != nil {
		t.Fatal(err)
	}
	want := []clusterNode{
		{id: "a1", addr: "127.0.0.1:7000", master: true, healthy: true, slots: [][2]int{{0, 5460}}},
		{id: "b2", addr: "127.0.0.1:7001", master: true},
		{id: "c3", addr: "127.0.0.1:7002", master: true, slots: [][2]int{{10923, 16383}}},
		{id: "d4", addr: "127.0.0.1:7004", master: true, healthy: true, slots: [][2]int{{5461, 10922}}},
		{id: "e5", addr: "127.0.0.1:7005", healthy: true},
		{id: "f6", addr: ":0"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", got, want)
	}

	v := &clusterView{nodes: got}
	for range 50 {
		addr, ok := v.pickMaster("127.0.0.1:7000")
		if !ok || addr != "127.0.0.1:7004" {
			t.Fatalf("pickMaster avoiding 7000 = %q, %v; want the other healthy master with slots, 7004", addr, ok)
		}
	}
	v.nodes = got[:3] // only 7000 is healthy
	if addr, ok := v.pickMaster("127.0.0.1:7000"); !ok || addr != "127.0.0.1:7000" {
		t.Fatalf("pickMaster with one healthy master = %q, %v; want it even though it is to be avoided", addr, ok)
	}
	v.nodes = got[1:3]
	if addr, ok := v.pickMaster(""); ok {
		t.Fatalf("pickMaster with no healthy master = %q", addr)
	}
}

func TestParseClusterNodesMyselfWithoutAddress(t *testing.T) {
	// A node that has not learnt its own address yet reports ":0" for itself.
	got, err := parseClusterNodes("a1 :7000@17000 myself,master - 0 0 0 connected 0-16383\n", "10.0.0.9:7000")
	if err != nil {
		t.Fatal(err)
	}
	if got[0].addr != "10.0.0.9:7000" {
		t.Fatalf("addr %q, want the address the answer came from", got[0].addr)
	}
	if _, err := parseClusterNodes("a1 1.2.3.4:1@2 master - 0 0 0 connected 0-x\n", ""); err == nil {
		t.Fatal("a bad slot range was accepted")
	}
	if _, err := parseClusterNodes("", ""); err == nil {
		t.Fatal("an empty answer was accepted")
	}
}

func TestKeySlotAndProbeTag(t *testing.T) {
	t.Parallel()
	// Known slots (CLUSTER KEYSLOT): "foo" 12182, "{user1000}.following" 3443 (the tag's).
	for key, want := range map[string]int{"foo": 12182, "{user1000}.following": 3443, "user1000": 3443} {
		if got := redisconn.Slot(key); got != want {
			t.Errorf("redisconn.Slot(%q) = %d, want %d", key, got, want)
		}
	}
	for _, slot := range []int{0, 1, 5461, 10923, 16383} {
		if got := redisconn.Slot(probeTag(slot)); got != slot {
			t.Errorf("probeTag(%d) hashes to %d", slot, got)
		}
	}
}

func TestMovedSlot(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		slot int
		ok   bool
	}{
		{redisError("MOVED 3999 127.0.0.1:6381"), 3999, true},
		{redisError("ASK 12 10.0.0.2:7000"), 12, true},
		{redisError("CROSSSLOT Keys in request don't hash to the same slot"), 0, false},
		{errors.New("MOVED 1 x"), 0, false}, // not a Redis error reply
	} {
		slot, ok := movedSlot(tc.err)
		if slot != tc.slot || ok != tc.ok {
			t.Errorf("movedSlot(%v) = %d, %v; want %d, %v", tc.err, slot, ok, tc.slot, tc.ok)
		}
	}
}

// redisError is an error reply as go-redis returns it.
type redisError string

func (e redisError) Error() string { return string(e) }
func (redisError) RedisError()     {}
