"""tilegraph.DataLoader: yields the combined batch that one executor call consumes.

`batch_size` is the micro-batch; each yielded batch holds micro-batch x deviceIterations x
replicationFactor x gradientAccumulation samples (PopTorch's arithmetic). Async mode loads
with worker processes and prefetching.
"""
import enum

import torch


class DataLoaderMode(enum.Enum):
    Sync = "sync"
    Async = "async"
    AsyncRebatched = "async_rebatched"


class DataLoader(torch.utils.data.DataLoader):
    def __init__(self, options, dataset, batch_size=1, shuffle=False, num_workers=0,
                 drop_last=True, persistent_workers=None, auto_distributed_partitioning=True,
                 mode=DataLoaderMode.Sync, async_options=None, rebatched_worker_size=None,
                 **kwargs):
        from ._options import Options
        options = options if options is not None else Options()
        self.micro_batch_size = batch_size
        self.combined_batch_size = (batch_size * options.device_iterations *
                                    options.replication_factor *
                                    options.Training.gradient_accumulation)
        if mode != DataLoaderMode.Sync and num_workers == 0:
            num_workers = 1
        if num_workers > 0:
            kwargs.setdefault("prefetch_factor", 2)
            if persistent_workers is None:
                persistent_workers = True
        super().__init__(dataset, batch_size=self.combined_batch_size, shuffle=shuffle,
                         num_workers=num_workers, drop_last=drop_last,
                         persistent_workers=bool(persistent_workers), **kwargs)
