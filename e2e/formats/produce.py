"""Produces records the way teams' own producers write them, with the libraries they use:
confluent-kafka's AvroSerializer / ProtobufSerializer / JSONSerializer through a schema
registry (the Confluent wire format), and CloudEvents through the official SDK's Kafka
binding (binary and structured mode). Nothing of the bridge is used here.

Usage: produce.py SPEC.json — {"brokers", "registry": {url, user, password}, "records": [...]}
where each record is {"shape", "topic", "value", "key"?, "headers"?, "schema"?, "subject"?,
"proto"?, "attributes"?}. Prints one JSON line per record: {"topic", "partition", "offset"}.
"""

import decimal
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.schema_registry import topic_record_subject_name_strategy
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent

# Several record types share one topic here (as in teams that put all of an order's events on
# one topic): subjects are named <topic>-<record name>, confluent-kafka's documented strategy
# for that, so each type evolves on its own.
SUBJECTS = {"subject.name.strategy": topic_record_subject_name_strategy}

PROTO_TYPES = {
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    "double": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
}


def proto_class(spec):
    """A message class built at run time from {"package", "message", "fields": [[name, type, n]]}
    (what protoc would generate; `timestamp` fields are google.protobuf.Timestamp)."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    f = descriptor_pb2.FileDescriptorProto(name=spec["file"], package=spec["package"], syntax="proto3")
    f.dependency.append("google/protobuf/timestamp.proto")
    m = f.message_type.add(name=spec["message"])
    for name, kind, number in spec["fields"]:
        field = m.field.add(name=name, number=number, label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
        if kind == "timestamp":
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
            field.type_name = ".google.protobuf.Timestamp"
        else:
            field.type = PROTO_TYPES[kind]
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{spec['package']}.{spec['message']}"))


def typed(value):
    """JSON can't say decimal: {"$decimal": "12.34"} is a decimal.Decimal (Avro's logical type)."""
    if isinstance(value, dict):
        if set(value) == {"$decimal"}:
            return decimal.Decimal(value["$decimal"])
        return {k: typed(v) for k, v in value.items()}
    return value


def main():
    spec = json.load(open(sys.argv[1]))
    reg = spec.get("registry")
    client = None
    if reg:
        conf = {"url": reg["url"]}
        if reg.get("user"):
            conf["basic.auth.user.info"] = f"{reg['user']}:{reg['password']}"
        if reg.get("ca"):
            conf["ssl.ca.location"] = reg["ca"]
        client = SchemaRegistryClient(conf)
    producer = Producer({"bootstrap.servers": spec["brokers"], "enable.idempotence": True})
    results = []

    def report(err, msg):
        if err is not None:
            raise RuntimeError(str(err))
        results.append({"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(), "hex": msg.value().hex()})

    for r in spec["records"]:
        ctx = SerializationContext(r["topic"], MessageField.VALUE)
        headers = [(k, v.encode()) for k, v in r.get("headers", {}).items()]
        key = r.get("key")
        shape = r["shape"]
        if shape == "avro":
            value = AvroSerializer(client, r["schema"], conf=SUBJECTS)(typed(r["value"]), ctx)
        elif shape == "json-schema":
            value = JSONSerializer(r["schema"], client, conf=SUBJECTS)(r["value"], ctx)
        elif shape == "protobuf":
            cls = proto_class(r["proto"])
            msg = cls()
            for name, v in r["value"].items():
                if isinstance(v, dict) and "seconds" in v:
                    getattr(msg, name).seconds = v["seconds"]
                else:
                    setattr(msg, name, v)
            value = ProtobufSerializer(cls, client, {"use.deprecated.format": False, **SUBJECTS})(msg, ctx)
        elif shape in ("ce-binary", "ce-structured"):
            event = CloudEvent(attributes=dict(r["attributes"]), data=r["value"])
            convert = ce_kafka.to_binary_event if shape == "ce-binary" else ce_kafka.to_structured_event
            message = convert(event)
            headers += list(message.headers.items())
            value = message.value
            key = key if key is not None else message.key
        elif shape == "raw":
            value = bytes.fromhex(r["hex"]) if "hex" in r else json.dumps(r["value"]).encode()
        else:
            raise SystemExit(f"unknown shape {shape}")
        producer.produce(r["topic"], value=value, key=key, headers=headers, on_delivery=report)
        producer.flush(30)
    for line in results:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
