package subscribe

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// Defaults of the Config fields left zero.
const (
	DefaultChannelPrefix = "sse:"
	DefaultKeyPrefix     = "sse-gateway:"
	DefaultLatestTTL     = 168 * time.Hour
	DefaultProbeInterval = 2 * time.Second
)

// Config tunes a broker. Zero values mean the documented defaults.
type Config struct {
	// ChannelPrefix is prepended to a channel name to make the Redis pub/sub channel the
	// config service PUBLISHes on (default "sse:", flag --redis-channel-prefix).
	ChannelPrefix string
	// KeyPrefix is prepended to every key the gateway stores; a channel's latest event is
	// at KeyPrefix+"latest:"+channel (default "sse-gateway:", flag --redis-key-prefix).
	KeyPrefix string
	// LatestTTL is how long a channel's latest event is kept after it was last replaced
	// (default 168h, flag --latest-ttl).
	LatestTTL time.Duration
	// MaxPayload is the largest payload, in bytes, accepted from the subscription
	// (default wire.DefaultMaxPayload, flag --max-payload).
	MaxPayload int
	// ProbeInterval is how often the liveness probe is published; the subscription is
	// declared dead after three intervals without it (default 2s, flag --probe-interval).
	ProbeInterval time.Duration
	// InstanceID names this instance in its probe channel (default: random).
	InstanceID string
}

// Validate reports the first invalid field, naming the flag that sets it. Zero values are
// valid (they mean the defaults).
func (c Config) Validate() error {
	switch {
	case c.LatestTTL < 0:
		return fmt.Errorf("--latest-ttl must not be negative, got %v", c.LatestTTL)
	case c.LatestTTL > 0 && c.LatestTTL < time.Millisecond:
		return fmt.Errorf("--latest-ttl must be at least 1ms, got %v", c.LatestTTL)
	case c.MaxPayload < 0:
		return fmt.Errorf("--max-payload must not be negative, got %d", c.MaxPayload)
	case c.ProbeInterval < 0:
		return fmt.Errorf("--probe-interval must not be negative, got %v", c.ProbeInterval)
	case c.ProbeInterval > 0 && c.ProbeInterval < 10*time.Millisecond:
		return fmt.Errorf("--probe-interval must be at least 10ms, got %v", c.ProbeInterval)
	case strings.ContainsAny(c.ChannelPrefix, " \r\n"):
		return errors.New("--redis-channel-prefix must not contain spaces or line breaks")
	case strings.ContainsAny(c.KeyPrefix, " \r\n"):
		return errors.New("--redis-key-prefix must not contain spaces or line breaks")
	}
	return nil
}

// withDefaults fills the zero fields. Invalid values are replaced by defaults too, so that
// a broker always runs; Validate is where a bad flag is reported.
func (c Config) withDefaults() Config {
	if c.ChannelPrefix == "" {
		c.ChannelPrefix = DefaultChannelPrefix
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = DefaultKeyPrefix
	}
	if c.LatestTTL < time.Millisecond {
		c.LatestTTL = DefaultLatestTTL
	}
	if c.MaxPayload <= 0 {
		c.MaxPayload = wire.DefaultMaxPayload
	}
	if c.ProbeInterval < 10*time.Millisecond {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.InstanceID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms.
		c.InstanceID = hex.EncodeToString(b[:])
	}
	return c
}

// ErrChannel is returned by Publish for a channel name streams could never subscribe to:
// 1-200 bytes of [A-Za-z0-9_.:-] starting with a letter or digit. Names starting with '_'
// are reserved for the gateway's probes.
var ErrChannel = errors.New("invalid channel name")

// ErrPayload is returned by Publish for a payload that did not come from wire.ParsePayload.
var ErrPayload = errors.New("empty payload: parse it with wire.ParsePayload")
