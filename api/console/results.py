"""Per-type result views: what each job type's result template needs, worked out here.

Drawings are SVG computed on the server (a mosaic's tile footprints on the sky, a spectrum
with its error band): no script runs to draw them, and the pages' CSP stays strict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: The drawing area of the SVG charts, in SVG units.
CHART_W, CHART_H = 1000.0, 360.0
PAD = 10.0


def _finite(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


def _scale(lo: float, hi: float, size: float, flip: bool = False):  # type: ignore[no-untyped-def]
    span = (hi - lo) or 1.0

    def to(v: float) -> float:
        t = (v - lo) / span
        return round(PAD + (1.0 - t if flip else t) * (size - 2 * PAD), 2)

    return to


def spectrum_svg(result: dict[str, Any]) -> dict[str, Any] | None:
    """Flux against wavelength as an SVG polyline, the ±1σ error band as a polygon behind it."""
    wave, flux = result.get("wavelength") or [], result.get("flux") or []
    error = result.get("error") or []
    points = [(w, f, (error[i] if i < len(error) else None)) for i, (w, f) in enumerate(zip(wave, flux, strict=False))
              if isinstance(w, int | float) and isinstance(f, int | float) and math.isfinite(w) and math.isfinite(f)]
    if len(points) < 2:
        return None
    ws = [p[0] for p in points]
    lows = [p[1] - (p[2] or 0.0) if isinstance(p[2], int | float) and math.isfinite(p[2]) else p[1] for p in points]
    highs = [p[1] + (p[2] or 0.0) if isinstance(p[2], int | float) and math.isfinite(p[2]) else p[1] for p in points]
    x = _scale(min(ws), max(ws), CHART_W)
    y = _scale(min(lows), max(highs), CHART_H, flip=True)
    line = " ".join(f"{x(w)},{y(f)}" for w, f, _ in points)
    band = None
    if error:
        band = " ".join(f"{x(w)},{y(h)}" for w, h in zip(ws, highs, strict=True)) + " " + " ".join(
            f"{x(w)},{y(lo)}" for w, lo in zip(reversed(ws), reversed(lows), strict=True))
    return {"width": CHART_W, "height": CHART_H, "line": line, "band": band,
            "wave_min": min(ws), "wave_max": max(ws), "flux_min": min(lows), "flux_max": max(highs),
            "wave_unit": result.get("wavelength_unit") or "", "flux_unit": result.get("flux_unit") or ""}


def sky_svg(center: dict[str, Any] | None, shapes: list[tuple[str, Any, bool]]) -> dict[str, Any] | None:
    """Outlines on the sky (``shapes``: label, [[ra, dec], …] in degrees, whether it is the
    outline drawn dashed) on a tangent plane at ``center``, north up and east left (RA increases
    to the left, as on the sky)."""
    center = center or {}
    ra0, dec0 = center.get("ra"), center.get("dec")
    if not isinstance(ra0, int | float) or not isinstance(dec0, int | float):
        return None
    cos0 = math.cos(math.radians(dec0))

    def plane(ra: float, dec: float) -> tuple[float, float]:
        d_ra = (ra - ra0 + 180.0) % 360.0 - 180.0  # across RA 0/360
        return -d_ra * cos0, dec - dec0  # east (RA up) to the left

    polygons = [(label, [plane(float(ra), float(dec)) for ra, dec in corners], outline)
                for label, corners, outline in shapes
                if corners and all(len(c) == 2 and all(isinstance(v, int | float) for v in c) for c in corners)]
    if not polygons:
        return None
    xs = _finite([p[0] for _, pts, _ in polygons for p in pts])
    ys = _finite([p[1] for _, pts, _ in polygons for p in pts])
    side = max(max(xs) - min(xs), max(ys) - min(ys)) or 1.0
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    size = 400.0
    x = _scale(cx - side / 2, cx + side / 2, size)
    y = _scale(cy - side / 2, cy + side / 2, size, flip=True)
    return {"size": size, "extent_deg": side,
            "polygons": [{"label": label, "points": " ".join(f"{x(px)},{y(py)}" for px, py in pts), "mosaic": outline}
                         for label, pts, outline in polygons]}


def view(job: dict[str, Any], result: dict[str, Any] | None, files: list[dict[str, Any]]) -> dict[str, Any]:
    """What the job type's result template needs (empty for types shown as plain JSON)."""
    if not result:
        return {}
    job_type = job["type"]
    payload = result.get("result_payload") or {}
    urls = {f["name"]: f["url"] for f in files}
    if job_type == "sources.detect":
        outputs = payload.get("outputs") or {}
        shape = outputs.get("image_shape") or [None, None]
        return {"overlay": urls.get(outputs.get("overlay", "overlay.png")),
                "catalogue": urls.get(outputs.get("catalogue", "catalogue.ecsv")),
                "ny": shape[0], "nx": shape[1], "sources": payload.get("sources") or []}
    if job_type == "image.composite":
        return {"image": urls.get(payload.get("file", ""))}
    if job_type == "image.mosaic":
        named = payload.get("files") or {}
        shapes = [("mosaic", payload.get("corners"), True)] + [
            (f"tile {i + 1}", t.get("footprint"), False) for i, t in enumerate(payload.get("tiles") or [])]
        return {"image": urls.get(named.get("preview", "mosaic.png")), "fits": urls.get(named.get("fits", "")),
                "sky": sky_svg(payload.get("center"), shapes)}
    if job_type == "fits.inspect":
        skies = {}
        for hdu in payload.get("hdus") or []:
            image = hdu.get("image") or {}
            if image.get("has_celestial_wcs"):
                skies[hdu.get("index")] = sky_svg(image.get("centre"), [(f"HDU {hdu.get('index')}",
                                                                          image.get("footprint"), False)])
        return {"skies": skies}
    if job_type == "table.page":
        input_payload = job.get("input_payload") or {}
        following = payload.get("offset", 0) + payload.get("n_rows", 0)
        return {"next_offset": following if following < payload.get("total_rows", 0) else None,
                "prev_offset": max(0, payload.get("offset", 0) - payload.get("limit", 100))
                if payload.get("offset", 0) > 0 else None, "input": input_payload}
    if job_type == "spectrum.extract":
        return {"chart": spectrum_svg(payload)}
    return {}
