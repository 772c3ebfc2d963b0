"""Drawing shared by both tasks: table textures, handwriting, lighting, the arms, and the renderer
that turns a scene's state into the top camera's RGB frame.

Everything is numpy and Pillow, drawn at the requested (height, width) (no fixed-size master image
resized), so the `small` preset's 252x308 and the `tiny` preset's 56x84 (contract/config.py) are
both drawn natively. Per episode the renderer builds a static layer once (table, whiteboard or
shelf, props at rest) and per frame draws the arms, the held props and the fingers on a copy,
then applies the episode's lighting and one of three precomputed sensor-noise images: that is what
keeps one frame in a few milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from chatvla2.sim.tasks import fonts
from chatvla2.sim.tasks.camera import Camera
from chatvla2.sim.tasks.kinematics import BASES, ArmPose
from chatvla2.sim.tasks.splits import IN_DOMAIN, OPEN_WORLD

# Table tops, per split (open-world ones are never in the robot data).
BACKGROUNDS = {
    IN_DOMAIN: ("oak", "grey laminate"),
    OPEN_WORLD: ("green felt", "blue gingham", "walnut", "marble", "red tablecloth"),
}

SUPERSAMPLE = 3  # sprites are drawn 3x larger and reduced: smooth edges at 56x84 too


def _metric_grid(cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """World (x, y) at table height of every pixel centre: textures scale with the scene."""
    v, u = np.mgrid[0 : cam.height, 0 : cam.width].astype(np.float32) + 0.5
    s = cam.scale(0.0)
    return (cam.height / 2 - v) / s, (cam.width / 2 - u) / s


def table_texture(name: str, cam: Camera, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 table top of the named kind, with a random phase and colour shift."""
    x, y = _metric_grid(cam)
    phase = rng.uniform(0, 2 * math.pi, size=4).astype(np.float32)
    shift = rng.uniform(-8, 8, size=3).astype(np.float32)
    grain = rng.normal(0, 1, size=x.shape).astype(np.float32)
    if name in ("oak", "walnut"):
        base = np.array((176, 128, 84) if name == "oak" else (96, 62, 42), np.float32)
        rings = np.sin(2 * math.pi * (y * 38 + 0.6 * np.sin(x * 7 + phase[0]) + phase[1]))
        shade = 12 * rings + 4 * grain
    elif name == "grey laminate":
        base = np.array((152, 152, 158), np.float32)
        shade = 5 * grain + 3 * np.sin(2 * math.pi * (x * 3 + phase[0]))
    elif name == "green felt":
        base = np.array((46, 112, 64), np.float32)
        shade = 9 * grain
    elif name == "blue gingham":
        base = np.array((150, 170, 215), np.float32)
        bands = (np.floor(x / 0.04 + phase[0]) % 2) + (np.floor(y / 0.04 + phase[1]) % 2)
        shade = -38 * bands + 3 * grain
    elif name == "marble":
        base = np.array((222, 220, 214), np.float32)
        veins = np.abs(np.sin(2 * math.pi * (x * 4 + y * 2.5 + 0.5 * np.sin(y * 9 + phase[0]) + phase[1])))
        shade = -60 * (veins < 0.06) - 20 * (veins < 0.2) + 3 * grain
    elif name == "red tablecloth":
        base = np.array((168, 44, 48), np.float32)
        weave = np.sin(2 * math.pi * x / 0.006 + phase[0]) * np.sin(2 * math.pi * y / 0.006 + phase[1])
        shade = 6 * weave + 6 * grain
    else:
        raise ValueError(f"unknown table texture {name!r}; known: {sum(BACKGROUNDS.values(), ())}")
    image = base + shift + shade[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Lighting:
    """Per-episode light: overall gain, colour tint, a linear brightness gradient, sensor noise."""

    gain: float
    tint: tuple[float, float, float]
    gradient: tuple[float, float]  # brightness change across the image, along u and v
    noise: float  # sensor noise standard deviation, grey levels

    @staticmethod
    def draw(rng: np.random.Generator, split: str) -> Lighting:
        wide = split == OPEN_WORLD  # open-world rooms are dimmer, brighter, more coloured
        gain = rng.uniform(0.7, 1.2) if wide else rng.uniform(0.88, 1.08)
        tint = tuple(float(t) for t in rng.uniform(-0.08, 0.08, 3) * (1.0 if wide else 0.4))
        gradient = tuple(float(g) for g in rng.uniform(-0.15, 0.15, 2) * (1.0 if wide else 0.5))
        return Lighting(float(gain), tint, gradient, float(rng.uniform(1.5, 4.0)))

    def maps(self, cam: Camera, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) float32 light multiplier and (3, H, W, 3) int16 noise images."""
        v, u = np.mgrid[0 : cam.height, 0 : cam.width].astype(np.float32)
        ramp = 1 + self.gradient[0] * (u / cam.width - 0.5) + self.gradient[1] * (v / cam.height - 0.5)
        light = self.gain * ramp[..., None] * (1 + np.array(self.tint, np.float32))
        noise = np.rint(rng.normal(0, self.noise, size=(3, cam.height, cam.width, 3))).astype(np.int16)
        return light.astype(np.float32), noise


@dataclass(frozen=True)
class Hand:
    """A handwriting style: font, ink, stroke and per-character jitter, drawn once per text so a
    text looks the same at every scale and every frame."""

    font: str
    ink: tuple[int, int, int]
    stroke: float  # extra stroke width, as a fraction of the character height
    rotations: tuple[float, ...]  # degrees, one per character
    offsets: tuple[tuple[float, float], ...]  # (dx, dy) as fractions of the height
    scales: tuple[float, ...]
    tilt: float  # degrees, the whole text

    @staticmethod
    def draw(rng: np.random.Generator, split: str, n: int, inks, jitter: float = 1.0) -> Hand:
        font = fonts.pick(split, rng)
        ink = inks[int(rng.integers(len(inks)))]
        return Hand(
            font=font,
            ink=tuple(int(c) for c in ink),
            stroke=float(rng.uniform(0.0, 0.06)),
            rotations=tuple(float(r) for r in rng.uniform(-12, 12, n) * jitter),
            offsets=tuple((float(a), float(b)) for a, b in rng.uniform(-0.08, 0.08, (n, 2)) * jitter),
            scales=tuple(float(s) for s in rng.uniform(0.88, 1.12, n) ** jitter),
            tilt=float(rng.uniform(-5, 5) * jitter),
        )


def _glyph_text(font, character: str) -> str:
    """The character to draw: the proper minus and times signs where the font has them."""
    if character == "-" and fonts.has_glyph(font, "\u2212"):
        return "\u2212"
    if character == "x" and fonts.has_glyph(font, "\u00d7"):
        return "\u00d7"
    return character


def placed_glyphs(text: str, hand: Hand, height_px: float) -> tuple[tuple[int, int], list[tuple[Image.Image, int, int]]]:
    """`handwriting`'s characters before they are joined: (strip size, [(glyph alpha, x0, y0)]), each
    glyph where it is pasted in the supersampled strip (sim/tasks/reading.py finds each character's box
    from them)."""
    ss = SUPERSAMPLE
    size = max(4, int(round(height_px * ss / 0.73)))  # digits are ~0.73 of the font size
    font = fonts.load(hand.font, size)
    stroke = int(round(hand.stroke * size))
    cell = int(size * 1.8)
    placed = []
    cursor = cell * 0.3
    for k, character in enumerate(text):
        glyph = Image.new("L", (cell, cell), 0)
        ImageDraw.Draw(glyph).text(
            (cell / 2, cell / 2), _glyph_text(font, character), font=font, fill=255, anchor="mm", stroke_width=stroke, stroke_fill=255
        )
        glyph = glyph.rotate(hand.rotations[k % len(hand.rotations)], resample=Image.BICUBIC)
        scale = hand.scales[k % len(hand.scales)]
        if abs(scale - 1) > 1e-3:
            side = max(1, int(round(cell * scale)))
            glyph = glyph.resize((side, side), Image.BICUBIC)
        dx, dy = hand.offsets[k % len(hand.offsets)]
        advance = font.getlength(character if character not in "-x" else "+") * scale + stroke
        x0 = int(round(cursor + advance / 2 - glyph.width / 2 + dx * size))
        y0 = int(round(cell / 2 - glyph.height / 2 + dy * size))
        placed.append((glyph, x0, y0))
        cursor += advance * 1.02
    return (cell * (len(text) + 1), cell), placed


def handwriting(text: str, hand: Hand, height_px: float) -> Image.Image:
    """An RGBA image of `text` in `hand`, characters about `height_px` tall (digits' height)."""
    ss = SUPERSAMPLE
    strip_size, placed = placed_glyphs(text, hand, height_px)
    strip = Image.new("L", strip_size, 0)
    for glyph, x0, y0 in placed:
        piece = Image.new("L", strip.size, 0)
        piece.paste(glyph, (x0, y0))
        strip = ImageChops.lighter(strip, piece)
    bbox = strip.getbbox() or (0, 0, 1, 1)
    alpha = strip.crop(bbox).rotate(hand.tilt, resample=Image.BICUBIC, expand=True)
    out = Image.new("RGBA", alpha.size, hand.ink + (0,))
    out.putalpha(alpha)
    return out.resize((max(1, round(out.width / ss)), max(1, round(out.height / ss))), Image.LANCZOS)


def supersampled(width_px: float, height_px: float, draw_fn) -> Image.Image:
    """An RGBA sprite about width x height pixels: `draw_fn(ImageDraw, w, h)` draws it on a
    transparent w x h canvas SUPERSAMPLE times larger, which is then reduced (smooth edges)."""
    ss = SUPERSAMPLE
    w = max(2, int(math.ceil(width_px * ss)))
    h = max(2, int(math.ceil(height_px * ss)))
    image = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw_fn(ImageDraw.Draw(image), w, h)
    return image.resize((max(1, round(w / ss)), max(1, round(h / ss))), Image.LANCZOS)


# The arms, in a steel grey with dark fingers (the ARX X5's colours, roughly).
LINK = (168, 170, 176)
LINK_EDGE = (72, 74, 80)
BASE = (60, 62, 68)
FINGER = (28, 28, 32)
FINGER_TIP = (230, 120, 40)  # an orange pad on each finger: where the gripper point is, at a glance
LINK_M = 0.045
FINGER_M = 0.014
FINGER_LONG_M = 0.05


def draw_arm(draw: ImageDraw.ImageDraw, cam: Camera, arm: int, pose: ArmPose) -> None:
    """The base and the links of one arm (world-frame pose), top view, up to the finger roots."""
    base = np.array(BASES[arm])
    b = cam.project(base)
    r = 0.05 * cam.scale(0.0)
    draw.ellipse((b[0] - r, b[1] - r, b[0] + r, b[1] + r), fill=BASE)
    finger_root = pose.position - pose.pointing * FINGER_LONG_M
    points = np.vstack([base[None], pose.joints[:6], finger_root[None]])
    uv = cam.project(points)
    for k in range(len(points) - 1):
        z = 0.5 * (points[k, 2] + points[k + 1, 2])
        w = max(1, int(round(LINK_M * cam.scale(z))))
        line = [tuple(uv[k]), tuple(uv[k + 1])]
        draw.line(line, fill=LINK_EDGE, width=w + 2)
        draw.line(line, fill=LINK, width=w)
    j6 = uv[5]
    r6 = 0.5 * LINK_M * cam.scale(pose.joints[5, 2])
    draw.ellipse((j6[0] - r6, j6[1] - r6, j6[0] + r6, j6[1] + r6), fill=LINK, outline=LINK_EDGE)


def draw_fingers(draw: ImageDraw.ImageDraw, cam: Camera, pose: ArmPose, width_m: float) -> None:
    """The two fingers at the gripper, `width_m` apart along the pose's finger axis, each from its
    root to its tip (seen end-on, a dot, when the gripper points down), the tip marked orange."""
    tip = pose.position
    back = tip - pose.pointing * FINGER_LONG_M
    for side in (-1.0, 1.0):
        offset = pose.finger_axis * side * (0.5 * width_m + 0.5 * FINGER_M)
        a, b = cam.project(back + offset), cam.project(tip + offset)
        w = max(1, int(round(FINGER_M * cam.scale(back[2]))))
        r = 0.5 * w
        draw.ellipse((a[0] - r, a[1] - r, a[0] + r, a[1] + r), fill=FINGER)
        draw.line([tuple(a), tuple(b)], fill=FINGER, width=w)
        r = max(0.5, 0.35 * w)
        draw.ellipse((b[0] - r, b[1] - r, b[0] + r, b[1] + r), fill=FINGER_TIP)


def draw_shadow(image: Image.Image, sprite: Image.Image, uv, strength: float = 0.35) -> None:
    """A soft shadow of a lifted prop on the table under it: shows that it is off the table."""
    alpha = sprite.getchannel("A").point(lambda a: int(a * strength))
    shade = Image.new("RGB", sprite.size, (0, 0, 0))
    image.paste(shade, (int(round(uv[0] - sprite.width / 2)), int(round(uv[1] - sprite.height / 2))), alpha)


class SpriteBook:
    """The props' top views at one camera size (cached), and the image boxes they cover."""

    def __init__(self, cam: Camera):
        self.cam = cam
        self._sprites: dict = {}

    def _key(self, index: int, prop) -> tuple:
        # Scale in steps of 0.5 % (a carried prop changes size smoothly; one sprite per step).
        return index, round(math.log(self.cam.scale(prop.top)) / math.log(1.005)), prop.yaw

    def sprite(self, index: int, prop) -> Image.Image:
        """The prop's top view at its current height and yaw."""
        key = self._key(index, prop)
        ppm = 1.005 ** key[1]
        if key not in self._sprites:
            image = prop.draw(ppm)
            if abs(prop.yaw) > 1e-4:
                image = image.rotate(math.degrees(prop.yaw), resample=Image.BICUBIC, expand=True)
            self._sprites[key] = (image, _alpha_box(image))
        return self._sprites[key][0]

    def corner(self, index: int, prop) -> tuple[int, int]:
        """Top-left pixel where the prop's sprite goes: centred on its projected top face."""
        sprite = self.sprite(index, prop)
        center = self.cam.project(prop.position + np.array([0.0, 0.0, prop.height]))
        return int(round(center[0] - sprite.width / 2)), int(round(center[1] - sprite.height / 2))

    def box(self, index: int, prop) -> tuple[int, int, int, int]:
        """The pixel box (u1, v1, u2, v2) the prop covers (its opaque pixels, alpha >= 64)."""
        self.sprite(index, prop)
        alpha_box = self._sprites[self._key(index, prop)][1]
        left, top = self.corner(index, prop)
        return (left + alpha_box[0], top + alpha_box[1], left + alpha_box[2], top + alpha_box[3])

    def paste(self, image: Image.Image, index: int, prop) -> None:
        sprite = self.sprite(index, prop)
        image.paste(sprite, self.corner(index, prop), sprite)


def _alpha_box(image: Image.Image) -> tuple[int, int, int, int]:
    return image.getchannel("A").point(lambda a: 255 if a >= 64 else 0).getbbox() or (0, 0, 1, 1)


class Renderer:
    """The top camera's frames of one scene at one size.

    `scene` provides: stream (a tuple of ints seeding the textures), background (a BACKGROUNDS
    name), lighting (Lighting) and draw_furniture(image, camera) for what never moves
    (whiteboard, shelf).
    """

    def __init__(self, scene, height: int, width: int, sprites: SpriteBook | None = None):
        self.cam = Camera(height, width)
        self.scene = scene
        self.sprites = sprites or SpriteBook(self.cam)
        rng = np.random.default_rng(list(scene.stream) + [0x7AB1E])  # its own stream: drawing never shifts the scene
        self.table = table_texture(scene.background, self.cam, rng)
        self.light, self.noise = scene.lighting.maps(self.cam, rng)
        self._static_key = None
        self._static: Image.Image | None = None

    def _static_layer(self, props) -> Image.Image:
        key = tuple((i, p.position.tobytes(), p.yaw) for i, p in enumerate(props) if p.held_by is None)
        if key != self._static_key:
            image = Image.fromarray(self.table)
            self.scene.draw_furniture(image, self.cam)
            for _, i in sorted((p.top, i) for i, p in enumerate(props) if p.held_by is None):
                self.sprites.paste(image, i, props[i])
            self._static, self._static_key = image, key
        return self._static

    def render(self, props, poses, widths, step: int = 0) -> np.ndarray:
        """(H, W, 3) uint8: the scene with `props`, the arms at `poses` (world), fingers `widths` apart."""
        image = self._static_layer(props).copy()
        draw = ImageDraw.Draw(image)
        for arm in (0, 1):
            draw_arm(draw, self.cam, arm, poses[arm])
        for i, prop in sorted(enumerate(props), key=lambda ip: ip[1].top):
            if prop.held_by is not None:
                below = prop.position.copy()
                below[2] = prop.rest_z
                shadow = self.cam.project(below) + 0.25 * (prop.position[2] - prop.rest_z) * self.cam.scale(0.0)
                draw_shadow(image, self.sprites.sprite(i, prop), shadow)
                self.sprites.paste(image, i, prop)
        for arm in (0, 1):
            draw_fingers(draw, self.cam, poses[arm], float(widths[arm]))
        frame = np.asarray(image, dtype=np.float32) * self.light + self.noise[step % len(self.noise)]
        return np.clip(frame, 0, 255).astype(np.uint8)
