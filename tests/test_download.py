"""Fetching published weights (the optional download rule), here from file:// URLs."""

from __future__ import annotations

import hashlib

import pytest

from neuroadapt.download import download
from neuroadapt.errors import InputError


@pytest.fixture
def published(tmp_path):
    source = tmp_path / "published" / "ct_fm.pt"
    source.parent.mkdir()
    source.write_bytes(b"weights" * 100_000)
    return source, hashlib.sha256(source.read_bytes()).hexdigest()


def test_a_matching_download_lands_under_its_name(published, tmp_path):
    source, sha256 = published
    target = tmp_path / "resources" / "weights" / "ct_fm.pt"
    assert download(source.as_uri(), target, sha256) == target
    assert target.read_bytes() == source.read_bytes()
    assert [p.name for p in target.parent.iterdir()] == ["ct_fm.pt"]  # no staging left


def test_a_checksum_mismatch_keeps_nothing(published, tmp_path):
    source, _ = published
    target = tmp_path / "weights" / "ct_fm.pt"
    with pytest.raises(InputError, match="SHA-256 checksum mismatch") as error:
        download(source.as_uri(), target, "0" * 64)
    assert source.as_uri() in str(error.value)
    assert list(target.parent.iterdir()) == []


def test_an_unreachable_url_is_a_clear_error(tmp_path):
    target = tmp_path / "weights" / "ct_fm.pt"
    with pytest.raises(InputError, match="cannot be downloaded"):
        download((tmp_path / "missing.pt").as_uri(), target, "0" * 64)
    assert list(target.parent.iterdir()) == []
