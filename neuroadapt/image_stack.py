"""A cohort's images, read from memory-mapped ``.npy`` files when a batch asks for them.

Model-ready tensors are ``(C, X, Y, Z)`` float16 arrays, one file per sample. Reading them
all into one float32 tensor needs 16 MiB a sample at paper size (2 x 128^3): 80 GiB for
5,000 subjects. Here a batch maps its own samples' files (``np.load(mmap_mode="r")``), copies
them out and unmaps them, so a train job's memory does not grow with the cohort (a mapping
kept open would count every page ever read in the job's resident memory); the operating
system's page cache keeps files that are read every epoch.

``stack[index]`` (an int, a slice, a list, an array or a tensor of sample indices) is a
float32 ``(len(index), C, X, Y, Z)`` tensor of the selected channels; ``stack.take(rows)``
is a stack of those samples without reading them; ``stack.zeroed(rows)`` one in which those
samples read as zeros (a missing image, paper 4). A stack can also wrap a tensor already in
memory (``ImageStack.from_tensor``), which the tests and small synthetic cohorts use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from neuroadapt.errors import InputError

__all__ = ["BatchReader", "ImageStack"]


class ImageStack:
    def __init__(
        self,
        sources: Sequence,
        channels: Sequence[int] | None,
        names: Sequence[str],
        scale: np.ndarray | None = None,
    ):
        # per sample: a .npy path (mapped when read) or an array-like (C_all, X, Y, Z)
        self._sources = sources
        self._channels = None if channels is None else list(channels)
        self._names = list(names)  # per sample: where it comes from, for messages
        self._scale = np.ones(len(sources), np.float32) if scale is None else scale
        self._shapes = [_shape(source) for source in sources]
        first = self._shapes[0] if len(sources) else (0, 0, 0, 0)
        n_channels = first[0] if channels is None else len(self._channels)
        self._sample_shape = (n_channels, *first[1:])

    @classmethod
    def from_files(cls, paths: Sequence[str | Path], channels: Sequence[int]) -> ImageStack:
        """A stack of these files (each header read once, to check it is a .npy array)."""
        return cls([Path(p) for p in paths], channels, [str(p) for p in paths])

    @classmethod
    def from_tensor(cls, images: torch.Tensor) -> ImageStack:
        """A stack over ``images`` ``(N, C, X, Y, Z)`` already in memory."""
        return cls(images, None, [f"sample {k}" for k in range(len(images))])

    # -- the parts of a tensor's interface the training code uses
    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self._sample_shape))

    @property
    def file_shapes(self) -> list[tuple[int, ...]]:
        """Each sample's full array shape, all channels (from the headers)."""
        return list(self._shapes)

    def __len__(self) -> int:
        return len(self._sources)

    def dim(self) -> int:
        return 1 + len(self._sample_shape)

    def _rows(self, index) -> np.ndarray:
        if isinstance(index, slice):
            return np.arange(len(self))[index]
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        rows = np.asarray(index)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return rows.astype(np.int64).reshape(-1)

    def __getitem__(self, index) -> torch.Tensor:
        single = isinstance(index, int | np.integer)
        rows = self._rows(index)
        out = np.empty((len(rows), *self._sample_shape), np.float32)
        for k, row in enumerate(rows):
            source = self._sources[row]
            if isinstance(source, Path):
                source = _open(source)
            sample = source if self._channels is None else source[self._channels]
            out[k] = np.asarray(sample, np.float32) * self._scale[row]
            del source, sample  # unmaps the file
            if not np.isfinite(out[k]).all():
                raise InputError(
                    self._names[row],
                    "holds NaN or infinite values",
                    "check the subject's preprocessing",
                )
        tensor = torch.from_numpy(out)
        return tensor[0] if single else tensor

    def __iter__(self):
        for row in range(len(self)):
            yield self[row]

    def take(self, index) -> ImageStack:
        """The stack of the samples ``index``, in that order (nothing read)."""
        rows = self._rows(index)
        return ImageStack(
            [self._sources[r] for r in rows],
            self._channels,
            [self._names[r] for r in rows],
            self._scale[rows].copy(),
        )

    def zeroed(self, removed: np.ndarray) -> ImageStack:
        """The same stack with the samples where ``removed`` (bool ``(N,)``) is true zero."""
        scale = self._scale * ~np.asarray(removed, bool)
        return ImageStack(self._sources, self._channels, self._names, scale.astype(np.float32))


def _open(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise InputError(
            path, f"cannot be read as a .npy array ({error})", "rerun its rule"
        ) from None


def _shape(source) -> tuple[int, ...]:
    if isinstance(source, Path):
        return tuple(_open(source).shape)
    return tuple(source.shape)


class BatchReader:
    """Reads an epoch's batches of a stack ahead of training: a PyTorch DataLoader over the
    given index batches with ``workers`` worker processes (kept across epochs) and, on CUDA,
    pinned memory, so the next batches are read while the model computes. ``workers=0``
    reads each batch in this process when it is due, as indexing the stack does.

    ``reader.epoch(batches)`` yields ``(index, images)`` for each index array in
    ``batches``, in that order; the images are ``stack[index]``."""

    def __init__(self, stack: ImageStack, workers: int = 0, pin_memory: bool = False):
        self._sampler = _EpochBatches()
        self._loader = torch.utils.data.DataLoader(
            _Batches(stack),
            batch_sampler=self._sampler,
            num_workers=int(workers),
            collate_fn=_as_is,
            pin_memory=pin_memory,
            persistent_workers=int(workers) > 0,
            # with workers, at most 2 batches each read ahead: memory stays flat
            prefetch_factor=2 if int(workers) > 0 else None,
        )

    def epoch(self, batches: Sequence[np.ndarray]):
        self._sampler.batches = [np.asarray(b) for b in batches]
        for index, images in zip(self._sampler.batches, self._loader, strict=True):
            if isinstance(images, InputError):  # a worker's, as the stack raised it
                raise images
            yield index, images


class _EpochBatches(torch.utils.data.Sampler):
    """The current epoch's index batches (set before each epoch; the workers persist)."""

    def __init__(self):
        self.batches: list[np.ndarray] = []

    def __iter__(self):
        return iter([b.tolist() for b in self.batches])

    def __len__(self) -> int:
        return len(self.batches)


class _Batches(torch.utils.data.Dataset):
    def __init__(self, stack: ImageStack):
        self.stack = stack

    def __getitems__(self, rows: list[int]) -> torch.Tensor | InputError:  # one read a batch
        try:
            return self.stack[rows]
        except InputError as error:  # DataLoader would re-raise it as a RuntimeError
            return error

    def __len__(self) -> int:
        return len(self.stack)


def _as_is(batch):
    return batch
