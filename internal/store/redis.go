package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// versionLen is the width of a stored value's version header (see the package doc).
const versionLen = 30

// setIfNewer stores ARGV[1]..ARGV[2] at KEYS[1] with a TTL of ARGV[3] ms if the version
// ARGV[1] is newer than the stored one (or nothing, or something unreadable, is stored),
// then publishes ARGV[6] on ARGV[4] with the command ARGV[5] (PUBLISH, or SPUBLISH when
// sharded: KEYS[1] is then in the shard channel's slot) unless ARGV[4] is empty: the event
// marked as stored (wire.MarkStored) on its channel, or a stored notice (see Save). It
// returns 1 if it stored, 0 if the
// stored version is the same or newer, -1 if the stored one has the same lastModified and
// another ETag hash (a conflict: see ErrConflict). One key per call, so it runs unchanged
// on Redis Cluster.
var setIfNewer = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  local a1 = tonumber(string.sub(cur, 1, 10))
  local a2 = tonumber(string.sub(cur, 11, 20))
  local a3 = tonumber(string.sub(cur, 21, 30))
  if a1 and a2 and a3 then
    local v = ARGV[1]
    local b1 = tonumber(string.sub(v, 1, 10))
    local b2 = tonumber(string.sub(v, 11, 20))
    local b3 = tonumber(string.sub(v, 21, 30))
    if b1 == a1 and b2 == a2 and b3 ~= a3 then
      return -1
    end
    if b1 < a1 or (b1 == a1 and (b2 < a2 or (b2 == a2 and b3 <= a3))) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ARGV[2], 'PX', ARGV[3])
if ARGV[4] ~= '' then
  redis.call(ARGV[5], ARGV[4], ARGV[6])
