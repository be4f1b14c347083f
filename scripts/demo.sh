#!/usr/bin/env bash
# make demo: a synthetic night of ZTF-like alerts through a real local Kafka broker.
# Uses the broker on localhost:9092 if one answers, else starts one for the demo's duration.
set -euo pipefail
cd "$(dirname "$0")/.."
ALERTS=${KCP_DEMO_ALERTS:-2000}
TOPIC=ztf_20180725_programid1
export KCP_BROKER=localhost:9092
mkdir -p demo

broker_answers() { python -c 'import socket; socket.create_connection(("127.0.0.1", 9092), 1)' 2>/dev/null; }

if broker_answers; then
  echo "== using the Kafka broker already on localhost:9092" >&2
else
  echo "== starting a Kafka broker on localhost:9092 (log: demo/broker.log)" >&2
  python tests/kafka/broker.py --port 9092 --libs "$PWD/.cache/kafka-libs" > demo/broker.log 2>&1 &
  BROKER_PID=$!
  trap 'kill $BROKER_PID 2>/dev/null; wait $BROKER_PID 2>/dev/null || true' EXIT
  for _ in $(seq 120); do broker_answers && grep -q "broker ready" demo/broker.log && break; sleep 0.5; done
  broker_answers || { echo "the broker did not start; see demo/broker.log" >&2; exit 1; }
fi

echo "== generating $ALERTS synthetic ZTF-like alerts (gzipped FITS cutouts, light curves)" >&2
python -m kcp.synth "$ALERTS" demo/night-20180725.avro --night 20180725

echo "== kcp produce $TOPIC demo/night-20180725.avro" >&2
kcp produce "$TOPIC" demo/night-20180725.avro --progress

echo "== kcp consume $TOPIC -c 3 | jq '.candidate | {ra, dec, magpsf}'" >&2
kcp consume "$TOPIC" -c 3 | jq '.candidate | {ra, dec, magpsf}'

echo "== kcp consume $TOPIC -c $ALERTS > demo/night.jsonl  (decode every alert to JSON)" >&2
kcp consume "$TOPIC" -c "$ALERTS" --progress > demo/night.jsonl
echo "== done: demo/night.jsonl holds $(wc -l < demo/night.jsonl) alerts as JSON Lines" >&2
