package redisconn

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestParseForms(t *testing.T) {
	for _, tc := range []struct {
		url  string
		mode Mode
		// check inspects the parsed options.
		check func(t *testing.T, o *Options)
	}{
		{"redis://127.0.0.1:6379/0", Standalone, func(t *testing.T, o *Options) {
			if o.Standalone.Addr != "127.0.0.1:6379" || o.Standalone.DialTimeout != dialTimeout || o.Standalone.DialerRetries != 1 {
				t.Errorf("options %+v", o.Standalone)
			}
		}},
		{"rediss://user:pass@cache.internal:6380", Standalone, func(t *testing.T, o *Options) {
			if o.Standalone.TLSConfig == nil || o.Standalone.Password != "pass" {
				t.Errorf("TLS or password lost: %+v", o.Standalone)
			}
		}},
		{"redis://10.0.0.1:6379?addr=10.0.0.2:6379&addr=10.0.0.3:6379", Cluster, func(t *testing.T, o *Options) {
			if len(o.Cluster.Addrs) != 3 || o.Cluster.DialerRetries != 1 || o.Cluster.DialTimeout != dialTimeout {
				t.Errorf("cluster options %+v", o.Cluster)
			}
		}},
		{"redis://10.0.0.1:6379?addr=10.0.0.2:6379&dial_timeout=7s", Cluster, func(t *testing.T, o *Options) {
			if o.Cluster.DialTimeout != 7*time.Second {
				t.Errorf("dial_timeout from the URL ignored: %v", o.Cluster.DialTimeout)
			}
		}},
		{"redis+sentinel://s1:26379,s2:26380,s3/mymaster", Sentinel, func(t *testing.T, o *Options) {
			f := o.Failover
			if f.MasterName != "mymaster" || strings.Join(f.SentinelAddrs, " ") != "s1:26379 s2:26380 s3:26379" {
				t.Errorf("sentinel options %+v", f)
			}
		}},
		{"redis+sentinel://app:p%40ss@10.0.0.1:26379,10.0.0.2:26379/prod-cache?db=3&sentinel_password=spw&sentinel_username=sen&dial_timeout=1s", Sentinel, func(t *testing.T, o *Options) {
			f := o.Failover
			if f.Username != "app" || f.Password != "p@ss" || f.DB != 3 || f.SentinelPassword != "spw" ||
				f.SentinelUsername != "sen" || f.DialTimeout != time.Second || f.MasterName != "prod-cache" {
				t.Errorf("sentinel options %+v", f)
			}
			if strings.Contains(o.Redacted, "p%40ss") || strings.Contains(o.Redacted, "spw") {
				t.Errorf("redacted URL keeps a password: %s", o.Redacted)
			}
		}},
	} {
		o, err := Parse(tc.url)
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		if o.Mode != tc.mode {
			t.Errorf("%s: mode %v, want %v", tc.url, o.Mode, tc.mode)
		}
		tc.check(t, o)
		c := Open(o, "test")
		_, isCluster := c.(*redis.ClusterClient)
		if isCluster != (tc.mode == Cluster) {
			t.Errorf("%s: cluster client = %v", tc.url, isCluster)
		}
		_ = c.Close()
	}
}

func TestParseRejects(t *testing.T) {
	for _, bad := range []string{
		"http://x", "redis://h:1/notanumber", "://", "127.0.0.1:6379",
		"redis+sentinel://s1:26379/",           // no master name
		"redis+sentinel:///master",             // no sentinel
		"redis+sentinel://s1:26379/m?db=x",     // bad db
		"redis+sentinel://s1:26379/m?nosuch=1", // unknown parameter
		"redis+sentinel://s1:26379/m/extra",    // path with more than a name
		"redis+sentinel://s1:26379/m?dial_timeout=soon",
	} {
		if o, err := Parse(bad); err == nil {
			t.Errorf("%s: accepted as %+v", bad, o)
		}
	}
}

func TestParseErrorsHidePasswords(t *testing.T) {
	for _, bad := range []string{
		"redis://u:secretpw@h:1/notanumber",
		"redis+sentinel://u:secretpw@s1:26379/m?db=x",
		"redis+sentinel://s1:26379/m?sentinel_password=secretpw&db=x",
	} {
		_, err := Parse(bad)
		if err == nil {
			t.Fatalf("%s: accepted", bad)
		}
		if strings.Contains(err.Error(), "secretpw") {
			t.Errorf("error names the password: %v", err)
		}
	}
}
