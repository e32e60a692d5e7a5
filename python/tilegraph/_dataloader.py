"""tilegraph.DataLoader: yields the combined batch that one executor call consumes.

`batch_size` is the micro-batch; each yielded batch holds micro-batch x deviceIterations x
replicationFactor x gradientAccumulation samples (PopTorch's arithmetic). Async mode loads
with worker processes and prefetching. In a multi-process run each process reads its own
part of the dataset (ShardSampler).
"""

import torch


from .enums import DataLoaderMode  # noqa: E402


class ShardSampler(torch.utils.data.Sampler):
    """Process `process_id`'s part of a dataset of `length` samples split between
    `num_processes` processes: disjoint contiguous parts of length // num_processes samples
    (the remainder is dropped, so every process runs the same number of steps and none waits
    in a collective for a batch that never comes). With `shuffle`, every process permutes the
    whole dataset with the same generator (seed + epoch) before taking its part, so the
    parts stay disjoint and cover the dataset, epoch after epoch."""

    def __init__(self, length, num_processes, process_id, shuffle, seed=0):
        self.length, self.num_processes, self.process_id = length, num_processes, process_id
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.part = length // num_processes

    def __len__(self):
        return self.part

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=g)
        else:
            order = torch.arange(self.length)
        self.epoch += 1
        start = self.process_id * self.part
        return iter(order[start:start + self.part].tolist())


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
        parts = options.Distributed.numDataParallel
        if parts > 1 and auto_distributed_partitioning and "sampler" not in kwargs:
            # Each process reads its own part of the dataset (PopTorch's partitioning); the
            # processes of one pipeline (stages on processes) read the same part.
            kwargs["sampler"] = ShardSampler(len(dataset), parts,
                                             options.Distributed.dataParallelId, shuffle,
                                             seed=options.random_seed or 0)
            shuffle = False
        if mode != DataLoaderMode.Sync and num_workers == 0:
            num_workers = 1
        if num_workers > 0:
            kwargs.setdefault("prefetch_factor", 2)
            if persistent_workers is None:
                persistent_workers = True
        super().__init__(dataset, batch_size=self.combined_batch_size, shuffle=shuffle,
                         num_workers=num_workers, drop_last=drop_last,
                         persistent_workers=bool(persistent_workers), **kwargs)
