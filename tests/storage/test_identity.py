"""The data directory's identity: written once, durably, read back; a damaged one is an error, not a new disk."""

from __future__ import annotations

import json

import pytest

from zrep.errors import StorageError
from zrep.storage.identity import (
    INCARNATION_BITS,
    create_identity,
    identity_path,
    read_identity,
)


def test_a_fresh_directory_has_no_identity_until_one_is_created(tmp_path):
    d = tmp_path / "data" / "node-1"
    assert read_identity(d) is None
    ident = create_identity(d, "init")
    assert 0 < ident.incarnation < 1 << INCARNATION_BITS
    assert read_identity(d) == ident
    assert [p.name for p in d.iterdir()] == ["identity"]  # no temporary file left behind


def test_each_directory_gets_its_own_incarnation(tmp_path):
    incs = {create_identity(tmp_path / str(i), "join").incarnation for i in range(20)}
    assert len(incs) == 20
    assert read_identity(tmp_path / "3").mode == "join"


@pytest.mark.parametrize("doc", [b"{", b"{}", json.dumps({"incarnation": 0, "mode": "init"}).encode(),
                                 json.dumps({"incarnation": 5, "mode": "seed"}).encode(),
                                 json.dumps({"incarnation": "5", "mode": "init"}).encode()])
def test_a_damaged_identity_refuses_rather_than_becoming_a_new_disk(tmp_path, doc):
    identity_path(tmp_path).write_bytes(doc)
    with pytest.raises(StorageError, match="damaged"):
        read_identity(tmp_path)


def test_an_unknown_mode_is_refused(tmp_path):
    with pytest.raises(ValueError):
        create_identity(tmp_path, "observer")
