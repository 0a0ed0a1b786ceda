// k6 (k6/net/grpc): PlaceOrder through the gateway at a constant arrival rate (open model).
//
//   k6 run loadtest/k6/place-order.js                          # 50 orders/s for 30 s
//   k6 run -e TARGET=127.0.0.1:50051 -e RATE=100 -e DURATION=1m loadtest/k6/place-order.js
//
// Environment: TARGET (gateway host:port, default 127.0.0.1:50051), RATE (orders per second,
// default 50), DURATION (default 30s), DEADLINE (per call, default 1s), VUS (pre-allocated
// virtual users, default 50; up to 10x are added when calls are slow), SUCCESS (threshold on
// the share of confirmed orders, default 0.95).
//
// Each iteration is one logical request with its own idempotency key. When every virtual
// user is busy, k6 skips the iteration and counts it in `dropped_iterations`: the threshold
// below fails the run then, because a load generator that falls behind under-reports
// latency (coordinated omission) — raise VUS, or lower RATE.
import grpc from 'k6/net/grpc';
import { check } from 'k6';
import { Counter, Rate } from 'k6/metrics';
import exec from 'k6/execution';

const TARGET = __ENV.TARGET || '127.0.0.1:50051';
const RATE = parseInt(__ENV.RATE || '50', 10);
const DURATION = __ENV.DURATION || '30s';
const DEADLINE = __ENV.DEADLINE || '1s';
const VUS = parseInt(__ENV.VUS || '50', 10);
const SUCCESS = parseFloat(__ENV.SUCCESS || '0.95');

// Paths are relative to this script: the repository's proto/ directory.
const client = new grpc.Client();
client.load(['../../proto'], 'shop/v1/gateway.proto');

const confirmed = new Rate('orders_confirmed');
// PlaceOrder calls answered (any status): what the gateway's own counter should show.
const calls = new Counter('place_order_calls');

export const options = {
  scenarios: {
    place_order: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: VUS,
      maxVUs: VUS * 10,
    },
  },
  thresholds: {
    // No iteration skipped: the arrival rate was really offered.
    dropped_iterations: ['count==0'],
    orders_confirmed: [`rate>=${SUCCESS}`],
    grpc_req_duration: ['p(95)<1000'],
  },
};

// A run-unique prefix, so keys never collide with an earlier run against the same stack.
const RUN = `k6-${Date.now().toString(36)}`;
const SKUS = ['sku-1', 'sku-2', 'sku-3', 'sku-4', 'sku-5', 'sku-6', 'sku-7', 'sku-8', 'sku-9'];

export default function () {
  // One connection per virtual user, kept across its iterations.
  if (exec.vu.iterationInScenario === 0) {
    client.connect(TARGET, { plaintext: true, timeout: '5s' });
  }
  const n = exec.scenario.iterationInTest;
  const request = {
    idempotency_key: `${RUN}-${n}`,
    customer_id: `k6-customer-${exec.vu.idInTest}`,
    items: [{ product_id: SKUS[n % SKUS.length], quantity: 1 }],
  };
  const response = client.invoke('shop.v1.Gateway/PlaceOrder', request, { timeout: DEADLINE });
  calls.add(1);
  const ok = response.status === grpc.StatusOK
    && response.message.order
    && response.message.order.status === 'ORDER_STATUS_CONFIRMED';
  confirmed.add(ok);
  check(response, { 'order confirmed': () => ok });
}
