package stream

import (
	"github.com/sse-gateway/sse-gateway/internal/wire"

	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

func TestValidChannel(t *testing.T) {
	for name, want := range map[string]bool{
		"a":                             true,
		"dvc_server_abc":                true,
		"A.b:c-d_e":                     true,
		"0":                             true,
		strings.Repeat("x", 200):        true,
		strings.Repeat("x", 201):        false,
		"":                              false,
		"_probe":                        false,
		".a":                            false,
		":a":                            false,
		"-a":                            false,
		"a b":                           false,
		"a,b":                           false,
		"a/b":                           false,
		"a*":                            false,
		"a\nb":                          false,
		"a\rb":                          false,
		"a\x00":                         false,
		"é":                             false,
		"a%20":                          false,
		"dvc_server_" + "\u2028":        false,
		"a\"b":                          false,
		strings.Repeat("a", 198) + ":_": true,
	} {
		if got := wire.ValidChannel(name); got != want {
			t.Errorf("wire.ValidChannel(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestParseQuery(t *testing.T) {
	cases := []struct {
		name     string
		raw      string
		max      int
		key      string
		channels []string
		err      error
	}{
		{"minimal", "key=k&channels=a", 10, "k", []string{"a"}, nil},
		{"v1.2", "v=1.2&key=k&channels=a,b", 10, "k", []string{"a", "b"}, nil},
		{"v1", "v=1&key=k&channels=a", 10, "k", []string{"a"}, nil},
		{"dedup", "key=k&channels=a,b,a,b", 10, "k", []string{"a", "b"}, nil},
		{"repeated param joins", "key=k&channels=a&channels=b", 10, "k", []string{"a", "b"}, nil},
		{"escaped comma", "key=k&channels=a%2Cb", 10, "k", []string{"a", "b"}, nil},
		{"unknown params ignored", "key=k&channels=a&sdk=node&t=123", 10, "k", []string{"a"}, nil},
		{"exactly max", "key=k&channels=a,b,c", 3, "k", []string{"a", "b", "c"}, nil},

		{"empty", "", 10, "", nil, ErrMissingKey},
		{"no key", "channels=a", 10, "", nil, ErrMissingKey},
		{"empty key", "key=&channels=a", 10, "", nil, ErrMissingKey},
		{"two keys", "key=a&key=b&channels=a", 10, "", nil, ErrBadKey},
		{"key with space", "key=a+b&channels=a", 10, "", nil, ErrBadKey},
		{"key with LF", "key=a%0Ab&channels=a", 10, "", nil, ErrBadKey},
		{"key with CR", "key=a%0Db&channels=a", 10, "", nil, ErrBadKey},
		{"key with NUL", "key=a%00&channels=a", 10, "", nil, ErrBadKey},
		{"key non-ascii", "key=%C3%A9&channels=a", 10, "", nil, ErrBadKey},
		{"key too long", "key=" + strings.Repeat("k", 513) + "&channels=a", 10, "", nil, ErrBadKey},
		{"no channels", "key=k", 10, "", nil, ErrMissingChannels},
		{"empty channels", "key=k&channels=", 10, "", nil, ErrMissingChannels},
		{"empty channel in list", "key=k&channels=a,,b", 10, "", nil, ErrBadChannel},
		{"trailing comma", "key=k&channels=a,", 10, "", nil, ErrBadChannel},
		{"bad channel char", "key=k&channels=a/b", 10, "", nil, ErrBadChannel},
		{"channel with LF", "key=k&channels=a%0Ab", 10, "", nil, ErrBadChannel},
		{"channel with CRLF", "key=k&channels=a%0D%0Adata:x", 10, "", nil, ErrBadChannel},
		{"reserved channel", "key=k&channels=_probe", 10, "", nil, ErrBadChannel},
		{"too many", "key=k&channels=a,b,c,d", 3, "", nil, ErrTooManyChannels},
		{"unknown v", "v=2&key=k&channels=a", 10, "", nil, ErrVersion},
		{"empty v", "v=&key=k&channels=a", 10, "", nil, ErrVersion},
		{"v with CRLF", "v=1.2%0D%0A&key=k&channels=a", 10, "", nil, ErrVersion},
		{"two v", "v=1.2&v=1.2&key=k&channels=a", 10, "", nil, ErrVersion},
		{"bad escape", "key=k&channels=a%zz", 10, "", nil, ErrBadQuery},
		{"semicolon", "key=k;channels=a", 10, "", nil, ErrBadQuery},
		{"too long", "key=k&channels=" + strings.Repeat("a", maxQueryLen), 10, "", nil, ErrQueryTooLong},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := parseQuery(c.raw, c.max)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("err = %v, want %v", err, c.err)
				}
				return
			}
			if err != nil || req.key != c.key || !slices.Equal(req.channels, c.channels) {
				t.Fatalf("got %+v, %v", req, err)
			}
		})
	}
}

