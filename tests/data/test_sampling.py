import pytest

from pspnet.data.sampling import TrainBatches


def indices(batches: list[list[tuple[int, int]]]) -> list[int]:
    return [index for batch in batches for index, _ in batch]


def test_two_ranks_together_draw_what_one_rank_draws():
    single = list(TrainBatches(12, 6, iterations=5, seed=3))
    ranks = [list(TrainBatches(12, 3, 5, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    assert all(len(batch) == 3 for rank in ranks for batch in rank)
    for iteration, batch in enumerate(single):
        first, second = ranks[0][iteration], ranks[1][iteration]
        assert first + second == batch
        # 12 samples, 6 per step: each step lies inside one epoch, so no image twice.
        assert not {i for i, _ in first} & {i for i, _ in second}
    seeds = [seed for rank in ranks for batch in rank for _, seed in batch]
    assert len(set(seeds)) == len(seeds) == 30


@pytest.mark.parametrize("rank, world_size", [(0, 1), (1, 2)])
def test_resumed_run_draws_the_tail_of_the_uninterrupted_one(rank, world_size):
    full = list(TrainBatches(10, 3, 9, seed=2, rank=rank, world_size=world_size))
    for start in (1, 4, 8, 9):
        resumed = TrainBatches(10, 3, 9, start=start, seed=2, rank=rank, world_size=world_size)
        assert list(resumed) == full[start:], start


def test_a_seed_fixes_the_stream_and_another_seed_changes_it():
    batches = list(TrainBatches(10, 4, 6, seed=7))
    assert list(TrainBatches(10, 4, 6, seed=7)) == batches
    other = list(TrainBatches(10, 4, 6, seed=8))
    assert indices(other) != indices(batches)
    assert not {s for b in other for _, s in b} & {s for b in batches for _, s in b}


def test_every_index_is_drawn_once_per_epoch():
    drawn = indices(list(TrainBatches(7, 3, 7, seed=0)))  # 21 samples: three epochs of 7
    epochs = [drawn[e * 7 : (e + 1) * 7] for e in range(3)]
    assert all(sorted(epoch) == list(range(7)) for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) > 1  # reshuffled, not one order repeated


@pytest.mark.parametrize("start, expected", [(0, 9), (4, 5), (9, 0), (12, 0)])
def test_len_counts_the_iterations_left(start, expected):
    batches = TrainBatches(10, 2, 9, start=start)
    assert len(batches) == expected == len(list(batches))


def test_an_empty_dataset_is_refused():
    with pytest.raises(ValueError, match="empty"):
        TrainBatches(0, 2, 5)
