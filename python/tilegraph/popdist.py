"""Graphcore's popdist (Poplar Distributed Configuration) on tilegraph's process launch.

PopTorch scripts written for poprun ask popdist where they run and build their Options from
it; with `import tilegraph.popdist as popdist` they run unchanged under `python -m
tilegraph.run` (tilegraph's poprun, on Open MPI):

    python -m tilegraph.run -n 2 --num-replicas 4 train.py

    if popdist.isPopdistEnvSet():
        opts = popdist.poptorch.Options()   # 2 local replicas, this process's id
    else:
        opts = poptorch.Options().replicationFactor(4)

What each process is comes from Open MPI's environment (OMPI_COMM_WORLD_RANK / _SIZE, as
Options().Distributed reads it); the replica count and IPUs per replica from poprun's
variables (POPDIST_NUM_TOTAL_REPLICAS, POPDIST_NUM_IPUS_PER_REPLICA), which tilegraph.run's
--num-replicas / --ipus-per-replica set. Without them each process holds one replica.
"""
import os
import types

__all__ = ["isPopdistEnvSet", "getInstanceIndex", "getNumInstances", "getNumTotalReplicas",
           "getNumLocalReplicas", "getReplicaIndexOffset", "getNumIpusPerReplica",
           "getDeviceId", "poptorch"]

_RANK, _SIZE = "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"
_TOTAL_REPLICAS, _IPUS_PER_REPLICA = "POPDIST_NUM_TOTAL_REPLICAS", "POPDIST_NUM_IPUS_PER_REPLICA"


def _env_int(name, default, low):
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"popdist: {name}={text!r} is not an integer") from None
    if value < low:
        raise ValueError(f"popdist: {name} must be >= {low}, got {value}")
    return value


def isPopdistEnvSet():
    """Whether this process was started by a distributed launch (tilegraph.run / mpirun)."""
    return _SIZE in os.environ or _TOTAL_REPLICAS in os.environ


def getNumInstances():
    return _env_int(_SIZE, 1, 1)


def getInstanceIndex():
    index = _env_int(_RANK, 0, 0)
    if index >= getNumInstances():
        raise ValueError(f"popdist: {_RANK}={index} is not below {_SIZE}={getNumInstances()}")
    return index


def getNumTotalReplicas():
    total = _env_int(_TOTAL_REPLICAS, getNumInstances(), 1)
    if total % getNumInstances():
        raise ValueError(f"popdist: {total} replicas do not divide among {getNumInstances()} "
                         f"processes")
    return total


def getNumLocalReplicas():
    return getNumTotalReplicas() // getNumInstances()


def getReplicaIndexOffset():
    """The global index of this process's first replica."""
    return getInstanceIndex() * getNumLocalReplicas()


def getNumIpusPerReplica():
    return _env_int(_IPUS_PER_REPLICA, 1, 1)


def getDeviceId():
    """poprun's IPU device id; tilegraph's devices have none: 0."""
    return 0


def _options(ipus_per_replica=None):
    """popdist.poptorch.Options: tilegraph Options for this process (its local replicas and
    its place among the processes). ipus_per_replica, when given, must agree with the
    launch's (a pipelined model's stages are placed by its Blocks, as without popdist)."""
    from ._options import Options
    if ipus_per_replica is not None:
        if isinstance(ipus_per_replica, bool) or not isinstance(ipus_per_replica, int) or \
                ipus_per_replica < 1:
            raise ValueError(f"popdist.poptorch.Options: ipus_per_replica must be an int >= 1, "
                             f"got {ipus_per_replica!r}")
        if _IPUS_PER_REPLICA in os.environ and ipus_per_replica != getNumIpusPerReplica():
            raise ValueError(f"popdist.poptorch.Options: ipus_per_replica={ipus_per_replica}, "
                             f"but the launch gave {getNumIpusPerReplica()} per replica")
    opts = Options()
    opts.replicationFactor(getNumLocalReplicas())
    opts.Distributed.configureProcessId(getInstanceIndex(), getNumInstances())
    return opts


# `popdist.poptorch.Options(...)`, as Graphcore's examples write it.
poptorch = types.SimpleNamespace(Options=_options)
