"""Who may command a CSC (ICD §4), as pure data."""

from __future__ import annotations

from dataclasses import dataclass

from cscs.core.errors import ExpectedError

__all__ = ["AuthList"]


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _edit(current: frozenset[str], text: str, check: str) -> frozenset[str]:
    """Apply ``"a,b"`` (replace), ``"+a,b"`` (add) or ``"-a,b"`` (remove)."""
    text = text.strip()
    mode = text[:1] if text[:1] in "+-" and text else "="
    names = _names(text[1:] if mode != "=" else text)
    for name in names:
        if check == "user" and "@" not in name:
            raise ExpectedError(
                f"authorized user {name!r} must be written user@host, e.g. night@summit"
            )
        if check == "csc" and "@" in name:
            raise ExpectedError(
                f"non-authorized CSC {name!r} must be a CSC name such as Archiver:1, not user@host"
            )
    if mode == "+":
        return current | frozenset(names)
    if mode == "-":
        return current - frozenset(names)
    return frozenset(names)


@dataclass(frozen=True)
class AuthList:
    """The lists set with ``setAuthList``; empty lists authorize everyone."""

    authorized_users: frozenset[str] = frozenset()
    non_authorized_cscs: frozenset[str] = frozenset()

    def permits(self, identity: str, own_identity: str) -> bool:
        if identity == own_identity or identity in self.authorized_users:
            return True
        return not self.authorized_users and identity not in self.non_authorized_cscs

    def edited(self, authorized_users: str, non_authorized_cscs: str) -> AuthList:
        """The lists after a ``setAuthList``: each is replaced by the names given, or with
        a leading ``+``/``-`` extended or shrunk by them (so ``""`` clears a list)."""
        return AuthList(
            _edit(self.authorized_users, authorized_users, "user"),
            _edit(self.non_authorized_cscs, non_authorized_cscs, "csc"),
        )

    @property
    def authorized_users_text(self) -> str:
        return ",".join(sorted(self.authorized_users))

    @property
    def non_authorized_cscs_text(self) -> str:
        return ",".join(sorted(self.non_authorized_cscs))
