"""tilegraph.DataLoader: yields the combined batch that one executor call consumes.

`batch_size` is the micro-batch; each yielded batch holds micro-batch x deviceIterations x
replicationFactor x gradientAccumulation samples (PopTorch's arithmetic). Async mode loads
with worker processes and prefetching. In a multi-process run each process reads its own
part of the dataset (ShardSampler).
"""

import torch


from .enums import DataLoaderMode  # noqa: E402 (PopTorch's poptorch.DataLoaderMode)


class ShardSampler(torch.utils.data.Sampler):
    """Process `process_id`'s part of a dataset of `length` samples split between
    `num_processes` processes: disjoint contiguous parts of a whole number of combined
    batches (`unit` samples) each, as PopTorch splits them (100 samples, batches of 4, 3
    processes: 32 each); the remainder is dropped, so every process runs the same number of
    steps and none waits in a collective for a batch that never comes. With `shuffle`, every
    process permutes the whole dataset with the same generator (seed + epoch) before taking
    its part, so the parts stay disjoint, epoch after epoch."""

    def __init__(self, length, num_processes, process_id, shuffle, seed=0, unit=1):
        self.length, self.num_processes, self.process_id = length, num_processes, process_id
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.part = unit * (length // (unit * num_processes))

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
        if not isinstance(options, Options):
            raise TypeError(f"DataLoader: expected tilegraph.Options, got "
                            f"{type(options).__name__}")
        options._freeze()  # as PopTorch: the batch arithmetic below was made from them
        self.options = options
        self.micro_batch_size = batch_size
        # batch_size=None: no batching, as torch's DataLoader: the dataset yields whole
        # combined batches itself.
        self.combined_batch_size = None if batch_size is None else (
            batch_size * options.device_iterations * options.replication_factor *
            options.Training.gradient_accumulation)
        if batch_size is None:
            drop_last = False  # (nothing to drop; torch refuses the pair)
        parts = options.Distributed.numDataParallel
        if parts > 1 and auto_distributed_partitioning and "sampler" not in kwargs:
            # Each process reads its own part of the dataset (PopTorch's partitioning); the
            # processes of one pipeline (stages on processes) read the same part.
            kwargs["sampler"] = ShardSampler(len(dataset), parts,
                                             options.Distributed.dataParallelId, shuffle,
                                             seed=options.random_seed or 0,
                                             unit=self.combined_batch_size or 1)
            shuffle = False
        if mode != DataLoaderMode.Sync and num_workers == 0:
            num_workers = 1
        if num_workers > 0:
            kwargs.setdefault("prefetch_factor", 2)
            if persistent_workers is None:
                persistent_workers = True
        if rebatched_worker_size is not None and mode != DataLoaderMode.AsyncRebatched:
            raise ValueError("rebatched_worker_size is for DataLoaderMode.AsyncRebatched")
        self.mode = mode
        self._async_options = dict(async_options or {})
        self._accessor = None
        worker_batch = self.combined_batch_size
        if mode == DataLoaderMode.AsyncRebatched and batch_size is None:
            raise ValueError("DataLoaderMode.AsyncRebatched needs a batch_size to rebatch to")
        self._drop_last = drop_last
        if mode == DataLoaderMode.AsyncRebatched:
            # Workers load smaller batches (keeping their partial last one); the accessor
            # joins them into combined batches and drops a partial last combined batch only
            # with drop_last (for an iterable dataset, each worker then drops fewer samples).
            worker_batch = rebatched_worker_size or 1
            if worker_batch > self.combined_batch_size:
                raise ValueError(f"rebatched_worker_size ({worker_batch}) exceeds the combined "
                                 f"batch ({self.combined_batch_size})")
            self._async_options["rebatched_size"] = self.combined_batch_size
            self._async_options["rebatched_drop_last"] = drop_last
            drop_last = False
        super().__init__(dataset, batch_size=worker_batch, shuffle=shuffle,
                         num_workers=num_workers, drop_last=drop_last,
                         persistent_workers=bool(persistent_workers), **kwargs)
        if self._async_options.get("early_preload"):
            self._accessor = AsynchronousDataAccessor(_BaseLoader(self), **self._async_options)

    @property
    def combinedBatchSize(self):
        """Samples per executor call: micro-batch x deviceIterations x replicationFactor x
        gradientAccumulation."""
        return self.combined_batch_size

    def __len__(self):
        if self.mode == DataLoaderMode.AsyncRebatched:
            try:
                samples = len(self.sampler)  # map-style: exactly the samples an epoch reads
            except TypeError:
                samples = super().__len__() * self.batch_size
            whole, rest = divmod(samples, self.combined_batch_size)
            return whole + (1 if rest and not self._drop_last else 0)
        return super().__len__()

    def __iter__(self):
        if self.mode == DataLoaderMode.Sync:
            return super().__iter__()
        if self._accessor is None:  # Async: batches are loaded ahead by an accessor
            self._accessor = AsynchronousDataAccessor(_BaseLoader(self), **self._async_options)
        return iter(self._accessor)

    def terminate(self):
        """Stops the asynchronous loading (Async modes)."""
        if self._accessor is not None:
            self._accessor.terminate()


class _BaseLoader:
    """A DataLoader iterated as torch's DataLoader (for the accessor of an Async one)."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        return torch.utils.data.DataLoader.__iter__(self.loader)

    def __len__(self):
        return torch.utils.data.DataLoader.__len__(self.loader)


_END = object()  # end of an epoch, in an accessor's queue


class _Failed:
    """An error of the loading thread, in an accessor's queue (raised by the consumer)."""

    def __init__(self, error):
        self.error = error


class AsynchronousDataAccessor:
    """Loads the next batches while the model runs (PopTorch's AsynchronousDataAccessor).

    A background thread iterates `dataset` (a DataLoader, or any iterable of batches) into
    a queue of `buffer_size` batches; iterating the accessor takes from the queue. The
    engine releases the GIL while it runs, so loading (and a DataLoader's worker
    processes) overlaps compute. With `load_indefinitely`, the thread goes on into the next
    epoch while the current one is consumed. Loading starts at construction (`early_preload`
    is accepted: an Async DataLoader given it creates its accessor at its own construction).
    `rebatched_size` joins batches along dimension 0 into batches of that
    many samples (a smaller final batch is dropped unless `rebatched_drop_last` is False).
    As PopTorch's, construction loads the first batch: a dataset that cannot be read raises
    then ("worker thread failed to start"); later errors in the loading thread are raised by
    the next `next()`. A DataLoader is iterated through a copy of its own, so iterating the
    loader directly (its persistent workers) does not disturb the accessor. PopTorch uses a
    process and shared memory instead of a thread; `sharing_strategy` and
    `miss_sleep_time_in_ms` are accepted for it."""

    def __init__(self, dataset, buffer_size=3, miss_sleep_time_in_ms=0.1,
                 load_indefinitely=True, early_preload=False, sharing_strategy=None,
                 rebatched_size=None, rebatched_drop_last=True):
        import copy
        import queue
        if isinstance(dataset, DataLoader) and dataset.mode != DataLoaderMode.Sync:
            from ._blocks import Error
            raise Error("AsynchronousDataAccessor: this DataLoader is already asynchronous "
                        "(mode Async); give it a Sync DataLoader")
        if not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(f"buffer_size must be an int >= 1, got {buffer_size!r}")
        if rebatched_size is not None and (not isinstance(rebatched_size, int) or
                                           rebatched_size < 2):
            raise ValueError(f"rebatched_size must be an int > 1, got {rebatched_size!r}")
        if isinstance(dataset, torch.utils.data.DataLoader):
            dataset = copy.copy(dataset)  # its own worker iterator
            dataset.__dict__["_iterator"] = None
        self.dataset = dataset
        self.rebatched_size = rebatched_size
        self.rebatched_drop_last = rebatched_drop_last
        self.load_indefinitely = load_indefinitely
        self._queue = queue.Queue(maxsize=buffer_size)
        self._thread = None
        self._stop = False
        self._epoch_open = False
        self._first = None  # the first batch, loaded by the constructor
        del early_preload  # loading starts at construction whatever it says, as PopTorch's
        self._start()
        first = self._next()
        if isinstance(first, _Failed):
            from ._blocks import Error
            raise Error("AsynchronousDataAccessor worker thread failed to start: "
                        f"{type(first.error).__name__}: {first.error}") from first.error
        self._first = first

    def _start(self):
        import threading
        if self._thread is None:
            self._thread = threading.Thread(target=self._load, daemon=True,
                                            name="tilegraph-data")
            self._thread.start()

    def _put(self, item):
        import queue
        while not self._stop:
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _load(self):
        try:
            while not self._stop:
                for batch in self._batches():
                    if not self._put(batch):
                        return
                if not self._put(_END) or not self.load_indefinitely:
                    return
        except BaseException as e:  # handed to the consumer
            self._put(_Failed(e))

    def _batches(self):
        if self.rebatched_size is None:
            yield from self.dataset
            return
        import torch.utils._pytree as pytree
        pending, count = [], 0
        for batch in self.dataset:
            leaves, spec = pytree.tree_flatten(batch)
            pending.append(leaves)
            count += leaves[0].shape[0]
            while count >= self.rebatched_size:
                joined = [torch.cat(parts) for parts in zip(*pending)]
                out = [j[:self.rebatched_size] for j in joined]
                rest = [j[self.rebatched_size:] for j in joined]
                yield pytree.tree_unflatten(out, spec)
                count -= self.rebatched_size
                pending = [rest] if count else []
        if count and not self.rebatched_drop_last:
            yield pytree.tree_unflatten([torch.cat(parts) for parts in zip(*pending)], spec)

    def __len__(self):
        n = len(self.dataset)
        if self.rebatched_size is not None and isinstance(self.dataset, (DataLoader,
                                                                         _BaseLoader)):
            loader = self.dataset.loader if isinstance(self.dataset, _BaseLoader) else \
                self.dataset
            return len(loader) if isinstance(loader, DataLoader) and loader.mode == \
                DataLoaderMode.AsyncRebatched else n * loader.batch_size // self.rebatched_size
        return n

    def __iter__(self):
        if self._epoch_open:  # a new iteration drops what is left of the current epoch
            while self._next() is not _END:
                pass
        self._start()
        self._epoch_open = True
        return self

    def _next(self):
        import queue
        if self._first is not None:
            first, self._first = self._first, None
            return first
        while True:
            if self._thread is not None and not self._thread.is_alive() and \
                    self._queue.empty():
                return _END
            try:
                item = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                continue
        if isinstance(item, _Failed) and self._epoch_open:
            self._epoch_open = False
            self._thread = None  # the loading thread ended with the error; start anew
            raise item.error
        return item

    def __next__(self):
        if not self._epoch_open:
            raise StopIteration
        item = self._next()
        if item is _END:
            self._epoch_open = False
            if not self.load_indefinitely:
                self._thread = None
            raise StopIteration
        return item

    def terminate(self):
        """Stops the loading thread."""
        import queue
        self._stop = True
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __del__(self):
        try:
            self.terminate()
        except Exception:
            pass
