"""Fonts for the handwriting-like digits, one list per split.

Pillow ships one scalable font (Aileron Regular, `ImageFont.load_default(size)`); the DejaVu
family is on almost every Linux machine (here under /usr/share/fonts/truetype/dejavu). Each split
names its fonts by file name; a named font that is missing is replaced by Pillow's own, so the
seed's other draws do not shift. TrueType fonts found on this machine beyond the named ones (and
able to draw the digits and signs) join the open-world list, after the named ones: they add
variety where fonts are unseen anyway and leave the in-domain split alone. So an in-domain episode
is the same on every machine with the DejaVu fonts; an open-world episode is the same on every
machine with the same fonts installed (always the same on one machine).
"""

from __future__ import annotations

import functools
import glob
import os

import numpy as np
from PIL import ImageFont

from chatvla2.contract.errors import MissingFile
from chatvla2.sim.tasks.splits import IN_DOMAIN, OPEN_WORLD, check_split

PILLOW = "pillow-default"  # Pillow's bundled Aileron Regular
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", os.path.expanduser("~/.fonts"),
             os.path.expanduser("~/.local/share/fonts"))

NAMED = {
    # Upright, regular shapes: what the robot data shows.
    IN_DOMAIN: (PILLOW, "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansCondensed.ttf",
                "DejaVuSansMono.ttf"),
    # Slanted, light, heavy and condensed-serif shapes never shown to the robot.
    OPEN_WORLD: ("DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf", "DejaVuSerif-Italic.ttf",
                 "DejaVuSerif-BoldItalic.ttf", "DejaVuSansCondensed-BoldOblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
                 "DejaVuSerifCondensed-Bold.ttf", "DejaVuSans-ExtraLight.ttf", "DejaVuSerifCondensed-Italic.ttf",
                 "DejaVuSansMono-Oblique.ttf", "DejaVuSansCondensed-Oblique.ttf", "DejaVuSerif-Bold.ttf"),
}


@functools.lru_cache(maxsize=1)
def installed() -> dict[str, str]:
    """File name -> path of every .ttf/.otf under FONT_DIRS (the first path wins for a name)."""
    found: dict[str, str] = {}
    for root in FONT_DIRS:
        for path in sorted(glob.glob(os.path.join(root, "**", "*.[to]tf"), recursive=True)):
            found.setdefault(os.path.basename(path), path)
    return found


@functools.cache
def split_fonts(split: str) -> tuple[str, ...]:
    """The split's font names: the named ones, then (open world only) the other installed fonts."""
    check_split(split)
    names = NAMED[split]
    if split == OPEN_WORLD:
        named = set(NAMED[IN_DOMAIN]) | set(NAMED[OPEN_WORLD])
        names = names + tuple(sorted(n for n in installed() if n not in named and _usable(n)))
    return names


def _usable(name: str) -> bool:
    """A font that draws the digits and + - x = as distinct shapes (symbol fonts draw boxes)."""
    try:
        font = load(name, 32)
    except OSError:
        return False
    masks = [bytes(font.getmask(c)) for c in "0123456789+-x="]
    return all(masks) and len(set(masks)) == len(masks) and all(has_glyph(font, c) for c in "0123456789+-x=")


@functools.lru_cache(maxsize=512)
def load(name: str, size: int) -> ImageFont.FreeTypeFont:
    """The font `name` at `size` pixels; Pillow's bundled font where `name` is not installed."""
    path = installed().get(name)
    if name == PILLOW or path is None:
        try:
            return ImageFont.load_default(size=size)  # Pillow >= 10.1 (the sim extra allows 10.0)
        except TypeError:
            path = installed().get("DejaVuSans.ttf")
            if path is None:
                raise MissingFile("no scalable font: install Pillow >= 10.1 or the DejaVu fonts") from None
    return ImageFont.truetype(path, size=size)


@functools.lru_cache(maxsize=4096)
def has_glyph(font: ImageFont.FreeTypeFont, character: str) -> bool:
    """Whether `font` draws `character` itself rather than its missing-glyph box."""
    missing = font.getmask("\ue000")  # a private-use code point: no font here draws it
    mask = font.getmask(character)
    return not (mask.size == missing.size and bytes(mask) == bytes(missing))


def pick(split: str, rng: np.random.Generator) -> str:
    """One font name of the split (one draw from `rng`)."""
    names = split_fonts(split)
    return names[int(rng.integers(len(names)))]
