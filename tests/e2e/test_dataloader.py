"""tilegraph.DataLoader and AsynchronousDataAccessor (PopTorch's data loading): the combined
batch one call consumes, asynchronous loading ahead of the model (every sample, in order,
epoch after epoch), rebatching, errors from the loading thread, and training fed by an
asynchronous loader equal to training fed by a synchronous one."""
import pytest
import torch

import tilegraph


class Squares(torch.utils.data.Dataset):
    def __init__(self, n=24):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.tensor([float(i)]), torch.tensor(i * i)


def _options():
    return tilegraph.Options().deviceIterations(2).Training.gradientAccumulation(3)


def test_combined_batch_size_is_micro_batch_times_steps():
    loader = tilegraph.DataLoader(_options(), Squares(), batch_size=2)
    assert loader.combinedBatchSize == 2 * 2 * 3
    assert len(loader) == 24 // 12
    x, y = next(iter(loader))
    assert x.shape == (12, 1) and y.shape == (12,)


class Batches(torch.utils.data.IterableDataset):
    """A dataset that yields ready-made batches (a DataLoader with batch_size=None)."""

    def __iter__(self):
        for i in range(3):
            yield torch.full([12, 2], float(i))


@pytest.mark.parametrize("mode", [tilegraph.DataLoaderMode.Sync, tilegraph.DataLoaderMode.Async])
def test_batch_size_none_passes_the_datasets_batches_through(mode):
    loader = tilegraph.DataLoader(_options(), Batches(), batch_size=None, mode=mode)
    assert loader.combinedBatchSize is None
    got = list(loader)
    assert [b.shape for b in got] == [(12, 2)] * 3 and [b[0, 0].item() for b in got] == [0, 1, 2]
    with pytest.raises(ValueError, match="needs a batch_size"):
        tilegraph.DataLoader(_options(), Batches(), batch_size=None,
                             mode=tilegraph.DataLoaderMode.AsyncRebatched)


@pytest.mark.parametrize("mode", [tilegraph.DataLoaderMode.Async,
                                  tilegraph.DataLoaderMode.AsyncRebatched])
def test_async_modes_yield_every_sample_in_order_each_epoch(mode):
    sync = tilegraph.DataLoader(_options(), Squares(), batch_size=2)
    loader = tilegraph.DataLoader(_options(), Squares(), batch_size=2, mode=mode,
                                  **({"rebatched_worker_size": 4}
                                     if mode == tilegraph.DataLoaderMode.AsyncRebatched else {}))
    try:
        expected = [b for b in sync]
        for _ in range(3):  # epochs
            got = [b for b in loader]
            assert len(got) == len(expected) == len(loader)
            for (gx, gy), (ex, ey) in zip(got, expected):
                assert torch.equal(gx, ex) and torch.equal(gy, ey)
    finally:
        loader.terminate()


def test_accessor_over_a_dataloader_and_early_exit_of_an_epoch():
    base = torch.utils.data.DataLoader(Squares(), batch_size=4)
    accessor = tilegraph.AsynchronousDataAccessor(base, buffer_size=2, early_preload=True)
    try:
        first = next(iter(accessor))
        assert torch.equal(first[0].flatten(), torch.arange(4.0))
        batches = list(accessor)  # a new iteration starts the epoch from the beginning
        assert len(batches) == 6 and torch.equal(batches[-1][1], torch.tensor([400, 441,
                                                                                484, 529]))
    finally:
        accessor.terminate()


def test_rebatching_joins_small_batches():
    base = torch.utils.data.DataLoader(Squares(10), batch_size=3)
    accessor = tilegraph.AsynchronousDataAccessor(base, rebatched_size=4,
                                                  load_indefinitely=False)
    try:
        sizes = [x.shape[0] for x, _ in accessor]
        assert sizes == [4, 4]  # 10 samples: two full batches, the 2 left over dropped
    finally:
        accessor.terminate()


