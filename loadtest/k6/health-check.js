// k6 (k6/net/grpc): grpc.health.v1.Health/Check on the gateway at a constant arrival rate.
// A call that costs the gateway almost nothing, so what limits the rate is the load
// generator itself: `cargo bench -p frlab --bench load_vs_k6` runs this script and
// `frlab load --call health` against the same gateway, side by side.
//
//   k6 run -e TARGET=127.0.0.1:50051 -e RATE=2000 -e DURATION=10s loadtest/k6/health-check.js
//
// Environment: TARGET (default 127.0.0.1:50051), RATE (calls per second, default 1000),
// DURATION (default 10s), VUS (pre-allocated virtual users, default 100; up to MAX_VUS,
// default 10x), DROPPED (how many skipped iterations the threshold tolerates, default 0).
import grpc from 'k6/net/grpc';
import { check } from 'k6';
import exec from 'k6/execution';

const TARGET = __ENV.TARGET || '127.0.0.1:50051';
const RATE = parseInt(__ENV.RATE || '1000', 10);
const DURATION = __ENV.DURATION || '10s';
const VUS = parseInt(__ENV.VUS || '100', 10);
const MAX_VUS = parseInt(__ENV.MAX_VUS || `${VUS * 10}`, 10);
const DROPPED = parseInt(__ENV.DROPPED || '0', 10);

const client = new grpc.Client();
client.load(['.'], 'health.proto');

export const options = {
  scenarios: {
    health: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: VUS,
      maxVUs: MAX_VUS,
    },
  },
  thresholds: {
    dropped_iterations: [`count<=${DROPPED}`],
    checks: ['rate==1'],
  },
};

export default function () {
  if (exec.vu.iterationInScenario === 0) {
    client.connect(TARGET, { plaintext: true, timeout: '5s' });
  }
  const response = client.invoke('grpc.health.v1.Health/Check', { service: '' }, { timeout: '1s' });
  check(response, {
    'SERVING': (r) => r.status === grpc.StatusOK && r.message.status === 'SERVING',
  });
}
