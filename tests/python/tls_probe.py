"""Stock gRPC tooling against the collector over mutual TLS: Python grpcio (gRPC C-core and its
own TLS stack, nothing from this repository but the address and the certificates) asks the
standard health service, lists services through server reflection, and calls the Query service
with and without a token, and without a client certificate.

Messages are encoded by hand (a few protobuf bytes each), so no generated stubs are needed.
Prints one JSON object; the Rust test (tests/tests/grpc_python_tls.rs) checks it.
"""

import argparse
import json

import grpc


def ident(b):
    return b


def health(channel, service):
    call = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=ident,
        response_deserializer=ident,
    )
    name = service.encode()
    request = b"\x0a" + bytes([len(name)]) + name if name else b""
    reply = call(request, timeout=10)
    # HealthCheckResponse: field 1 (varint) status; SERVING = 1. An absent field is UNKNOWN.
    return {b"": "UNKNOWN", b"\x08\x01": "SERVING", b"\x08\x02": "NOT_SERVING"}.get(
        reply, reply.hex()
    )


def services(channel):
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=ident,
        response_deserializer=ident,
    )
    # ServerReflectionRequest: field 7 (list_services) = "".
    reply = next(iter(call(iter([b"\x3a\x00"]), timeout=10)))
    found = []
    for name in ["sensor.v1.Ingest", "sensor.v1.Query", "grpc.health.v1.Health"]:
        if name.encode() in reply:
            found.append(name)
    return found


def query(channel, token):
    call = channel.unary_unary(
        "/sensor.v1.Query/ListDeviations",
        request_serializer=ident,
        response_deserializer=ident,
    )
    metadata = [("authorization", f"Bearer {token}")] if token else None
    try:
        call(b"", timeout=10, metadata=metadata)
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--token", required=True)
    a = p.parse_args()
    read = lambda path: open(path, "rb").read()
    creds = grpc.ssl_channel_credentials(read(a.ca), read(a.key), read(a.cert))
    out = {}
    with grpc.secure_channel(a.target, creds) as channel:
        out["health"] = {
            s or "(server)": health(channel, s)
            for s in ["", "sensor.v1.Ingest", "sensor.v1.Query"]
        }
        out["reflection"] = services(channel)
        out["query_without_token"] = query(channel, None)
        out["query_with_token"] = query(channel, a.token)
    no_cert = grpc.ssl_channel_credentials(read(a.ca))
    with grpc.secure_channel(a.target, no_cert) as channel:
        try:
            health(channel, "")
            out["without_client_certificate"] = "OK"
        except grpc.RpcError as e:
            out["without_client_certificate"] = e.code().name
    print(json.dumps(out))


if __name__ == "__main__":
    main()
