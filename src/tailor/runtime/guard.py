"""The version guard of the runtime patches: the library ranges they were tested on, and the private names they read.

A patch that replaces library internals is only as right as its reading of those internals. Each patch names
the libraries whose internals it reads (`TESTED`, the same ranges as pyproject.toml's dependencies; a test keeps
them equal) and the private names it needs; outside a range, or with a name gone, the patch is not installed,
the plain library path runs, and one warning per process says why.
"""

from __future__ import annotations

import importlib
import logging
from importlib import metadata

log = logging.getLogger(__name__)

# The ranges tailor's runtime was tested on; pyproject.toml's dependencies state the same ranges.
TESTED = {"transformers": ">=5.23,<5.24", "torch": ">=2.13,<2.14"}

_warned = False


def installed_version(library: str) -> str | None:
    """The installed version of `library` (torch's local tag, e.g. +cpu, included), or None."""
    try:
        return metadata.version(library)
    except metadata.PackageNotFoundError:
        return None


def out_of_range(libraries) -> list[str]:
    """'library VERSION (tested: RANGE)' for each of `libraries` whose installed version is outside TESTED."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    problems = []
    for lib in libraries:
        found = installed_version(lib)
        try:
            ok = found is not None and SpecifierSet(TESTED[lib]).contains(Version(found), prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            problems.append(f"{lib} {found or 'not installed'} (tested: {TESTED[lib]})")
    return problems


def resolve(dotted: str):
    """The object a dotted name such as 'transformers.integrations.moe._default_apply_gate' names; AttributeError
    or ImportError when it is gone."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
            break
        except ImportError:
            if i == 1:
                raise
    for name in parts[i:]:
        obj = getattr(obj, name)
    return obj


def missing(names) -> list[str]:
    """The names of `names` (dotted) that cannot be resolved in the installed libraries."""
    gone = []
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError):
            gone.append(name)
    return gone


def refusal(libraries, private_names) -> str | None:
    """Why a patch reading the internals of `libraries` and these `private_names` must not be installed here, or
    None when it may."""
    versions = out_of_range(libraries)
    if versions:
        return "untested " + ", ".join(versions)
    gone = missing(private_names)
    if gone:
        return "missing private names " + ", ".join(gone)
    return None


def warn_once(message: str) -> bool:
    """Log `message` as a warning the first time any patch is refused in this process; True when it was logged."""
    global _warned
    if _warned:
        return False
    _warned = True
    log.warning(message)
    return True
