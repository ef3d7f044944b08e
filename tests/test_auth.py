"""Authorization rules of ICD §4."""

from __future__ import annotations

import pytest

from cscs.core.auth import AuthList
from cscs.core.errors import ExpectedError

OWN = "ops@base"


def test_empty_lists_authorize_everyone() -> None:
    """With no lists set, any identity may command."""
    assert AuthList().permits("anyone@anywhere", OWN)


def test_authorized_users_restrict_to_the_list_and_own_user() -> None:
    """Once users are listed, only they and the CSC's own user may command."""
    auth = AuthList().edited("night@summit", "")
    assert auth.permits("night@summit", OWN)
    assert auth.permits(OWN, OWN)
    assert not auth.permits("intruder@x", OWN)


def test_non_authorized_cscs_are_refused() -> None:
    """A CSC listed in nonAuthorizedCSCs may not command."""
    auth = AuthList().edited("", "Archiver:1")
    assert not auth.permits("Archiver:1", OWN)
    assert auth.permits("Archiver:2", OWN)


def test_plus_and_minus_edit_the_lists() -> None:
    """A leading + adds, - removes, anything else replaces."""
    auth = AuthList().edited("a@x, b@y", "")
    assert auth.edited("+c@z", "").authorized_users == {"a@x", "b@y", "c@z"}
    assert auth.edited("-a@x", "").authorized_users == {"b@y"}
    assert auth.edited("d@w", "").authorized_users == {"d@w"}
    assert auth.edited("", "").authorized_users == frozenset()
    assert auth.edited("c@z", "").authorized_users_text == "c@z"


def test_malformed_entries_are_refused() -> None:
    """Users must be user@host; CSCs must not be."""
    with pytest.raises(ExpectedError, match="user@host"):
        AuthList().edited("bob", "")
    with pytest.raises(ExpectedError, match="CSC name"):
        AuthList().edited("", "bob@host")
