"""Print the TF_CONFIG of one worker of a multi-worker training job.

MultiWorkerMirroredStrategy reads TF_CONFIG: the same list of worker addresses on every worker,
and this worker's index in it (worker 0 is the chief). Kubernetes and Slurm give each worker an
index and a way to name its peers; this turns the two into the JSON TensorFlow expects:

    python deploy/tf_config.py --index 1 --count 2 --host-pattern 'cnnpipe-train-{index}.cnnpipe-train'
    python deploy/tf_config.py --index 1 --hosts node-a,node-b --port 23456

Standard library only: it runs before anything else is set up.
"""

from __future__ import annotations

import argparse
import json
import sys

DEFAULT_PORT = 2222


def worker_hosts(count: int, pattern: str) -> list[str]:
    """Hosts named by a pattern, e.g. an Indexed Job's ``<job>-{index}.<service>``."""
    return [pattern.format(index=index) for index in range(count)]


def tf_config(index: int, hosts: list[str], port: int) -> dict:
    return {
        "cluster": {"worker": [f"{host}:{port}" for host in hosts]},
        "task": {"type": "worker", "index": index},
    }


def _arguments(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="tf_config.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=int, required=True, help="this worker's index (0 = chief)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="every worker's port")
    named = parser.add_mutually_exclusive_group(required=True)
    named.add_argument("--hosts", help="comma-separated hosts, in index order (Slurm's node list)")
    named.add_argument("--host-pattern", help="a host name with {index} in it (Kubernetes)")
    parser.add_argument("--count", type=int, help="number of workers; with --host-pattern")
    return parser, parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser, args = _arguments(argv)
    if args.host_pattern is not None:
        if args.count is None or args.count < 1:
            parser.error("--host-pattern needs --count, a positive number of workers")
        if "{index}" not in args.host_pattern:
            parser.error(f"--host-pattern {args.host_pattern!r} has no {{index}} in it")
        try:
            hosts = worker_hosts(args.count, args.host_pattern)
        except (KeyError, IndexError, ValueError):
            parser.error(f"--host-pattern {args.host_pattern!r}: only {{index}} may be in braces")
    else:
        if args.count is not None:
            parser.error("--count goes with --host-pattern; --hosts already gives the count")
        hosts = [host.strip() for host in args.hosts.split(",") if host.strip()]
        if not hosts:
            parser.error("--hosts names no host")
    if not 0 <= args.index < len(hosts):
        parser.error(f"--index {args.index} is outside 0..{len(hosts) - 1} ({len(hosts)} workers)")
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port} is not a TCP port")
    print(json.dumps(tf_config(args.index, hosts, args.port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
