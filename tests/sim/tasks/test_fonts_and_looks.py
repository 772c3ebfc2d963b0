"""What the splits look like: fonts, table tops, boards never shared (sim/tasks/fonts.py, render.py)."""

from __future__ import annotations

from chatvla2.sim.tasks import fonts, math_game
from chatvla2.sim.tasks.render import BACKGROUNDS


def test_font_lists_are_disjoint_and_drawable():
    assert not set(fonts.split_fonts("in_domain")) & set(fonts.split_fonts("open_world"))
    for split in ("in_domain", "open_world"):
        for name in fonts.split_fonts(split):
            font = fonts.load(name, 24)
            assert all(fonts.has_glyph(font, c) for c in "0123456789+-x=")


def test_in_domain_fonts_include_pillows_own():
    assert fonts.PILLOW in fonts.split_fonts("in_domain")


def test_looks_are_disjoint():
    assert not set(BACKGROUNDS["in_domain"]) & set(BACKGROUNDS["open_world"])
    assert not set(math_game.BOARDS["in_domain"]) & set(math_game.BOARDS["open_world"])
