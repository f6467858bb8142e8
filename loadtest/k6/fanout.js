// Fan-out latency with k6 built with xk6-sse (github.com/phymbert/xk6-sse).
//
// CONNS virtual users each hold one stream on one of CHANNELS channels (opened
// evenly over RAMP_S seconds); then a publisher POSTs /v1/publish (admin
// token) PUBLISHES times per channel, every PUBLISH_INTERVAL_S; each stream
// records receive time - sentAtMs in the trend sse_delivery_ms.
// See loadtest/README.md for building k6 and for the limits of this script.
//
//   ./k6 run -e BASE_URL=http://127.0.0.1:8080 -e KEY=<key> -e ADMIN_TOKEN=<token> \
//            -e CONNS=2000 -e CHANNELS=10 loadtest/k6/fanout.js

import sse from 'k6/x/sse';
import http from 'k6/http';
import exec from 'k6/execution';
import { check, sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import { config, channelFor, streamURL, publishBody, deliveryLatencyMs } from './lib.js';

const cfg = config(__ENV);

const deliveryMs = new Trend('sse_delivery_ms', true);
const delivered = new Counter('sse_events_delivered');
const connectOK = new Rate('sse_connect_ok');
const publishOK = new Rate('sse_publish_ok');

const publishStartS = cfg.rampS + 5;
const publishSpanS = cfg.publishes * cfg.publishIntervalS;
const endS = publishStartS + publishSpanS + 5; // streams close at the first event (or heartbeat) after this

export const options = {
  scenarios: {
    subscribers: {
      executor: 'constant-arrival-rate',
      exec: 'subscribe',
      rate: Math.ceil(cfg.conns / cfg.rampS),
      timeUnit: '1s',
      duration: `${cfg.rampS}s`,
      preAllocatedVUs: cfg.conns,
      maxVUs: cfg.conns,
      gracefulStop: `${endS + 30}s`,
    },
    publisher: {
      executor: 'per-vu-iterations',
      exec: 'publish',
      vus: 1,
      iterations: 1,
      startTime: `${publishStartS}s`,
      maxDuration: `${publishSpanS + 30}s`,
    },
  },
  thresholds: {
    sse_connect_ok: ['rate==1'],
    sse_publish_ok: ['rate==1'],
    sse_delivery_ms: ['p(99)<1000'],
  },
};

export function subscribe() {
  const channel = channelFor(cfg, exec.scenario.iterationInTest + 1);
  const since = Date.now();
  const deadline = exec.scenario.startTime + endS * 1000;
  const res = sse.open(streamURL(cfg, channel), { headers: { Accept: 'text/event-stream' } }, function (client) {
    client.on('event', function (ev) {
      // Heartbeat comments arrive as events without data: they end the stream on time.
      if (ev.data) {
        const ms = deliveryLatencyMs(ev.data, Date.now(), since);
        if (ms !== null) {
          deliveryMs.add(ms);
          delivered.add(1);
        }
      }
      if (Date.now() > deadline) client.close();
    });
    client.on('error', function (e) {
      console.error(`stream ${channel}: ${e.error()}`);
    });
  });
  connectOK.add(Boolean(res && res.status === 200));
  check(res, { 'stream status is 200': (r) => r && r.status === 200 });
}

export function publish() {
  const headers = { 'Content-Type': 'application/json', Authorization: `Bearer ${cfg.adminToken}` };
  let seq = 0;
  for (let round = 0; round < cfg.publishes; round++) {
    const next = Date.now() + cfg.publishIntervalS * 1000;
    for (let c = 0; c < cfg.channels; c++) {
      seq++;
      const res = http.post(`${cfg.baseURL}/v1/publish`, publishBody(`${cfg.channelPrefix}${c}`, seq, Date.now()), { headers });
      publishOK.add(res.status === 202);
    }
    const left = next - Date.now();
    if (left > 0) sleep(left / 1000);
  }
}