end
return 1
`)

// versionHeader formats v as the stored value's fixed-width prefix.
func versionHeader(v hub.Version) string {
	// Without fmt: the writer formats one per event stored.
	var b [versionLen]byte
	for i := range b {
		b[i] = '0'
	}
	t := strconv.AppendUint(nil, uint64(v.Time), 10)
	tie := strconv.AppendUint(nil, uint64(v.Tie), 10)
	copy(b[20-len(t):20], t)
	copy(b[versionLen-len(tie):], tie)
	return string(b[:])
}

// decode reads a stored value back. The payload is checked as on the wire, except for its
// size: the gateway wrote it, under a limit that may since have been lowered.
func decode(s string) (wire.Payload, error) {
	if len(s) <= versionLen {
		return wire.Payload{}, fmt.Errorf("%w: too short", ErrUnreadable)
	}
	for i := 0; i < versionLen; i++ {
		if s[i] < '0' || s[i] > '9' {
			return wire.Payload{}, fmt.Errorf("%w: no version header", ErrUnreadable)
		}
	}
	raw := []byte(s[versionLen:])
	p, err := wire.ParsePayload(raw, len(raw))
	if err != nil {
		return wire.Payload{}, fmt.Errorf("%w: %w", ErrUnreadable, err)
	}
	return p, nil
}

// Redis keeps each channel's newest event in Redis and publishes new ones to every instance.
// It is safe for concurrent use and has no goroutine of its own.
type Redis struct {
	client redis.UniversalClient // immutable
	cfg    Config                // immutable
}

// NewRedis returns the store kept in client (a *redis.Client or a *redis.ClusterClient).
func NewRedis(client redis.UniversalClient, cfg Config) *Redis {
	return &Redis{client: client, cfg: cfg.withDefaults()}
}

// ChannelPrefix is the prefix of the pub/sub channels events are published on.
func (r *Redis) ChannelPrefix() string { return r.cfg.ChannelPrefix }

// Sharded reports whether the store publishes with SPUBLISH (Config.Sharded).
func (r *Redis) Sharded() bool { return r.cfg.Sharded }

// latestKey is where channel's latest event is kept. Sharded, the key carries the shard
// channel as its hash tag, so that it lives in the channel's slot: the script that stores and
// SPUBLISHes runs on that slot's node.
func (r *Redis) latestKey(channel string) string {
	if r.cfg.Sharded {
		return r.cfg.KeyPrefix + "latest:{" + r.cfg.ChannelPrefix + channel + "}"
	}
	return r.cfg.KeyPrefix + "latest:" + channel
}

// SaveMode says what Save announces of each event it stores.
type SaveMode int

const (
	// SaveOnly stores, announcing nothing.
	SaveOnly SaveMode = iota
	// SavePublish stores and publishes the event on its channel, marked as stored
	// (wire.MarkStored): a write-back of an event other instances may have missed.
	SavePublish
	// SaveNotify stores and publishes a stored notice (NoticeChannel, ParseNotice): a
	// write-back of an event every instance received, which the others then need not write.
	// Sharded (Config.Sharded) no instance subscribes to the notice channel, and it is the
	// same as SaveOnly.
	SaveNotify
)

// NoticeChannel is the pub/sub channel of stored notices (SaveNotify): reserved, like every
// channel name starting with '_', so the gateway never forwards it to streams.
func (r *Redis) NoticeChannel() string { return r.cfg.ChannelPrefix + "_stored" }

// notice is the stored notice of channel's event of version v: the version header, then the
// channel name.
func notice(channel string, v hub.Version) string { return versionHeader(v) + channel }

// ParseNotice reads a stored notice: the store holds channel's event of version v or a newer
// one. ok is false for anything else.
func ParseNotice(s string) (channel string, v hub.Version, ok bool) {
	if len(s) <= versionLen {
		return "", hub.Version{}, false
	}
	t, err1 := strconv.ParseUint(s[:20], 10, 64)
	tie, err2 := strconv.ParseUint(s[20:versionLen], 10, 32)
	if err1 != nil || err2 != nil || !wire.ValidChannel(s[versionLen:]) {
		return "", hub.Version{}, false
	}
	return s[versionLen:], hub.Version{Time: int64(t), Tie: uint32(tie)}, true
}

// storeArgs are the script's arguments for storing p on channel, announcing it as mode says.
func (r *Redis) storeArgs(channel string, p wire.Payload, mode SaveMode) []any {
	pub, cmd, msg := "", "PUBLISH", ""
	switch {
	case mode == SavePublish:
		pub, msg = r.cfg.ChannelPrefix+channel, string(wire.MarkStored(p.Raw))
	case mode == SaveNotify && !r.cfg.Sharded:
		pub, msg = r.NoticeChannel(), notice(channel, p.Version())
	}
	if r.cfg.Sharded {
		cmd = "SPUBLISH"
	}
	return []any{versionHeader(p.Version()), p.Raw, strconv.FormatInt(r.cfg.LatestTTL.Milliseconds(), 10), pub, cmd, msg}
}

// Publish stores p as channel's latest event and PUBLISHes it to every instance, atomically,
// if it is newer than the stored one; the published payload carries the stored marker
// (wire.MarkStored), so no instance writes it back. It reports false, and publishes nothing, when the
// stored event is the same version or newer, and returns ErrConflict when the stored one has
// the same lastModified and another ETag. p must come from wire.ParsePayload.
func (r *Redis) Publish(ctx context.Context, channel string, p wire.Payload) (bool, error) {
	if !wire.ValidChannel(channel) {
		return false, ErrChannel
	}
	if len(p.Raw) == 0 {
		return false, ErrPayload
	}
	n, err := setIfNewer.Run(ctx, r.client, []string{r.latestKey(channel)}, r.storeArgs(channel, p, SavePublish)...).Int()
	if err != nil {
		return false, fmt.Errorf("publish to redis: %w", err)
	}
	if n < 0 {
		return false, ErrConflict
	}
	return n == 1, nil
}

// Get returns channel's stored latest event; found is false when there is none. A stored
// value that cannot be read is an error wrapping ErrUnreadable.
func (r *Redis) Get(ctx context.Context, channel string) (p wire.Payload, found bool, err error) {
	s, err := r.client.Get(ctx, r.latestKey(channel)).Result()
	if errors.Is(err, redis.Nil) {
		return wire.Payload{}, false, nil
	}
	if err != nil {
		return wire.Payload{}, false, fmt.Errorf("get latest event: %w", err)
	}
	if p, err = decode(s); err != nil {
		return wire.Payload{}, false, err
	}
	return p, true, nil
}

// Stored is one channel's answer in GetMany.
type Stored struct {
	// Payload is the stored latest event, when Found.
	Payload wire.Payload
	// Found reports whether a readable event is stored.
	Found bool
	// Err is set when the channel's event could not be had: a stored value that cannot be
	// read (wrapping ErrUnreadable; asking again will not help), or a Redis error (on a
	// cluster, the channel's node failing: asking again will, once it is replaced).
	Err error
}

// GetMany returns the stored latest event of every channel, in one pipeline (one key per
// command, so it works on Redis Cluster, where go-redis splits it per node: a node that
// fails fails only its channels' answers).
func (r *Redis) GetMany(ctx context.Context, channels []string) []Stored {
	pipe := r.client.Pipeline()
	cmds := make([]*redis.StringCmd, len(channels))
	for i, ch := range channels {
		cmds[i] = pipe.Get(ctx, r.latestKey(ch))
	}
	_, _ = pipe.Exec(ctx) // errors are read per command below; redis.Nil is not one
	out := make([]Stored, len(channels))
	for i := range channels {
		s, err := cmds[i].Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			out[i].Err = fmt.Errorf("get latest event: %w", err)
		default:
			out[i].Payload, out[i].Err = decode(s)
			out[i].Found = out[i].Err == nil
		}
	}
	return out
}

// Entry is one channel's event to store.
type Entry struct {
	Channel string
	Payload wire.Payload
}

// Save runs the set-if-newer script for each entry in one pipeline (EVALSHA, then EVAL for
// those that hit NOSCRIPT, e.g. after Redis restarted or a replica was promoted), announcing
// each stored one as mode says. It reports how many were stored, and each entry's
// error (errs[i] for entries[i]; nil when every entry succeeded). On a cluster the pipeline
// is split per node, so a failing node fails only its channels' entries.
func (r *Redis) Save(ctx context.Context, entries []Entry, mode SaveMode) (stored int, errs []error) {
	if len(entries) == 0 {
		return 0, nil
	}
	run := func(idx []int, sha bool) []*redis.Cmd {
		pipe := r.client.Pipeline()
		cmds := make([]*redis.Cmd, len(idx))
		for i, j := range idx {
			e := entries[j]
			keys, args := []string{r.latestKey(e.Channel)}, r.storeArgs(e.Channel, e.Payload, mode)
			if sha {
				cmds[i] = setIfNewer.EvalSha(ctx, pipe, keys, args...)
			} else {
				cmds[i] = setIfNewer.Eval(ctx, pipe, keys, args...)
			}
		}
		_, _ = pipe.Exec(ctx) // errors are read per command
		return cmds
	}
	fail := func(j int, err error) {
		if errs == nil {
			errs = make([]error, len(entries))
		}
		errs[j] = fmt.Errorf("store latest event: %w", err)
	}
	all := make([]int, len(entries))
	for i := range all {
		all[i] = i
	}
	var retry []int
	for i, cmd := range run(all, true) {
		n, err := cmd.Int()
		switch {
		case err == nil:
			stored += max(n, 0) // -1: a conflict, not stored
		case redis.HasErrorPrefix(err, "NOSCRIPT"):
			retry = append(retry, i)
		default:
			fail(i, err)
		}
	}
	if len(retry) > 0 {
		for i, cmd := range run(retry, false) {
			n, err := cmd.Int()
			stored += max(n, 0)
			if err != nil {
				fail(retry[i], err)
			}
		}
	}
	return stored, errs
}

// FirstError is the first non-nil error of errs (as Save returns them), or nil.
func FirstError(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
