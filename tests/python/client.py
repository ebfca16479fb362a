"""An independent sensor.v1 client: Python grpcio, stubs generated from the proto at run time.

Streams batches to the collector's Ingest service, checks every acknowledgement (and that a
resent batch is acknowledged as duplicates), then reads the deviations back through the Query
service and checks them field by field. Prints one JSON summary line; exits non-zero with the
reason on the first mismatch.

Usage: python client.py --server HOST:PORT --proto-root DIR --gen-dir DIR [--batches N]
       [--batch-size N] [--token TOKEN]
"""

import argparse
import json
import sys
import time
import uuid


def generate(proto_root, gen_dir):
    """Compiles sensor/v1/collector.proto into gen_dir and makes it importable."""
    from grpc_tools import protoc

    import importlib.resources

    include = str(importlib.resources.files("grpc_tools") / "_proto")
    code = protoc.main(
        [
            "protoc",
            f"-I{proto_root}",
            f"-I{include}",
            f"--python_out={gen_dir}",
            f"--grpc_python_out={gen_dir}",
            "sensor/v1/collector.proto",
        ]
    )
    if code != 0:
        sys.exit(f"grpc_tools.protoc failed with {code}")
    sys.path.insert(0, gen_dir)


def fail(why):
    sys.exit(f"python client: {why}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--proto-root", required=True)
    parser.add_argument("--gen-dir", required=True)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--token", default="")
    args = parser.parse_args()

    generate(args.proto_root, args.gen_dir)
    import grpc
    from sensor.v1 import collector_pb2 as pb
    from sensor.v1 import collector_pb2_grpc as rpc

    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    run = uuid.uuid4().hex[:12]
    host = f"python-{run}"
    agent = f"python-agent-{run}"
    spool = uuid.uuid4().hex
    now = time.time_ns()

    def deviation(batch, i):
        return pb.Deviation(
            id=f"py-{run}-{batch}-{i}",
            time_unix_nanos=now + batch * 1000 + i,
            host=host,
            workload=pb.Workload(
                id="github:python/client/ci/build",
                kind=pb.WORKLOAD_KIND_GITHUB_JOB,
                run_id=str(batch),
            ),
            kind=pb.DEVIATION_KIND_NEW_NETWORK_DESTINATION,
            severity=pb.SEVERITY_HIGH,
            summary=f"python deviation {batch}/{i}",
            process=pb.Process(
                pid=1000 + i,
                ppid=1,
                executable="/usr/bin/curl",
                argv=["curl", "https://example.invalid"],
                ancestry=[pb.Ancestor(pid=1, executable="/usr/bin/bash")],
            ),
            novelty=pb.Novelty(
                destination=pb.NetworkDestination(
                    address="192.0.2.7", port=443 + i, protocol="tcp", dns_name="example.invalid"
                )
            ),
            signals=["python-client"],
        )

    batches = [
        pb.DeviationBatch(
            agent_id=agent,
            spool_id=spool,
            sequence=b,
            deviations=[deviation(b, i) for i in range(args.batch_size)],
        )
        for b in range(1, args.batches + 1)
    ]

    with grpc.insecure_channel(args.server) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=10)
        except grpc.FutureTimeoutError:
            fail(f"cannot connect to {args.server}")
        ingest = rpc.IngestStub(channel)
        # The batches, then the second one again: the collector must not store it twice.
        sent = batches + [batches[1]] if args.batches >= 2 else batches
        acks = list(ingest.StreamDeviations(iter(sent), metadata=metadata, timeout=30))
        if len(acks) != len(sent):
            fail(f"{len(acks)} acks for {len(sent)} batches")
        for batch, ack in zip(sent, acks):
            if ack.sequence != batch.sequence:
                fail(f"ack for sequence {ack.sequence}, expected {batch.sequence}")
        for ack in acks[: args.batches]:
            if (ack.stored, ack.duplicates) != (args.batch_size, 0):
                fail(f"first delivery of {ack.sequence}: stored {ack.stored}, dup {ack.duplicates}")
        if len(sent) > args.batches:
            again = acks[-1]
            if (again.stored, again.duplicates) != (0, args.batch_size):
                fail(f"resent batch: stored {again.stored}, duplicates {again.duplicates}")

        query = rpc.QueryStub(channel)
        response = query.ListDeviations(
            pb.ListDeviationsRequest(host=host, limit=10000), metadata=metadata, timeout=10
        )
        got = {s.deviation.id: s for s in response.deviations}
        want = {d.id: d for b in batches for d in b.deviations}
        if len(response.deviations) != len(want):
            fail(f"queried {len(response.deviations)} deviations, streamed {len(want)}")
        if set(got) != set(want):
            fail(f"ids differ: missing {sorted(set(want) - set(got))[:5]}")
        for id_, d in want.items():
            s = got[id_]
            if s.deviation != d:
                fail(f"{id_} came back different:\n{s.deviation}\nexpected\n{d}")
            if s.agent_id != agent:
                fail(f"{id_} stored for agent {s.agent_id!r}, expected {agent!r}")
            if s.received_unix_nanos < now:
                fail(f"{id_} received at {s.received_unix_nanos}, before it was sent")
        times = [s.deviation.time_unix_nanos for s in response.deviations]
        if times != sorted(times, reverse=True):
            fail("deviations are not newest first")
        filtered = query.ListDeviations(
            pb.ListDeviationsRequest(host=host, workload="github:python/client/ci/build",
                                     kind=pb.DEVIATION_KIND_NEW_NETWORK_DESTINATION,
                                     min_severity=pb.SEVERITY_HIGH, limit=5),
            metadata=metadata,
            timeout=10,
        )
        if len(filtered.deviations) != min(5, len(want)):
            fail(f"filtered query returned {len(filtered.deviations)}")

    print(
        json.dumps(
            {
                "host": host,
                "agent_id": agent,
                "batches": len(sent),
                "acks": [[a.sequence, a.stored, a.duplicates] for a in acks],
                "queried": len(response.deviations),
                "grpcio": grpc.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
