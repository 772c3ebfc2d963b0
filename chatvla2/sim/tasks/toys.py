"""The toy catalogue: named objects drawn as recognisable top-view icons (simple shapes and
colours), with the sizes the grasp rules need.

The names come from the slides' toy-placement examples ("Pepper Van Mug Mouse Cat Banana Cube
Bread ...", "Tape Block Cube Knife Peach Soap Muffin Bowl ...", "avocado", "corn", "brown mug",
"pink block", "orange bus") and the brief's in-domain set (apple, banana, cup, toy car, duck).
Which are in-domain and which open-world is our choice (splits.py); the two sets share nothing.
Sizes are plausible toy sizes; `grasp_width` wider than the X5 gripper's 0.088 m (docs/reference/arx.md) means the
thing cannot be picked up (a plate, a roll of tape): it can still be a target.

An icon is drawn by `draw(d, w, h)` on a transparent w x h canvas (already supersampled): the
canvas width spans the object's extent across the image (world y), its height the extent up the
image (world x).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageDraw

from chatvla2.sim.tasks.render import supersampled
from chatvla2.sim.tasks.splits import IN_DOMAIN, OPEN_WORLD


@dataclass(frozen=True)
class Toy:
    name: str
    size: tuple[float, float]  # extent up the image (world x), across it (world y), m
    height: float
    grasp_width: float
    draw: Callable[[ImageDraw.ImageDraw, int, int], None]

    def sprite(self, ppm: float) -> Image.Image:
        return supersampled(self.size[1] * ppm, self.size[0] * ppm, self.draw)

    @property
    def graspable(self) -> bool:
        return self.grasp_width <= 0.08


def _a(rgb, alpha=255):
    return tuple(rgb) + (alpha,)


def _apple(d, w, h):
    d.ellipse((0, 0, w - 1, h - 1), fill=_a((196, 28, 36)), outline=_a((120, 16, 20)), width=max(1, w // 30))
    d.ellipse((w * 0.18, h * 0.15, w * 0.45, h * 0.4), fill=_a((236, 96, 96)))
    d.line((w * 0.5, h * 0.5, w * 0.56, h * 0.36), fill=_a((90, 55, 25)), width=max(1, w // 14))
    d.ellipse((w * 0.56, h * 0.22, w * 0.84, h * 0.38), fill=_a((60, 150, 50)))


def _banana(d, w, h):
    thick = max(2, int(h * 0.42))
    d.arc((w * 0.04, -h * 1.1, w * 0.96, h * 0.95), start=30, end=150, fill=_a((240, 205, 40)), width=thick)
    d.arc((w * 0.04, -h * 1.1, w * 0.96, h * 0.95), start=30, end=150, fill=_a((200, 160, 20)), width=max(1, thick // 6))
    for x in (0.1, 0.88):
        d.ellipse((w * x - h * 0.08, h * 0.35, w * x + h * 0.08, h * 0.55), fill=_a((90, 60, 20)))


def _cup(d, w, h, body=(38, 88, 200), inside=(22, 52, 140)):
    r = h  # the cup is round, the handle sticks out to the right
    d.rounded_rectangle((r * 0.8, h * 0.38, w - 1, h * 0.62), radius=h * 0.1, fill=_a(body))
    d.ellipse((0, 0, r - 1, h - 1), fill=_a(body), outline=_a(tuple(c // 2 for c in body)), width=max(1, w // 30))
    d.ellipse((r * 0.14, h * 0.14, r * 0.86, h * 0.86), fill=_a(inside))


def _car(d, w, h):
    wheel = _a((20, 20, 20))
    for x in (0.12, 0.68):
        d.rounded_rectangle((w * x, 0, w * (x + 0.2), h - 1), radius=h * 0.1, fill=wheel)
    d.rounded_rectangle((w * 0.02, h * 0.12, w * 0.98, h * 0.88), radius=h * 0.25, fill=_a((210, 30, 40)),
                        outline=_a((110, 10, 20)), width=max(1, w // 50))
    d.rounded_rectangle((w * 0.28, h * 0.22, w * 0.62, h * 0.78), radius=h * 0.12, fill=_a((170, 215, 240)))
    d.rectangle((w * 0.36, h * 0.22, w * 0.54, h * 0.78), fill=_a((200, 40, 50)))


def _duck(d, w, h):
    d.ellipse((w * 0.22, h * 0.08, w * 0.98, h * 0.92), fill=_a((250, 214, 40)), outline=_a((190, 150, 20)),
              width=max(1, w // 40))
    d.polygon([(w * 0.02, h * 0.5), (w * 0.16, h * 0.38), (w * 0.16, h * 0.62)], fill=_a((240, 120, 20)))
    d.ellipse((w * 0.1, h * 0.22, w * 0.5, h * 0.78), fill=_a((252, 224, 60)), outline=_a((190, 150, 20)),
              width=max(1, w // 40))
    d.ellipse((w * 0.22, h * 0.3, w * 0.29, h * 0.4), fill=_a((10, 10, 10)))
    d.ellipse((w * 0.22, h * 0.6, w * 0.29, h * 0.7), fill=_a((10, 10, 10)))
    d.arc((w * 0.45, h * 0.25, w * 0.9, h * 0.75), start=100, end=260, fill=_a((210, 170, 20)), width=max(1, w // 30))


def _bowl(d, w, h):
    d.ellipse((0, 0, w - 1, h - 1), fill=_a((236, 236, 228)), outline=_a((150, 150, 145)), width=max(1, w // 40))
    d.ellipse((w * 0.12, h * 0.12, w * 0.88, h * 0.88), fill=_a((205, 205, 196)))
    d.ellipse((w * 0.3, h * 0.3, w * 0.7, h * 0.7), fill=_a((215, 215, 206)))


def _block(d, w, h, colour=(240, 128, 182)):
    d.rectangle((0, 0, w - 1, h - 1), fill=_a(tuple(int(c * 0.8) for c in colour)))
    d.rectangle((w * 0.1, h * 0.1, w * 0.9, h * 0.9), fill=_a(colour))


def _plate(d, w, h):
    d.ellipse((0, 0, w - 1, h - 1), fill=_a((248, 248, 250)), outline=_a((160, 160, 170)), width=max(1, w // 50))
    d.ellipse((w * 0.2, h * 0.2, w * 0.8, h * 0.8), outline=_a((200, 200, 210)), width=max(1, w // 40))


def _pepper(d, w, h):
    red, dark = _a((214, 30, 26)), _a((140, 14, 14))
    for cx, cy in ((0.35, 0.38), (0.65, 0.38), (0.5, 0.66)):
        d.ellipse((w * (cx - 0.34), h * (cy - 0.34), w * (cx + 0.34), h * (cy + 0.34)), fill=red, outline=dark,
                  width=max(1, w // 40))
    d.ellipse((w * 0.38, h * 0.4, w * 0.62, h * 0.62), fill=_a((60, 140, 40)))
    d.line((w * 0.5, h * 0.5, w * 0.6, h * 0.3), fill=_a((40, 100, 30)), width=max(1, w // 10))


def _mug(d, w, h):
    _cup(d, w, h, body=(128, 78, 42), inside=(58, 34, 18))


def _avocado(d, w, h):
    d.ellipse((0, 0, w - 1, h - 1), fill=_a((52, 84, 36)), outline=_a((30, 50, 20)), width=max(1, w // 30))
    d.ellipse((w * 0.12, h * 0.1, w * 0.88, h * 0.9), fill=_a((190, 214, 110)))
    d.ellipse((w * 0.28, h * 0.42, w * 0.72, h * 0.84), fill=_a((130, 80, 40)))


def _corn(d, w, h):
    d.polygon([(0, h * 0.5), (w * 0.3, 0), (w * 0.36, h * 0.5), (w * 0.3, h - 1)], fill=_a((90, 160, 60)))
    d.ellipse((w * 0.2, h * 0.08, w * 0.99, h * 0.92), fill=_a((244, 204, 60)), outline=_a((190, 150, 30)),
              width=max(1, w // 60))
    for i in range(6):
        for j in range(3):
            x, y = w * (0.3 + 0.11 * i), h * (0.28 + 0.22 * j)
            d.ellipse((x - w * 0.025, y - h * 0.07, x + w * 0.025, y + h * 0.07), fill=_a((222, 176, 36)))
    d.polygon([(w * 0.05, h * 0.2), (w * 0.45, h * 0.02), (w * 0.4, h * 0.3)], fill=_a((70, 140, 50)))


def _peach(d, w, h):
    d.ellipse((0, 0, w - 1, h - 1), fill=_a((250, 168, 112)), outline=_a((200, 110, 70)), width=max(1, w // 40))
    d.ellipse((w * 0.45, h * 0.35, w * 0.92, h * 0.9), fill=_a((232, 96, 80)))
    d.arc((w * 0.2, h * 0.05, w * 0.8, h * 0.95), start=260, end=100, fill=_a((190, 90, 60)), width=max(1, w // 40))
    d.ellipse((w * 0.5, h * 0.02, w * 0.8, h * 0.2), fill=_a((70, 140, 50)))


def _carrot(d, w, h):
    for k in range(3):
        d.line((w * 0.2, h * 0.5, 0, h * (0.1 + 0.4 * k)), fill=_a((60, 150, 50)), width=max(1, h // 6))
    d.polygon([(w * 0.16, h * 0.12), (w * 0.16, h * 0.88), (w * 0.99, h * 0.5)], fill=_a((240, 118, 26)))
    for x in (0.35, 0.55, 0.75):
        d.line((w * x, h * 0.35, w * x, h * 0.5), fill=_a((190, 80, 10)), width=max(1, h // 14))


def _tape(d, w, h):
    d.ellipse((0, 0, w - 1, h - 1), fill=_a((176, 176, 172)), outline=_a((110, 110, 106)), width=max(1, w // 40))
    d.ellipse((w * 0.1, h * 0.1, w * 0.9, h * 0.9), outline=_a((150, 150, 146)), width=max(1, w // 40))
    d.ellipse((w * 0.3, h * 0.3, w * 0.7, h * 0.7), fill=(0, 0, 0, 0), outline=_a((90, 90, 86)), width=max(1, w // 30))


def _bus(d, w, h):
    for x in (0.12, 0.74):
        d.rectangle((w * x, 0, w * (x + 0.14), h - 1), fill=_a((20, 20, 20)))
    d.rounded_rectangle((0, h * 0.1, w - 1, h * 0.9), radius=h * 0.15, fill=_a((244, 138, 30)),
                        outline=_a((150, 80, 10)), width=max(1, w // 60))
    d.rectangle((w * 0.08, h * 0.3, w * 0.92, h * 0.7), fill=_a((170, 215, 240)))
    for k in range(1, 6):
        d.line((w * (0.08 + 0.14 * k), h * 0.3, w * (0.08 + 0.14 * k), h * 0.7), fill=_a((244, 138, 30)),
               width=max(1, w // 60))


def _soap(d, w, h):
    d.rounded_rectangle((0, 0, w - 1, h - 1), radius=min(w, h) * 0.35, fill=_a((150, 212, 232)),
                        outline=_a((90, 150, 180)), width=max(1, w // 40))
    d.ellipse((w * 0.2, h * 0.25, w * 0.8, h * 0.75), outline=_a((220, 245, 252)), width=max(1, w // 25))


def _t(name, size, height, grasp, draw):
    return Toy(name, size, height, grasp, draw)


CATALOGUE = {t.name: t for t in (
    _t("apple", (0.065, 0.065), 0.06, 0.06, _apple),
    _t("banana", (0.05, 0.13), 0.04, 0.035, _banana),
    _t("blue cup", (0.065, 0.085), 0.08, 0.065, _cup),
    _t("toy car", (0.055, 0.1), 0.04, 0.05, _car),
    _t("duck", (0.06, 0.08), 0.05, 0.055, _duck),
    _t("bowl", (0.11, 0.11), 0.05, 0.11, _bowl),
    _t("pink block", (0.06, 0.06), 0.06, 0.06, _block),
    _t("plate", (0.12, 0.12), 0.02, 0.12, _plate),
    _t("pepper", (0.07, 0.07), 0.07, 0.065, _pepper),
    _t("brown mug", (0.07, 0.09), 0.09, 0.07, _mug),
    _t("avocado", (0.06, 0.09), 0.04, 0.055, _avocado),
    _t("corn", (0.05, 0.14), 0.045, 0.045, _corn),
    _t("peach", (0.065, 0.065), 0.06, 0.06, _peach),
    _t("carrot", (0.04, 0.13), 0.035, 0.035, _carrot),
    _t("tape", (0.1, 0.1), 0.05, 0.1, _tape),
    _t("orange bus", (0.06, 0.13), 0.06, 0.055, _bus),
    _t("soap", (0.05, 0.08), 0.03, 0.05, _soap),
)}

# What each split picks up and where it puts it ("the shelf" is in both: it is a place, not a toy).
OBJECTS = {
    IN_DOMAIN: ("apple", "banana", "blue cup", "toy car", "duck"),
    OPEN_WORLD: ("pepper", "brown mug", "avocado", "corn", "peach", "carrot"),
}
TARGETS = {
    IN_DOMAIN: ("bowl", "pink block", "plate"),
    OPEN_WORLD: ("tape", "orange bus", "soap"),
}


@functools.cache
def toy(name: str) -> Toy:
    return CATALOGUE[name]
