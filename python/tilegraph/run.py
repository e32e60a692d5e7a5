"""python -m tilegraph.run: start a script on several processes, in the spirit of PopRun.

    python -m tilegraph.run -n 4 train.py --epochs 2
    python -m tilegraph.run -n 8 --hosts node1,node2 train.py
    python -m tilegraph.run -n 2 --num-replicas 4 train.py   (popdist scripts: tilegraph.popdist)

It wraps Open MPI's mpirun: N processes (spread over --hosts, as many slots as needed on
each: oversubscription is allowed), not bound to cores (their OpenMP threads share them),
each with OMP_NUM_THREADS = cores / processes per host unless set, the environment forwarded
(PYTHONPATH, OMP_*, TILEGRAPH_*, and --env NAME), and, as root, the two OMPI_ALLOW_RUN_AS_ROOT
switches Open MPI asks for. In each process tilegraph reads its rank and the process count
from Open MPI's environment (Options().Distributed), so the script needs no changes.
The exit status is mpirun's: non-zero if any process failed (Open MPI then stops the rest).
"""
import argparse
import os
import shutil
import subprocess
import sys


def build_command(args):
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        raise SystemExit("tilegraph.run: mpirun not found (install Open MPI: apt-get install "
                         "openmpi-bin libopenmpi-dev)")
    cmd = [mpirun, "-np", str(args.n), "--oversubscribe", "--bind-to", "none"]
    if args.hosts:
        hosts = args.hosts.split(",")
        per_host = -(-args.n // len(hosts))
        cmd += ["--host", ",".join(f"{h}:{per_host}" for h in hosts)]
    env = dict(os.environ)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    if "OMP_NUM_THREADS" not in env:
        per_host = -(-args.n // max(1, len(args.hosts.split(",")) if args.hosts else 1))
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // per_host))
    # poprun's replica settings, read by tilegraph.popdist (popdist.getNumLocalReplicas(), ...)
    if args.num_replicas is not None:
        env["POPDIST_NUM_TOTAL_REPLICAS"] = str(args.num_replicas)
    if args.ipus_per_replica is not None:
        env["POPDIST_NUM_IPUS_PER_REPLICA"] = str(args.ipus_per_replica)
    forward = [k for k in env if k in ("PYTHONPATH", "OMP_NUM_THREADS", "PATH", "LD_LIBRARY_PATH")
               or k.startswith("TILEGRAPH_") or k.startswith("POPDIST_")] + list(args.env)
    for name in sorted(set(forward)):
        if name in env:
            cmd += ["-x", name]
    cmd += [sys.executable, args.script] + args.script_args
    return cmd, env


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tilegraph.run", description=__doc__.split("\n")[0])
    p.add_argument("-n", "--num-processes", dest="n", type=int, required=True)
    p.add_argument("--hosts", default="", help="comma-separated host names (default: this one)")
    p.add_argument("--env", action="append", default=[], help="another variable to forward")
    p.add_argument("--num-replicas", type=int, default=None,
                   help="replicas in all (poprun's; tilegraph.popdist gives each process its "
                        "share); a multiple of -n")
    p.add_argument("--ipus-per-replica", type=int, default=None,
                   help="poprun's, for tilegraph.popdist (the stages come from the model)")
    p.add_argument("--print-command", action="store_true", help="print mpirun's command line")
    p.add_argument("script")
    p.add_argument("script_args", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("-n must be >= 1")
    if args.num_replicas is not None and (args.num_replicas < 1 or args.num_replicas % args.n):
        p.error("--num-replicas must be a positive multiple of -n")
    if args.ipus_per_replica is not None and args.ipus_per_replica < 1:
        p.error("--ipus-per-replica must be >= 1")
    cmd, env = build_command(args)
    if args.print_command:
        print(" ".join(cmd), flush=True)
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    sys.exit(main())
