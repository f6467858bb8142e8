// Package store keeps the newest event of each channel and publishes new events: in Redis for
// a cluster of gateways (Redis), or in memory for a single instance (Memory). Storing the
// newest event is what lets a stream connecting to any instance, or resuming after a restart,
// get its channel's current version at once.
//
// # Redis
//
// The latest event of a channel is the string key <KeyPrefix>latest:<channel> (TTL
// LatestTTL), written only through one Lua script that sets it if the new version is newer
// (versions order by lastModified, then by wire.ETagHash of the ETag; the same lastModified
// with another ETag is a conflict, ErrConflict) and, for Publish, also PUBLISHes it on
// <ChannelPrefix><channel>, atomically, marked as stored (wire.MarkStored) so that no
// receiving instance stores it again. Receiving instances store raw PUBLISHes with the same
// script (Save, package subscribe), the first one announcing it with a stored notice on
// <ChannelPrefix>_stored (SaveNotify, ParseNotice) so that the others need not; replays or
// racing publishers never move the stored version backwards. The script touches one key, so
// it is Redis Cluster safe.
//
// Sharded (Redis 7 sharded pub/sub on a cluster), the key is
// <KeyPrefix>latest:{<ChannelPrefix><channel>}: its hash tag is the shard channel, so the key
// and the channel share a slot and the script stores and SPUBLISHes on the node that owns it.
// The two layouts do not share keys: switching a fleet from one to the other starts every
// channel without a stored event until its next publish (or copy the keys across, renaming
// <KeyPrefix>latest:<channel> to <KeyPrefix>latest:{<ChannelPrefix><channel>}).
//
// A stored value is a fixed-width version header (20 decimal digits of lastModified, 10 of
// the ETag hash) followed by the payload JSON: the script compares versions exactly (Lua
// numbers are doubles, so lastModified is compared as two 10-digit halves), and the key stays
// readable with redis-cli.
//
// # Memory
//
// Memory is the embedded broker of a single instance with no Redis: Publish stores the newest
// event per channel in memory (set-if-newer, TTL LatestTTL) and hands it to the hub directly.
package store
