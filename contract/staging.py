"""Write a directory aside, then swap it in as the target: readers see the old contents or the new,
never a mix, and a failure leaves nothing behind. Bundles (`chatvla2 export`) and engine
directories (`chatvla2 build`) are written this way.

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
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


@contextmanager
def staged_directory(target: Path, before_swap: Callable[[Path], None] | None = None) -> Iterator[Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield staging
        # mkdtemp makes the directory private; bundles and engines are meant to be shared and deployed.
        staging.chmod(0o755)
        for file in staging.iterdir():
            file.chmod(0o644)
        if before_swap is not None and target.exists():
            before_swap(target)
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_in(new: Path, target: Path) -> None:
    old = None
    if target.exists():
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
