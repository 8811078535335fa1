"""zrep.security.keys: zcert keypairs that pyzmq can read, secrets that stay secret."""

from __future__ import annotations

import os
import stat

import pytest
import zmq
import zmq.auth

from zrep.security.keys import KeyFileError, check_z85, fingerprint, load_public, load_secret, new_keypair


def test_a_new_keypair_is_zcert_readable_by_pyzmq_and_its_secret_is_0600(tmp_path):
    pub_path, sec_path, pair = new_keypair("orders-app", tmp_path / "keys")
    assert stat.S_IMODE(sec_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert zmq.auth.load_certificate(str(pub_path)) == (pair.public, None)
    assert zmq.auth.load_certificate(str(sec_path)) == (pair.public, pair.secret)
    assert load_public(pub_path) == load_public(sec_path) == pair.public
    assert load_secret(sec_path) == pair
    assert zmq.curve_public(pair.secret) == pair.public
    assert pair.secret.decode() not in pub_path.read_text()


def test_an_existing_key_is_never_overwritten(tmp_path):
    new_keypair("n1", tmp_path)
    before = (tmp_path / "n1.key_secret").read_bytes()
    with pytest.raises(KeyFileError, match="never overwritten"):
        new_keypair("n1", tmp_path)
    assert (tmp_path / "n1.key_secret").read_bytes() == before


def test_a_readable_secret_is_refused_with_the_fix(tmp_path):
    _, sec, _ = new_keypair("n1", tmp_path)
    os.chmod(sec, 0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_secret(sec)


def test_a_secret_that_does_not_match_its_public_key_is_refused(tmp_path):
    _, sec, pair = new_keypair("n1", tmp_path)
    other_public, _ = zmq.curve_keypair()
    sec.write_text(sec.read_text().replace(pair.public.decode(), other_public.decode()))
    with pytest.raises(KeyFileError, match="does not match"):
        load_secret(sec)


@pytest.mark.parametrize("bad", ["short", "x" * 39 + "~", ""])
def test_malformed_keys_are_named(bad):
    with pytest.raises(KeyFileError, match="not a CURVE key"):
        check_z85(bad, "node 2's key")


def test_bad_names_and_missing_files_say_what_to_do(tmp_path):
    with pytest.raises(KeyFileError, match="letters, digits"):
        new_keypair("../evil", tmp_path)
    with pytest.raises(KeyFileError, match="zrep keys new"):
        load_secret(tmp_path / "nope.key_secret")
    assert fingerprint(b"Hq3fABCDEFGH") == "Hq3fABCD"
