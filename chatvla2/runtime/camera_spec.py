"""`chatvla2 run --camera SPEC` (one per view, in the model's view order): the syntax and its parser.

    static                               the sample scene (contract.scene), this view's frame
    v4l2:INDEX | v4l2:/dev/PATH          a V4L2 (USB) camera, e.g. v4l2:0, v4l2:/dev/video2,
        [@WIDTHxHEIGHT] [@FPS] [@FOURCC]   v4l2:/dev/v4l/by-id/usb-...-index0@1280x720@30@MJPG
                                         (options in any order; FOURCC: a letter and 3 letters/digits: MJPG, YUYV, H264)
    gst:PIPELINE                         a GStreamer pipeline ending in appsink, e.g. a Jetson CSI camera:
                                         gst:nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1
                                         ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR
                                         ! appsink drop=true max-buffers=1
    file:PATH[?fps=F][&loop=1]           a video file, or a folder of .png/.jpg/.npy frames read in name
                                         order (natural: frame2 before frame10); fps: the video's own rate
                                         (a folder: 30) unless given, 0 = as fast as they decode; loop: 0 (the
                                         default: the view goes stale after the last frame) or 1
    sim                                  reserved for simulated task scenes (not available yet)

A bad SPEC is a one-line ValueError naming it. Nothing here opens a device or imports OpenCV.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from chatvla2.contract.errors import InvalidInput

KINDS = ("static", "v4l2", "gst", "file")
SPEC_SYNTAX = "static | v4l2:INDEX|/dev/PATH[@WxH][@FPS][@FOURCC] | gst:PIPELINE ! appsink | file:PATH[?fps=F&loop=0|1]"
CAMERA_SPEC_HELP = (
    f"a camera view, once per view in the model's order: {SPEC_SYNTAX} "
    "(file:: a video or a folder of .png/.jpg/.npy frames; sim: not available yet)"
)

_SIZE = re.compile(r"([1-9][0-9]*)x([1-9][0-9]*)")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]*)?")
_FOURCC = re.compile(r"[A-Za-z][A-Za-z0-9]{3}")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class CameraSpec:
    text: str  # as given: every message names it
    kind: str  # one of KINDS
    device: int | str | None = None  # v4l2: an index or a device path
    width: int | None = None  # v4l2: requested size (the camera must give exactly this)
    height: int | None = None
    fps: float | None = None  # v4l2: requested rate; file: pacing (None: default, 0: unpaced)
    fourcc: str | None = None  # v4l2: pixel format, e.g. MJPG
    pipeline: str | None = None  # gst
    path: str | None = None  # file
    loop: bool = False  # file


def _bad(text: str, why: str) -> InvalidInput:
    return InvalidInput(f"bad camera SPEC {text!r}: {why} (expected {SPEC_SYNTAX})")


def parse_camera_spec(text: str) -> CameraSpec:
    if not isinstance(text, str) or not text.strip():
        raise _bad(str(text), "empty")
    if "\n" in text or "\r" in text:
        raise _bad(text, "a SPEC is one line")
    kind, sep, rest = text.partition(":")
    if kind == "static":
        if sep:
            raise _bad(text, "static takes no argument")
        return CameraSpec(text, "static")
    if kind == "sim":
        raise InvalidInput(f"camera SPEC {text!r}: a simulated task scene is not available yet as a --camera SPEC; "
                         "run it with `chatvla2 run --robot sim --task NAME` (its top camera is every view)")
    if kind == "v4l2":
        return _parse_v4l2(text, rest)
    if kind == "gst":
        return _parse_gst(text, rest)
    if kind == "file":
        return _parse_file(text, rest)
    raise _bad(text, f"unknown kind {kind!r}")


def _parse_v4l2(text: str, rest: str) -> CameraSpec:
    device_text, *options = rest.split("@")
    if re.fullmatch(r"[0-9]+", device_text):
        device: int | str = int(device_text)
    elif device_text.startswith("/") and len(device_text) > 1:
        device = device_text
    else:
        raise _bad(text, "v4l2: needs a device index (0) or an absolute device path (/dev/video0)")
    fields: dict = {}
    for option in options:
        if size := _SIZE.fullmatch(option):
            name, value = "size", (int(size.group(1)), int(size.group(2)))
        elif _NUMBER.fullmatch(option):
            name, value = "fps", float(option)
            if value <= 0:
                raise _bad(text, "the frame rate must be > 0")
        elif _FOURCC.fullmatch(option):
            name, value = "fourcc", option.upper()
        else:
            raise _bad(text, f"v4l2 option {option!r} is not WIDTHxHEIGHT, FPS or a FOURCC (MJPG)")
        if name in fields:
            raise _bad(text, f"v4l2: {name} given twice")
        fields[name] = value
    width, height = fields.get("size", (None, None))
    return CameraSpec(text, "v4l2", device=device, width=width, height=height, fps=fields.get("fps"), fourcc=fields.get("fourcc"))


def _parse_gst(text: str, rest: str) -> CameraSpec:
    pipeline = rest.strip()
    last = pipeline.split("!")[-1].split()
    if not last or last[0] != "appsink":
        raise _bad(text, "gst: the pipeline must end in an appsink element (e.g. ... ! appsink drop=true max-buffers=1)")
    return CameraSpec(text, "gst", pipeline=pipeline)


def _parse_file(text: str, rest: str) -> CameraSpec:
    path, sep, query = rest.rpartition("?") if "?" in rest else (rest, "", "")
    if not path:
        raise _bad(text, "file: needs a path")
    fps, loop, seen = None, False, set()
    for item in query.split("&") if sep else ():
        key, eq, value = item.partition("=")
        if not eq or key in seen:
            raise _bad(text, f"file option {item!r} is not one key=value (fps=F, loop=0|1), each once")
        seen.add(key)
        if key == "fps":
            try:
                fps = float(value)
            except ValueError:
                fps = math.nan
            if not math.isfinite(fps) or fps < 0:
                raise _bad(text, f"fps={value!r}: a frame rate >= 0 (0: as fast as the frames decode)")
        elif key == "loop":
            if value.lower() not in _TRUE + _FALSE:
                raise _bad(text, f"loop={value!r}: 0 or 1")
            loop = value.lower() in _TRUE
        else:
            raise _bad(text, f"unknown file option {key!r} (fps, loop)")
    return CameraSpec(text, "file", path=path, fps=fps, loop=loop)
