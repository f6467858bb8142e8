package subscribe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// A stored latest event is one string: a fixed-width version header (20 decimal digits of
// lastModified, 10 of the ETag hash) followed by the payload JSON. The fixed width lets the
// script compare versions exactly (Lua numbers are doubles, so lastModified is compared as
// two 10-digit halves) and keeps the key readable with redis-cli.
const versionLen = 30

// setIfNewer stores ARGV[1]..ARGV[2] at KEYS[1] with a TTL of ARGV[3] ms if the version
// ARGV[1] is newer than the stored one (or nothing, or something unreadable, is stored),
// then PUBLISHes ARGV[2] on ARGV[4] unless it is empty. It returns 1 if it stored, else 0.
// One key per call, so it runs unchanged on Redis Cluster.
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
    if b1 < a1 or (b1 == a1 and (b2 < a2 or (b2 == a2 and b3 <= a3))) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ARGV[2], 'PX', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[4], ARGV[2])
end
return 1
`)

// versionHeader formats v as the stored value's fixed-width prefix.
func versionHeader(v hub.Version) string {
	return fmt.Sprintf("%020d%010d", uint64(v.Time), v.Tie)
}

// decodeStored reads a stored value back. The payload is checked as on the wire, except
// for its size: the gateway wrote it, under a limit that may since have been lowered.
func decodeStored(s string) (wire.Payload, error) {
	if len(s) <= versionLen {
		return wire.Payload{}, errors.New("stored latest event is too short")
	}
	for i := 0; i < versionLen; i++ {
		if s[i] < '0' || s[i] > '9' {
			return wire.Payload{}, errors.New("stored latest event has no version header")
		}
	}
	raw := []byte(s[versionLen:])
	return wire.ParsePayload(raw, len(raw))
}

func (r *Redis) latestKey(channel string) string { return r.cfg.KeyPrefix + "latest:" + channel }

// storeArgs are the script's arguments for storing p on channel, publishing it on the
// channel's pub/sub channel if publish is set.
func (r *Redis) storeArgs(channel string, p wire.Payload, publish bool) []any {
	pub := ""
	if publish {
		pub = r.cfg.ChannelPrefix + channel
	}
	return []any{versionHeader(p.Version()), p.Raw, strconv.FormatInt(r.cfg.LatestTTL.Milliseconds(), 10), pub}
}

// Publish stores p as channel's latest event and PUBLISHes it to every instance, atomically,
// if it is newer than the stored one. It reports false, and publishes nothing, when the
// stored event is the same version or newer. p must come from wire.ParsePayload.
func (r *Redis) Publish(ctx context.Context, channel string, p wire.Payload) (bool, error) {
	if !wire.ValidChannel(channel) {
		return false, ErrChannel
	}
	if len(p.Raw) == 0 {
		return false, ErrPayload
	}
	n, err := setIfNewer.Run(ctx, r.client, []string{r.latestKey(channel)}, r.storeArgs(channel, p, true)...).Int()
	if err != nil {
		return false, fmt.Errorf("publish to redis: %w", err)
	}
	return n == 1, nil
}

// latestTimeout bounds one store lookup shared by every caller waiting for it, whatever
// their own deadlines.
const latestTimeout = 5 * time.Second

// Latest returns channel's stored latest event, or nil if there is none (or it is
// unreadable, which is logged). Concurrent calls for the same channel share one GET, so a
// reconnect storm of streams costs one round trip per channel. A caller whose ctx ends first
// gets ctx's error; the shared lookup goes on for the others.
func (r *Redis) Latest(ctx context.Context, channel string) (*hub.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res := r.lookups.DoChan(channel, func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), latestTimeout)
		defer cancel()
		s, err := r.client.Get(lctx, r.latestKey(channel)).Result()
		if errors.Is(err, redis.Nil) {
			return (*hub.Message)(nil), nil
		}
		if err != nil {
			return nil, fmt.Errorf("get latest event: %w", err)
		}
		p, err := decodeStored(s)
		if err != nil {
			r.storeLog.Log(slog.LevelWarn, "ignoring unreadable stored latest event", "channel", channel, "err", err)
			return (*hub.Message)(nil), nil
		}
		r.known.update(channel, p)
		return wire.NewMessage(channel, p, time.Now()), nil
	})
	select {
	case v := <-res:
		if v.Err != nil {
			return nil, v.Err
		}
		return v.Val.(*hub.Message), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// storeBatch runs the set-if-newer script for each event in one pipeline (EVALSHA, then
// EVAL for those that hit NOSCRIPT, e.g. after Redis restarted). It reports how many were
// stored, and the first error.
func (r *Redis) storeBatch(ctx context.Context, evs []event, publish bool) (int, error) {
	if len(evs) == 0 {
		return 0, nil
	}
	run := func(evs []event, sha bool) ([]*redis.Cmd, error) {
		pipe := r.client.Pipeline()
		cmds := make([]*redis.Cmd, len(evs))
		for i, ev := range evs {
			keys, args := []string{r.latestKey(ev.channel)}, r.storeArgs(ev.channel, ev.payload, publish)
			if sha {
				cmds[i] = setIfNewer.EvalSha(ctx, pipe, keys, args...)
			} else {
				cmds[i] = setIfNewer.Eval(ctx, pipe, keys, args...)
			}
		}
		_, err := pipe.Exec(ctx)
		return cmds, err
	}
	cmds, _ := run(evs, true)
	stored := 0
	var retry []event
	var firstErr error
	for i, cmd := range cmds {
		n, err := cmd.Int()
		switch {
		case err == nil:
			stored += n
		case redis.HasErrorPrefix(err, "NOSCRIPT"):
			retry = append(retry, evs[i])
		case firstErr == nil:
			firstErr = err
		}
	}
	if len(retry) > 0 {
		cmds, _ = run(retry, false)
		for _, cmd := range cmds {
			n, err := cmd.Int()
			stored += n
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}
	}
	if firstErr != nil {
		return stored, fmt.Errorf("store latest events: %w", firstErr)
	}
	return stored, nil
}

// known remembers, per channel, the newest payload this instance handed to its hub, which
// is what it writes back when Redis lost its data. Entries of channels that have no
// subscribers any more are pruned at every resync.
type known struct {
	mu sync.Mutex
	m  map[string]knownEntry // guarded by mu
}

type knownEntry struct {
	p  wire.Payload
	at time.Time // when p was recorded
}

func newKnown() *known { return &known{m: make(map[string]knownEntry)} }

// update records p unless a newer or equal version is recorded; either way the channel
// counts as recently used, for prune.
func (k *known) update(channel string, p wire.Payload) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := k.m[channel]; ok && !e.p.Version().Less(p.Version()) {
		p = e.p
	}
	k.m[channel] = knownEntry{p: p, at: time.Now()}
}

func (k *known) get(channel string) (wire.Payload, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e, ok := k.m[channel]
	return e.p, ok
}

// prune forgets the channels not in keep that were recorded before since: those have no
// subscribers, and the hub forgot them too. Entries recorded after since may belong to a
// channel subscribed after keep was listed, so they stay until the next prune.
func (k *known) prune(keep []string, since time.Time) {
	set := make(map[string]struct{}, len(keep))
	for _, ch := range keep {
		set[ch] = struct{}{}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for ch, e := range k.m {
		if _, ok := set[ch]; !ok && e.at.Before(since) {
			delete(k.m, ch)
		}
	}
}
