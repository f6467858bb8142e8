// Package auth resolves the subscribe key a stream presents to the key's name and the
// channels it may read. Keys are held only as SHA-256 hashes, so a heap dump, a log line or a
// metric label can never reveal one.
//
// A Store holds the keys of every source and answers lookups (auth.go). Sources replace their
// part of it as a whole: a keys file (FileSource, file.go, reloaded on SIGHUP), keys kept in
// Redis (RedisKeys administers them, redisadmin.go; RedisSource keeps a gateway in sync with
// them, redissync.go), or one key generated for a first run. A reload that removes, rotates
// or narrows a key hands its ID to the source's onRevoked, which closes the streams the key no
// longer permits.
//
// # Keys in Redis
//
// The keys managed with `sse-gateway keys` live in one Redis hash, <prefix>keys: the field
// is the key's name, the value {"hash":"<hex SHA-256 of the secret>","channels":[...],
// "created":"<RFC 3339>"}. The secret itself is never stored. Every change is made by a Lua
// script that also PUBLISHes the key's name on <prefix>keys:changed, so the change and its
// notification are one atomic step.
//
// Every gateway running with --keys-redis subscribes to that channel and reloads the whole
// hash when a notification arrives (within milliseconds), whenever its subscription is
// (re)established (a notification may have been missed while it was down), and every
// ReloadInterval as a safety net. A reload that finds a key gone or rotated closes the
// streams opened with it.
//
// The hash also holds a field "_meta", which no key removal deletes, so the hash only
// disappears when Redis lost its data (a restart without persistence, a flush). A reload
// that finds no hash at all keeps the keys it has rather than revoking every key of the
// cluster: an empty Redis must not lock every SDK out. Run Redis with persistence when keys
// live in it.
package auth
