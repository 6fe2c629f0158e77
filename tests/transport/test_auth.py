"""Peer authentication: HMAC tags and the cluster secret file."""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyval.peer.auth import AuthError, Authenticator, load_secret
from keyval.errors import ConfigError


def test_seal_then_open_gives_the_payload_back():
    auth = Authenticator(b"secret")
    sealed = auth.seal(b"payload")
    assert len(sealed) == len(b"payload") + Authenticator.TAG_SIZE
    assert auth.open(sealed) == b"payload"
    assert auth.open(memoryview(sealed)) == b"payload"
    assert auth.open(Authenticator(b"secret").seal(b"")) == b""


def test_a_different_secret_is_refused():
    with pytest.raises(AuthError):
        Authenticator(b"other").open(Authenticator(b"secret").seal(b"payload"))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.data())
def test_any_flipped_bit_is_refused(payload, data):
    auth = Authenticator(b"secret")
    sealed = bytearray(auth.seal(payload))
    bit = data.draw(st.integers(0, len(sealed) * 8 - 1))
    sealed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(AuthError):
        auth.open(bytes(sealed))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_only_raise_auth_error(data):
    try:
        Authenticator(b"secret").open(data)
    except AuthError:
        pass


def test_shorter_than_a_tag_is_refused():
    with pytest.raises(AuthError, match="shorter"):
        Authenticator(b"secret").open(b"x" * 31)


def test_an_empty_secret_is_refused():
    with pytest.raises(ValueError):
        Authenticator(b"")


def write_secret(tmp_path, content: bytes, mode: int) -> str:
    path = tmp_path / "secret"
    path.write_bytes(content)
    os.chmod(path, mode)
    return str(path)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_load_secret_accepts_owner_only_files(tmp_path, mode):
    assert load_secret(write_secret(tmp_path, b"s3cret", mode)) == b"s3cret"


def test_load_secret_drops_one_trailing_newline(tmp_path):
    assert load_secret(write_secret(tmp_path, b"s3cret\n", 0o600)) == b"s3cret"
    assert load_secret(write_secret(tmp_path, b"s3cret\r\n", 0o600)) == b"s3cret"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644, 0o700, 0o660])
def test_load_secret_refuses_files_others_could_touch(tmp_path, mode):
    path = write_secret(tmp_path, b"s3cret", mode)
    with pytest.raises(ConfigError) as info:
        load_secret(path)
    message = str(info.value)
    assert "\n" not in message and path in message and "0600" in message and f"{mode:04o}" in message


@pytest.mark.parametrize("content", [b"", b"\n"])
def test_load_secret_refuses_an_empty_file(tmp_path, content):
    with pytest.raises(ConfigError, match="empty"):
        load_secret(write_secret(tmp_path, content, 0o600))


def test_load_secret_missing_or_not_a_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_secret(str(tmp_path / "nope"))
    with pytest.raises(ConfigError):
        load_secret(str(tmp_path))
