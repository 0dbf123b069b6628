"""Memory-mapped cohort images: batches read only their samples, as float32 tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuroadapt.errors import InputError
from neuroadapt.image_stack import ImageStack


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.random((2, 4, 5, 6)).astype(np.float16) for _ in range(5)]
    paths = []
    for k, array in enumerate(arrays):
        paths.append(tmp_path / f"sub-{k:02d}_tensor.npy")
        np.save(paths[-1], array)
    return paths, arrays


def test_a_batch_is_the_selected_samples_and_channels_as_float32(files):
    paths, arrays = files
    stack = ImageStack.from_files(paths, channels=[1])
    assert stack.shape == (5, 1, 4, 5, 6) and len(stack) == 5 and stack.dim() == 5
    batch = stack[np.array([3, 0])]
    assert batch.dtype == torch.float32 and batch.shape == (2, 1, 4, 5, 6)
    np.testing.assert_array_equal(batch[0, 0].numpy(), arrays[3][1].astype(np.float32))
    np.testing.assert_array_equal(stack[torch.tensor([4])][0].numpy(), arrays[4][[1]])
    assert stack[2].shape == (1, 4, 5, 6) and stack[1:3].shape == (2, 1, 4, 5, 6)


def test_take_and_zeroed_views(files):
    paths, arrays = files
    stack = ImageStack.from_files(paths, channels=[0, 1])
    part = stack.take([4, 1])
    assert part.shape == (2, 2, 4, 5, 6)
    np.testing.assert_array_equal(part[0].numpy(), arrays[4].astype(np.float32))
    removed = np.array([False, True, False, False, True])
    zeroed = stack.zeroed(removed)
    assert zeroed[1].abs().sum() == 0 and zeroed[0].abs().sum() > 0
    assert zeroed.take([4, 0])[0].abs().sum() == 0  # the view survives a subset
    assert stack[1].abs().sum() > 0  # the original is unchanged


def test_a_bad_value_is_named_when_its_batch_reads_it(files):
    paths, arrays = files
    broken = arrays[2].copy()
    broken[0, 0, 0, 0] = np.nan
    np.save(paths[2], broken)
    stack = ImageStack.from_files(paths, channels=[0, 1])
    stack[[0, 1]]  # other samples read fine
    with pytest.raises(InputError, match=r"sub-02_tensor.npy: holds NaN or infinite values"):
        stack[[1, 2]]


def test_an_unreadable_file_is_named(files):
    paths, _ = files
    paths[1].write_bytes(b"not an array")
    with pytest.raises(InputError, match=r"sub-01_tensor.npy: cannot be read as a .npy array"):
        ImageStack.from_files(paths, channels=[0])


def test_a_stack_of_a_tensor_in_memory():
    images = torch.arange(2 * 1 * 2 * 2 * 2, dtype=torch.float32).reshape(2, 1, 2, 2, 2)
    stack = ImageStack.from_tensor(images)
    assert torch.equal(stack[[1]], images[[1]]) and stack.shape == images.shape


@pytest.mark.parametrize("workers", [0, 2])
def test_the_batch_reader_gives_each_epochs_batches_in_order(files, workers):
    from neuroadapt.image_stack import BatchReader

    stack = ImageStack.from_files(files[0], [0, 1])
    reader = BatchReader(stack, workers)
    for batches in ([np.array([2, 0]), np.array([1])], [np.array([1, 2, 0])]):  # two epochs
        read = list(reader.epoch(batches))
        assert [index.tolist() for index, _ in read] == [b.tolist() for b in batches]
        for index, images in read:
            torch.testing.assert_close(images, stack[index], rtol=0, atol=0)


def test_the_batch_reader_names_a_bad_file_from_a_worker(files):
    from neuroadapt.image_stack import BatchReader

    paths, arrays = files
    bad = arrays[1].copy()
    bad[0, 0, 0, 0] = np.nan
    np.save(paths[1], bad)
    reader = BatchReader(ImageStack.from_files(paths, [0]), workers=1)
    with pytest.raises(InputError, match="holds NaN or infinite values"):
        list(reader.epoch([np.array([0, 1])]))
