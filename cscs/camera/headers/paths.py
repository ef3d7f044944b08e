"""Where header documents are: the directories header services keep them in by default,
the one directory every URL of a ``header_url_template`` is under, and the local path a
header URL names.

Computed from names only (nothing here touches the file system): the header service
writes where :func:`default_header_dir` says, and an archiver with the same state
directory trusts and looks there (:mod:`~cscs.camera.headers.reading`).
"""

from __future__ import annotations

import string
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

__all__ = [
    "default_header_dir",
    "default_header_template",
    "header_directory",
    "header_file",
    "template_directory",
]


def header_directory(state_dir: Path) -> Path:
    """Where header services keep their documents by default (one directory each)."""
    return state_dir / "headers"


def default_header_dir(state_dir: Path, index: int) -> Path:
    """Where ``HeaderService:{index}`` writes by default: ``{dayObs}/{image}.yaml`` under
    it. An archiver with the same state directory looks there for what it did not hear
    announced (ICD 1.1 "Missed announcements")."""
    return header_directory(state_dir) / f"HeaderService-{index}"


def default_header_template(state_dir: Path, index: int) -> str:
    """The ``header_url_template`` of :func:`default_header_dir`."""
    return default_header_dir(state_dir, index).as_uri() + "/{day_obs}/{image}.yaml"


def template_directory(template: str) -> Path | None:
    """The directory every URL of a ``{day_obs}``/``{image}`` template is under (its
    fixed part, to the last ``/``); None for no template. ValueError for a template
    that is not a ``file://`` URL with a fixed directory other than ``/``, or that
    names another placeholder."""
    if not template:
        return None
    try:
        fields = {f[1] for f in string.Formatter().parse(template) if f[1] is not None}
    except ValueError as exc:
        raise ValueError(f"{template}: {exc}") from None
    if not fields <= {"day_obs", "image"}:
        raise ValueError(f"{template}: only {{day_obs}} and {{image}} may be used")
    directory = header_file(template.split("{", 1)[0].rsplit("/", 1)[0] + "/")
    if directory == Path(directory.anchor):
        raise ValueError(f"{template}: its fixed directory would be the whole file system")
    return directory


def header_file(url: str) -> Path:
    """The local path a header URL names; ValueError unless it is a plain ``file://``
    URL of an absolute path on this host."""
    parsed = urlparse(url)
    if parsed.scheme != "file":
        raise ValueError(f"header URL {url[:200]}: only file:// is supported")
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(f"header URL {url[:200]}: names another host ({parsed.netloc})")
    if parsed.params or parsed.query or parsed.fragment:
        raise ValueError(f"header URL {url[:200]}: a file URL takes no parameters or query")
    path = Path(url2pathname(parsed.path))
    if not path.is_absolute():
        raise ValueError(f"header URL {url[:200]}: not an absolute path")
    return path