def test_an_error_while_loading_reaches_the_consumer():
    class Broken(Squares):
        def __getitem__(self, i):
            if i == 5:
                raise IndexError("sample 5 is corrupt")
            return super().__getitem__(i)

    accessor = tilegraph.AsynchronousDataAccessor(torch.utils.data.DataLoader(Broken(),
                                                                              batch_size=2))
    try:
        with pytest.raises(IndexError, match="sample 5 is corrupt"):
            list(accessor)
    finally:
        accessor.terminate()
    with pytest.raises(tilegraph.Error, match="already asynchronous"):
        tilegraph.AsynchronousDataAccessor(tilegraph.DataLoader(
            tilegraph.Options(), Squares(), mode=tilegraph.DataLoaderMode.Async))


def test_training_from_an_async_loader_equals_a_sync_one():
    weights = []
    for mode in (tilegraph.DataLoaderMode.Sync, tilegraph.DataLoaderMode.Async):
        torch.manual_seed(0)
        model = torch.nn.Linear(1, 1)

        class Fit(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.m = model

            def forward(self, x, y):
                return torch.nn.functional.mse_loss(self.m(x).squeeze(1), y.float() / 500)

        opts = _options()
        loader = tilegraph.DataLoader(opts, Squares(), batch_size=2, mode=mode)
        run = tilegraph.trainingModel(Fit(), opts, torch.optim.SGD(model.parameters(), lr=0.01))
        for _ in range(2):
            for x, y in loader:
                run(x, y)
        loader.terminate()
        weights.append(model.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1])


def test_async_rebatched_keeps_or_drops_the_last_partial_batch_as_drop_last_says():
    """AsyncRebatched: workers load small batches; the partial last *combined* batch is kept
    with drop_last=False (101 samples, batches of 4: 26 batches, every sample once) and
    dropped with drop_last=True (25 batches of 4), whatever the worker batch size."""
    data = torch.utils.data.TensorDataset(torch.arange(101.0))
    for drop_last, worker, want in ((False, None, (26, 101)), (True, 3, (25, 100))):
        loader = tilegraph.DataLoader(tilegraph.Options(), data, batch_size=4, num_workers=2,
                                      mode=tilegraph.DataLoaderMode.AsyncRebatched,
                                      drop_last=drop_last, rebatched_worker_size=worker)
        batches = [b for (b,) in loader]
        loader.terminate()
        assert (len(loader), len(batches), sum(b.numel() for b in batches)) == \
            (want[0],) + want
        seen = torch.cat(batches)
        assert torch.equal(seen.sort().values, torch.arange(float(want[1])))


def test_an_accessor_neither_shares_its_loaders_workers_nor_hides_a_broken_dataset():
    data = torch.utils.data.TensorDataset(torch.arange(40.0))
    loader = tilegraph.DataLoader(tilegraph.Options(), data, batch_size=4, num_workers=2)
    accessor = tilegraph.AsynchronousDataAccessor(loader)
    assert sum(1 for _ in accessor) == 10
    assert sum(1 for _ in loader) == 10  # the loader's own workers, not the accessor's
    accessor.terminate()

    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            raise ValueError("unreadable sample")

    with pytest.raises(tilegraph.Error, match="worker thread failed to start: ValueError"):
        tilegraph.AsynchronousDataAccessor(tilegraph.DataLoader(tilegraph.Options(), Broken()))


def test_processes_read_whole_combined_batches_of_the_dataset():
    """configureProcessId(1, 3) with batches of 4 over 100 samples: PopTorch's split,
    32 samples (8 batches) per process, process 1 reading 32..63."""
    opts = tilegraph.Options()
    opts.Distributed.configureProcessId(1, 3)
    loader = tilegraph.DataLoader(opts, torch.utils.data.TensorDataset(torch.arange(100.0)),
                                  batch_size=4)
    values = torch.cat([b for (b,) in loader])
    assert torch.equal(values, torch.arange(32.0, 64.0))