// FuzzParseQuery: never panics; whatever it accepts is a usable, bounded request, and is
// what the raw query says (read by queryOracle, a separate reading of the query string).
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{
		"v=1.2&key=k&channels=a,b",
		"key=k&channels=a%0Ab",
		"key=k&channels=" + strings.Repeat("a,", 300),
		"key=%ff&channels=%00",
		"v=1&v=1.2&key=k&channels=a&channels=b,c",
		"key=k&channels=a;b",
		"channels=_x&key=k",
		"",
		"%",
		"key=k&channels=a,a,a,a,a,a,a,a,a,a,a,a",
	} {
		f.Add(s, 10)
	}
	f.Add("key=k&channels=a,b", 1)
	f.Fuzz(func(t *testing.T, raw string, max int) {
		if max < 1 || max > maxChannelsLimit {
			max = 1 + (max%maxChannelsLimit+maxChannelsLimit)%maxChannelsLimit
		}
		req, err := parseQuery(raw, max)
		if err != nil {
			if len(req.channels) != 0 || req.key != "" {
				t.Fatalf("error %v with a partial request %+v", err, req)
			}
			return
		}
		if len(raw) > maxQueryLen {
			t.Fatalf("accepted a %d-byte query", len(raw))
		}
		if req.key == "" || len(req.key) > maxKeyLen || !printable(req.key) {
			t.Fatalf("accepted key %q", req.key)
		}
		if len(req.channels) == 0 || len(req.channels) > max {
			t.Fatalf("accepted %d channels with max %d", len(req.channels), max)
		}
		seen := map[string]bool{}
		for _, ch := range req.channels {
			if !wire.ValidChannel(ch) {
				t.Fatalf("accepted invalid channel %q", ch)
			}
			if seen[ch] {
				t.Fatalf("channel %q twice", ch)
			}
			seen[ch] = true
		}
		key, channels, ok := queryOracle(raw)
		if !ok || req.key != key || !slices.Equal(req.channels, channels) {
			t.Fatalf("query %q: accepted key %q channels %q; the query says key %q channels %q (readable: %v)",
				raw, req.key, req.channels, key, channels, ok)
		}
	})
}

// queryOracle reads a query string by hand: '&'-separated name=value pairs, each
// percent-decoded ('+' is a space). It returns the one key, and the channels of every
// channels= parameter, split on commas, first occurrences in order. ok is false when a pair
// cannot be decoded or the key is not given exactly once.
func queryOracle(raw string) (key string, channels []string, ok bool) {
	var keys, lists []string
	for _, pair := range strings.Split(raw, "&") {
		if pair == "" {
			continue
		}
		name, value, _ := strings.Cut(pair, "=")
		n, err1 := url.QueryUnescape(name)
		v, err2 := url.QueryUnescape(value)
		if err1 != nil || err2 != nil || strings.Contains(pair, ";") {
			return "", nil, false
		}
		switch n {
		case "key":
			keys = append(keys, v)
		case "channels":
			lists = append(lists, v)
		}
	}
	if len(keys) != 1 {
		return "", nil, false
	}
	for _, list := range lists {
		for _, ch := range strings.Split(list, ",") {
			if !slices.Contains(channels, ch) {
				channels = append(channels, ch)
			}
		}
	}
	return keys[0], channels, true
}

func TestClientIP(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	cases := []struct {
		name    string
		trusted []netip.Prefix
		remote  string
		xff     []string
		want    string
	}{
		{"no proxies configured", nil, "10.1.1.1:5000", []string{"1.2.3.4"}, "10.1.1.1"},
		{"untrusted peer's header ignored", proxies, "192.0.2.9:5000", []string{"1.2.3.4"}, "192.0.2.9"},
		{"trusted peer", proxies, "10.1.1.1:5000", []string{"1.2.3.4"}, "1.2.3.4"},
		{"rightmost untrusted hop", proxies, "10.1.1.1:5000", []string{"6.6.6.6, 1.2.3.4, 10.2.2.2"}, "1.2.3.4"},
		{"several headers", proxies, "10.1.1.1:5000", []string{"6.6.6.6", "1.2.3.4"}, "1.2.3.4"},
		{"garbage hop", proxies, "10.1.1.1:5000", []string{"1.2.3.4, nonsense"}, "10.1.1.1"},
		{"all hops trusted", proxies, "10.1.1.1:5000", []string{"10.3.3.3"}, "10.1.1.1"},
		{"ipv6 peer", proxies, "[::1]:5000", []string{"2001:db8::1"}, "2001:db8::1"},
		{"mapped v4 hop", proxies, "10.1.1.1:5000", []string{"::ffff:1.2.3.4"}, "1.2.3.4"},
	}
	for _, c := range cases {
		s := &Server{cfg: Config{TrustedProxies: c.trusted}}
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = c.remote
		for _, v := range c.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := s.clientIP(r); got.String() != c.want {
			t.Errorf("%s: clientIP = %v, want %v", c.name, got, c.want)
		}
	}
}

// What a stream keeps of its query (the channel names) is copied out of the request: a
// substring would keep the whole request line (every unused parameter too) alive for the
// stream's life.
func TestParsedQueryKeepsNoRequestBytes(t *testing.T) {
	raw := "v=1.2&channels=a,b&key=k&pad=" + strings.Repeat("p", 6000)
	req, err := parseQuery(raw, 10)
	if err != nil {
		t.Fatal(err)
	}
	lo := uintptr(unsafe.Pointer(unsafe.StringData(raw)))
	hi := lo + uintptr(len(raw))
	for _, ch := range req.channels {
		if p := uintptr(unsafe.Pointer(unsafe.StringData(ch))); p >= lo && p < hi {
			t.Errorf("channel %q points into the request's query", ch)
		}
	}
}
