"""The loop a user would write to turn a ZTF topic into JSON Lines: kcp's peer in bench B2.

    python bench/user_loop.py BOOTSTRAP TOPIC [SCHEMA.json] > alerts.jsonl

Written plainly, the way the ZTF and broker tutorials do it: poll, fastavro.reader on each
message (one Avro container file per message), json.dumps with a default for what JSON lacks
(bytes as base64, anything else as str), one line per alert; stop at the end of every partition.
Given a schema file (B9, Rubin), messages are in the Confluent wire format instead: the 5-byte
header skipped, the body read with fastavro.schemaless_reader, as Rubin's tutorials do.
"""

import base64
import io
import json
import sys
import uuid

import fastavro
from confluent_kafka import Consumer, KafkaError, KafkaException


def to_json(value):
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    schema = None
    if len(sys.argv) > 3:
        with open(sys.argv[3]) as text:
            schema = fastavro.parse_schema(json.load(text))
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "user-loop-" + uuid.uuid4().hex,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    partitions = len(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
    consumer.subscribe([topic])
    at_end = set()
    out = sys.stdout
    try:
        while len(at_end) < partitions:
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
                    continue
                raise KafkaException(message.error())
            if schema is not None:
                alerts = [fastavro.schemaless_reader(io.BytesIO(message.value()[5:]), schema)]
            else:
                alerts = fastavro.reader(io.BytesIO(message.value()))
            for alert in alerts:
                out.write(json.dumps(alert, default=to_json) + "\n")
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
