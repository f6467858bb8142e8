// Package subscribe feeds the hub from Redis pub/sub, for a cluster of gateways: it keeps one
// subscription alive, hands every valid event to the hub, stores it as its channel's newest
// (through package store, which owns the Redis layout and the set-if-newer script), and
// resynchronises the hub with the store after every reconnect. A single instance without
// Redis needs none of this: store.Memory feeds its hub directly.
//
// # Subscription
//
// One pattern subscription (PSUBSCRIBE <ChannelPrefix>*) per instance, on its own
// connection, read with a timeout by one goroutine that never blocks: every valid event goes
// into a per-channel latest-wins mailbox and a few dispatcher goroutines hand it to the hub
// and store it as the channel's latest. Invalidations are idempotent, so a channel that
// receives events faster than they are dispatched keeps only its newest pending one: nothing
// newer is ever dropped, and memory is bounded by the number of channels.
//
// Any instance that receives an event may store it, with the store's set-if-newer script,
// so the stored version never goes backwards; one storing it is enough, since every instance
// receives every event. An event published through the store (the publish API, the CLI, a
// resync's write-back) arrives marked as stored (wire.ParseReceived strips the marker; SDKs
// get the payload as published) and is not stored again. A raw PUBLISH (a config service)
// is stored after a delay below Config.WriteBackSpread (100 ms) hashed from the instance, the
// channel and the version; the first instance to store it publishes a stored notice on the
// reserved channel <ChannelPrefix>_stored, and the others drop their pending write. Until it
// is stored or noticed, the event stays pending on every instance that received it (and
// lastSeen keeps it for new streams), so it is stored unless every one of them dies within
// the spread. An instance that missed a raw event (its subscription was down) and resynced
// before anyone stored it hears the stored notice on its new subscription and reads the
// channel from the store then (Redis.catchUp, TestNoticeCatchesUpAMissedEvent), so the delay
// opens no window for it. Measured (TestFleetWritesBackOncePerEvent, 3 instances): 1.00-1.10 script runs
// per raw event fleet-wide instead of 3, none for events published stored instead of 3.
// On a Redis Cluster (classic or sharded pub/sub) there are no notices: every instance stores
// what it receives at once, since a classic notice would cross the cluster bus to every node
// (it doubled the bus messages per raw event) and sharded mode has no channel all hear.
// The writer keeps the waiting writes' due times in a min-heap (writer.go: dueQueue), so that
// finding the due ones costs log n per event, not a scan of the rate x spread channels
// waiting: scanning was 7.1% of the gateway's CPU at 15,000 small publishes per second, the
// heap 0.7% (docs/PERFORMANCE.md, "Where a delivery's CPU goes").
//
// On every (re)subscription, once Redis confirms the PSUBSCRIBE on the new connection, the
// instance resynchronises: for every channel the hub has subscribers for, it GETs the stored
// latest (pipelined, one key per command) and seeds the hub with it, so events published
// while the subscription was down are delivered. Ready reports true only after that.
//
// A liveness probe catches a subscription that died silently (the TCP connection is up but
// nothing arrives): every ProbeInterval the instance PUBLISHes
// <ChannelPrefix>_probe.<InstanceID> and expects it back on its subscription. After three
// intervals in which nothing arrived on the subscription, not even that probe, the instance
// is not ready and re-subscribes (anything arriving proves the connection alive: a probe
// queued behind a burst of events is late, not lost, and re-subscribing would drop the
// burst). Channel names starting with '_' are reserved for the gateway; events on them are
// never forwarded to the hub.
//
// # When Redis lost its data
//
// Redis may come back empty, or older than the gateways (a restart without persistence, a
// failover to a replica that lagged, eviction, FLUSHALL). The policy is: the newest version
// any live instance knows wins, and versions never go backwards.
//
//   - Each instance remembers the newest event it handed to its hub for each channel that
//     has subscribers on it (from the subscription, from the store, or from a resync).
//   - On every resync, a channel whose stored latest is missing or older than what the
//     instance remembers is written back with the same set-if-newer script, and re-published,
//     so instances that missed the event get it too. Their hubs drop it if they already
//     have it; the script keeps the newest of concurrent write-backs.
//   - A stored latest newer than what the instance remembers is seeded into its hub.
//   - Channels no instance has subscribers for are not restored: the key comes back with the
//     next publish. Until then a new stream on such a channel gets no initial event and
//     relies on its SDK's own config fetch, exactly as for a channel never published to.
//   - An event published while Redis was down never reached Redis, so it is lost:
//     Publish returns the error, and the publisher must retry.
package subscribe
