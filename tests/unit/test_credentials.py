"""Station passwords: salted SHA-256 hashes, constant-time check, length policy."""

from __future__ import annotations

import pytest

from evflex.fleet.credentials import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    WeakPasswordError,
    check_password_policy,
    generate_password,
    hash_password,
    verify_password,
)

SECRET = "s3cret-station-password"


def test_hash_round_trip() -> None:
    stored = hash_password(SECRET)
    assert verify_password(SECRET, stored)
    assert not verify_password(SECRET + "x", stored)
    assert not verify_password("", stored)
    assert SECRET not in stored


def test_hashes_are_salted() -> None:
    first, second = hash_password(SECRET), hash_password(SECRET)
    assert first != second
    assert verify_password(SECRET, first) and verify_password(SECRET, second)
    scheme, salt, digest = first.split("$")
    assert (scheme, len(bytes.fromhex(salt)), len(digest)) == ("sha256", 16, 64)


@pytest.mark.parametrize(
    "stored",
    ["", "sha256$zz$00", "sha256$00", "md5$00$" + "0" * 64, "no dollars here", "a$b$c$d"],
)
def test_malformed_or_foreign_hashes_never_verify(stored: str) -> None:
    assert verify_password(SECRET, stored) is False


def test_same_digest_with_another_scheme_is_refused() -> None:
    _, salt, digest = hash_password(SECRET).split("$")
    assert not verify_password(SECRET, f"bcrypt${salt}${digest}")


@pytest.mark.parametrize("length", [MIN_PASSWORD_LENGTH, 24, MAX_PASSWORD_LENGTH])
def test_policy_accepts_16_to_40_characters(length: int) -> None:
    check_password_policy("p" * length)


@pytest.mark.parametrize("length", [0, MIN_PASSWORD_LENGTH - 1, MAX_PASSWORD_LENGTH + 1])
def test_policy_refuses_other_lengths(length: int) -> None:
    with pytest.raises(WeakPasswordError):
        check_password_policy("p" * length)


def test_generated_passwords_meet_the_policy_and_differ() -> None:
    passwords = {generate_password() for _ in range(20)}
    assert len(passwords) == 20
    for password in passwords:
        check_password_policy(password)
        assert ":" not in password  # it must survive Basic auth's user:password split
