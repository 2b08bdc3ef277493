"""A Ray cluster on this machine for the tests: a head and one worker node,
each its own raylet, with Ray's own test utility (ray.cluster_utils.Cluster,
how Ray tests multi-node behaviour on one machine).

    python ray_cluster.py --temp-dir DIR [--cpus-per-node N]

Prints one JSON line, {"address": "127.0.0.1:port", "nodes": 2}, once both
nodes have joined; runs until its standard input closes, then shuts the
cluster down (the test drops it, or dies, and the cluster goes with it).
"""

import argparse
import json
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--temp-dir", required=True)
    parser.add_argument("--cpus-per-node", type=int, default=1)
    args = parser.parse_args()
    # Ray keeps its sessions, sockets and the current cluster's address under
    # $RAY_TMPDIR/ray: this cluster's own, not a shared /tmp/ray.
    os.makedirs(args.temp_dir, exist_ok=True)
    os.environ["RAY_TMPDIR"] = args.temp_dir
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    from ray.cluster_utils import Cluster

    common = {
        "num_cpus": args.cpus_per_node,
        "node_ip_address": "127.0.0.1",
        # No dashboard, no usage reports: nothing beyond loopback.
        "include_dashboard": False,
    }
    cluster = Cluster(
        initialize_head=True,
        head_node_args=common,
    )
    try:
        cluster.add_node(**common)
        cluster.wait_for_nodes()
        print(json.dumps({"address": cluster.address, "nodes": 2}), flush=True)
        sys.stdin.read()
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
