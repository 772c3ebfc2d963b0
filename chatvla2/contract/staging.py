"""Write a directory aside, then swap it in as the target: readers see the old contents or the new,
never a mix, and a failure leaves nothing behind. Bundles (`chatvla2 export`), engine
directories (`chatvla2 build`), checkpoints and datasets (`sim/dataset_writer.py`) are written
this way.

    with staged_directory(out) as staging:
        ...write files into staging...
    # out now holds them; on an exception out is untouched and staging is gone

`before_swap(target)`, if given, runs just before an existing target is replaced: it raises to
refuse (the target is then untouched), so a check made before a long write is made again at
the moment it matters (`chatvla2 export` refuses to delete what it did not write).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_directory(target: Path, before_swap: Callable[[Path], None] | None = None) -> Iterator[Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield staging
        make_shareable(staging)
        if before_swap is not None and target.exists():
            before_swap(target)
        swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def make_shareable(root: Path) -> None:
    """mkdtemp makes the directory private; what we write is meant to be shared and deployed:
    folders 0755 (traversable), files 0644, all the way down."""
    root.chmod(0o755)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)


def swap_in(new: Path, target: Path) -> None:
    """Rename `new` to `target`, the previous `target` (if any) kept aside until the rename succeeded."""
    old = None
    if os.path.lexists(target):
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
    try:
        new.rename(target)
    except BaseException:
        if old is not None:
            old.rename(target)  # put the previous contents back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
