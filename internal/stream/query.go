package stream

import (
	"errors"
	"net/url"
	"strings"

	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// Query limits that are not configurable: they bound the work one request can cause before
// it is authenticated.
const (
	maxQueryLen      = 8 << 10
	maxKeyLen        = 512
	maxChannelsLimit = 256
)

// Errors a stream request can be refused with (400).
var (
	ErrQueryTooLong    = errors.New("query string too long")
	ErrBadQuery        = errors.New("malformed query string")
	ErrMissingKey      = errors.New("missing key")
	ErrBadKey          = errors.New("invalid key")
	ErrMissingChannels = errors.New("missing channels")
	ErrTooManyChannels = errors.New("too many channels")
	ErrBadChannel      = errors.New("invalid channel name: use 1-200 of A-Z a-z 0-9 _ . : - not starting with _ . : -")
	ErrVersion         = errors.New("unsupported protocol version v: use 1.2")
)

// request is a parsed, validated stream request.
type request struct {
	key      string
	channels []string
}

// parseQuery validates GET /event-stream's query: v (optional; "1" or "1.2"), key and
// channels (comma-separated, deduplicated, at most maxChannels). Unknown parameters are
// ignored, since SDKs and proxies may add their own.
func parseQuery(raw string, maxChannels int) (request, error) {
	if len(raw) > maxQueryLen {
		return request{}, ErrQueryTooLong
	}
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return request{}, ErrBadQuery
	}
	if vs, ok := vals["v"]; ok {
		if len(vs) != 1 || (vs[0] != "1.2" && vs[0] != "1") {
			return request{}, ErrVersion
		}
	}
	var req request
	switch keys := vals["key"]; {
	case len(keys) == 0 || keys[0] == "":
		return request{}, ErrMissingKey
	case len(keys) > 1 || len(keys[0]) > maxKeyLen || !printable(keys[0]):
		return request{}, ErrBadKey
	default:
		req.key = keys[0]
	}
	list := strings.Join(vals["channels"], ",")
	if list == "" {
		return request{}, ErrMissingChannels
	}
	if strings.Count(list, ",")+1 > maxChannels {
		return request{}, ErrTooManyChannels
	}
	for _, ch := range strings.Split(list, ",") {
		if !wire.ValidChannel(ch) {
			return request{}, ErrBadChannel
		}
		dup := false
		for _, have := range req.channels {
			dup = dup || have == ch
		}
		if !dup {
			// A copy: a substring would keep the whole request line (and any padding a
			// client put in it) alive for as long as the stream is open.
			req.channels = append(req.channels, strings.Clone(ch))
		}
	}
	return req, nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
