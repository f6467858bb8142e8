// Pure helpers shared by the k6 scripts. No k6 imports here, so the logic is
// unit-tested with plain Node (loadtest/k6/k6_test.go).

// config reads the scripts' settings from k6's __ENV (or any object).
export function config(env) {
  const e = env || {};
  const int = (k, d) => (e[k] !== undefined && e[k] !== '' ? parseInt(e[k], 10) : d);
  return {
    baseURL: (e.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, ''),
    key: e.KEY || '',
    adminToken: e.ADMIN_TOKEN || '',
    conns: int('CONNS', 1000),
    channels: int('CHANNELS', 1),
    channelPrefix: e.CHANNEL_PREFIX || 'k6_',
    publishes: int('PUBLISHES', 20),
    publishIntervalS: int('PUBLISH_INTERVAL_S', 2),
    rampS: int('RAMP_S', 30),
    holdS: int('HOLD_S', 90),
  };
}

// channelFor deals virtual users round-robin over the channels (__VU starts at 1).
export function channelFor(cfg, vu) {
  return cfg.channelPrefix + ((vu - 1) % cfg.channels);
}

// streamURL is the gateway's stream endpoint for one channel (contract: GET /event-stream).
export function streamURL(cfg, channel) {
  return `${cfg.baseURL}/event-stream?v=1.2&channels=${encodeURIComponent(channel)}&key=${encodeURIComponent(cfg.key)}`;
}

// publishBody is the POST /v1/publish body. lastModified must grow per
// channel (the gateway drops versions that are not newer); sentAtMs is the
// publisher's clock for the latency measurement (same host or synced clocks).
export function publishBody(channel, seq, nowMs) {
  return JSON.stringify({
    channel: channel,
    data: { etag: `"k6-${seq}"`, lastModified: nowMs + seq, sentAtMs: nowMs },
  });
}

// deliveryLatencyMs returns receive time - sentAtMs for one SSE event's data
// (the contract envelope, whose "data" is the inner JSON as a string), or null
// when the event carries no marker or was sent before sinceMs (e.g. the latest
// event the gateway replays on connect).
export function deliveryLatencyMs(data, nowMs, sinceMs) {
  let env;
  try {
    env = JSON.parse(data);
  } catch (_) {
    return null;
  }
  if (!env || typeof env.data !== 'string') return null;
  let inner;
  try {
    inner = JSON.parse(env.data);
  } catch (_) {
    return null;
  }
  if (!inner || typeof inner.sentAtMs !== 'number' || inner.sentAtMs < sinceMs) return null;
  return Math.max(0, nowMs - inner.sentAtMs);
}
