package gateway

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestRedisURLPicksClientKind(t *testing.T) {
	for _, tc := range []struct {
		url     string
		cluster bool
	}{
		{"redis://127.0.0.1:6379/0", false},
		{"rediss://user:pass@cache.internal:6380", false},
		{"redis://10.0.0.1:6379?addr=10.0.0.2:6379&addr=10.0.0.3:6379", true},
	} {
		c, err := NewRedisClient(tc.url)
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		_, isCluster := c.(*redis.ClusterClient)
		if isCluster != tc.cluster {
			t.Errorf("%s: cluster client = %v, want %v", tc.url, isCluster, tc.cluster)
		}
		c.Close()
	}
	for _, bad := range []string{"http://x", "redis://h:1/notanumber", "://"} {
		if c, err := NewRedisClient(bad); err == nil {
			c.Close()
			t.Errorf("%s: accepted", bad)
		}
	}
}
