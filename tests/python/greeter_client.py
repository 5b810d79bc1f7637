"""Calls tracewire.demo.Greeter/SayHello with grpcio, generically: no generated code, the
protobuf messages are encoded by hand (HelloRequest { string name = 1; },
HelloReply { string message = 1; }).

Usage: greeter_client.py ADDRESS NAME [TRACEPARENT]
Prints one JSON object: ok, code (numeric gRPC status), message or details, and the response
metadata (headers).
"""

import json
import sys

import grpc


def varint(value):
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def encode_request(name):
    data = name.encode("utf-8")
    return b"\x0a" + varint(len(data)) + data


def read_varint(data, i):
    shift = result = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def decode_reply(data):
    """The `message` field (1, length-delimited) of a HelloReply; other fields skipped."""
    i, message = 0, ""
    while i < len(data):
        key, i = read_varint(data, i)
        field, wire = key >> 3, key & 7
        if wire == 2:
            length, i = read_varint(data, i)
            if field == 1:
                message = data[i : i + length].decode("utf-8")
            i += length
        elif wire == 0:
            _, i = read_varint(data, i)
        else:
            raise ValueError("unexpected wire type %d" % wire)
    return message


def main():
    address, name = sys.argv[1], sys.argv[2]
    metadata = [("traceparent", sys.argv[3])] if len(sys.argv) > 3 else []
    with grpc.insecure_channel(address) as channel:
        say_hello = channel.unary_unary(
            "/tracewire.demo.Greeter/SayHello",
            request_serializer=encode_request,
            response_deserializer=decode_reply,
        )
        try:
            reply, call = say_hello.with_call(name, metadata=metadata, timeout=10)
            out = {
                "ok": True,
                "code": call.code().value[0],
                "message": reply,
                "metadata": dict(call.initial_metadata()),
            }
        except grpc.RpcError as error:
            out = {
                "ok": False,
                "code": error.code().value[0],
                "details": error.details(),
                "metadata": dict(error.initial_metadata() or ()),
            }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
