// Connect storm with k6 built with xk6-sse (github.com/phymbert/xk6-sse):
// CONNS virtual users start together and each opens one stream at once; each
// stream is held for HOLD_S seconds (it closes at the first event or heartbeat
// after that). Zero failures are required (threshold on sse_connect_ok).
//
//   ./k6 run -e BASE_URL=http://127.0.0.1:8080 -e KEY=<key> -e CONNS=5000 -e HOLD_S=20 \
//            loadtest/k6/connect-storm.js

import sse from 'k6/x/sse';
import exec from 'k6/execution';
import { check } from 'k6';
import { Rate, Trend } from 'k6/metrics';
import { config, channelFor, streamURL } from './lib.js';

const cfg = config(__ENV);

const connectOK = new Rate('sse_connect_ok');
const openMs = new Trend('sse_open_ms', true);

export const options = {
  scenarios: {
    storm: {
      executor: 'per-vu-iterations',
      vus: cfg.conns,
      iterations: 1,
      maxDuration: `${cfg.holdS + 60}s`,
    },
  },
  thresholds: {
    sse_connect_ok: ['rate==1'],
  },
};

export default function () {
  const channel = channelFor(cfg, exec.vu.idInTest);
  const start = Date.now();
  const deadline = start + cfg.holdS * 1000;
  const res = sse.open(streamURL(cfg, channel), { headers: { Accept: 'text/event-stream' } }, function (client) {
    client.on('open', function () {
      openMs.add(Date.now() - start);
    });
    client.on('event', function () {
      if (Date.now() > deadline) client.close();
    });
    client.on('error', function (e) {
      console.error(`stream ${channel}: ${e.error()}`);
    });
  });
  connectOK.add(Boolean(res && res.status === 200));
  check(res, { 'stream status is 200': (r) => r && r.status === 200 });
}
