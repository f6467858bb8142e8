package store

import (
	"errors"
	"time"
)

// Defaults of the Config fields left zero; the command's flags take their defaults from here.
const (
	DefaultChannelPrefix = "sse:"
	DefaultKeyPrefix     = "sse-gateway:"
	DefaultLatestTTL     = 168 * time.Hour
)

// Config tunes a store. Zero values mean the documented defaults.
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
	// Sharded publishes with SPUBLISH (Redis 7 sharded pub/sub on a cluster) instead of
	// PUBLISH, and keeps a channel's latest event in the slot of its shard channel:
	// at KeyPrefix+"latest:{"+ChannelPrefix+channel+"}" (flag --redis-pubsub sharded).
	Sharded bool
}

// withDefaults fills the zero fields. Invalid values are replaced by defaults too, so that a
// store always works; the gateway's configuration is where a bad flag is reported.
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
	return c
}

// ErrChannel is returned by Publish for a channel name streams could never subscribe to:
// 1-200 bytes of [A-Za-z0-9_.:-] starting with a letter or digit. Names starting with '_'
// are reserved for the gateway's probes.
var ErrChannel = errors.New("invalid channel name")

// ErrPayload is returned by Publish for a payload that did not come from wire.ParsePayload.
var ErrPayload = errors.New("empty payload: parse it with wire.ParsePayload")

// ErrConflict is returned by Publish for an event whose lastModified equals the stored newest
// event's but whose ETag differs: two configs stamped the same millisecond cannot be ordered
// (SDKs skip a message whose lastModified is not newer than what they hold), so a publisher
// must stamp each config of a channel with a strictly greater lastModified.
var ErrConflict = errors.New(`another config of this channel has the same "lastModified": stamp each new config later than the one before`)

// ErrUnreadable wraps the error of a stored value that cannot be decoded (written by
// something else than the gateway, or damaged).
var ErrUnreadable = errors.New("unreadable stored latest event")
