package subscribe

import (
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// DefaultProbeInterval is the default of Config.ProbeInterval.
const DefaultProbeInterval = 2 * time.Second

// DefaultWriteBackSpread is the default of Config.WriteBackSpread.
const DefaultWriteBackSpread = 100 * time.Millisecond

// Config tunes the Redis subscriber. Zero values mean the documented defaults. The pub/sub
// channel prefix and the Redis keys are the store's (store.Config).
type Config struct {
	// MaxPayload is the largest payload, in bytes, accepted from the subscription
	// (default wire.DefaultMaxPayload, flag --max-payload).
	MaxPayload int
	// ProbeInterval is how often the liveness probe is published; the subscription is
	// declared dead after three intervals without it (default 2s, flag --probe-interval).
	ProbeInterval time.Duration
	// InstanceID names this instance in its probe channel (default: random).
	InstanceID string
	// MaxClockSkew is how far ahead of this instance's clock an event's lastModified may be;
	// a later one is rejected as malformed (wire.ErrFuture). Zero checks nothing (flag
	// --max-clock-skew).
	MaxClockSkew time.Duration
	// WriteBackSpread bounds how long an instance waits before storing an event that was
	// published raw (not through the store): each instance waits a hashed delay below it, and
	// the first to store it tells the others, which then do not (see writer). Longer means
	// fewer duplicate writes in a large fleet, and a store that lags the subscription by up
	// to that long. Default 100ms; negative: store at once, as every instance then does.
	WriteBackSpread time.Duration
}

// withDefaults fills the zero fields. Invalid values are replaced by defaults too, so that
// the subscriber always runs; the gateway's configuration is where a bad flag is reported.
func (c Config) withDefaults() Config {
	if c.MaxPayload <= 0 {
		c.MaxPayload = wire.DefaultMaxPayload
	}
	if c.ProbeInterval < 10*time.Millisecond {
		c.ProbeInterval = DefaultProbeInterval
	}
	switch {
	case c.WriteBackSpread == 0:
		c.WriteBackSpread = DefaultWriteBackSpread
	case c.WriteBackSpread < 0:
		c.WriteBackSpread = 0
	}
	if c.InstanceID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms.
		c.InstanceID = hex.EncodeToString(b[:])
	}
	return c
}
