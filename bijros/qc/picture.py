"""``qc.png``: a registration's result on one page, drawn with Pillow (no plotting library).

Rows: axial, coronal and sagittal slices through the centre of the fixed image's foreground, shown
in radiological convention like Slicer (patient right on the screen's left; anterior / superior up).
Columns:

1. *overlay*: the fixed image and the warped moving image as a checkerboard;
2. *labels*: the propagated labels' contours in their colours on the fixed image (without labels: the
   warped image's edges in yellow);
3. *Jacobian*: the determinant of the total mapping's Jacobian, log scale, blue (shrinking) - white
   (1) - red (growing), folded voxels (``|J| <= 0``) in yellow, outside the fixed foreground dark grey; a
   colour bar below.

A header line carries the method and the folding / SDlogJ figures. The layout (panel boxes in
pixels) is returned so callers and tests can find each panel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PANEL = 300  # pixels per panel side
HEADER = 44
COLORBAR = 56
COLUMNS = ("overlay", "labels", "jacobian")
ROWS = ("axial", "coronal", "sagittal")
LOG2_RANGE = 1.0  # colour bar from J = 0.5 to J = 2
FOLDED = (1.0, 0.85, 0.0)  # yellow


def _canonical(array: np.ndarray, ijk_to_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Array reordered/flipped to RAS+ axes (nibabel orientation tools) and its voxel spacing."""
    from nibabel.orientations import apply_orientation, io_orientation

    ornt = io_orientation(ijk_to_ras)
    spacing = np.linalg.norm(ijk_to_ras[:3, :3], axis=0)[ornt[:, 0].astype(int).argsort()]
    return apply_orientation(array, ornt), spacing


def _sample(a: np.ndarray) -> np.ndarray:
    """Every n-th voxel along each axis (about 200k voxels): enough for display percentiles."""
    step = max(1, round((a.size / 200_000) ** (1 / 3)))
    return a[::step, ::step, ::step]


def _window(a: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Display window (1st and 99.5th percentile) of ``a`` inside ``mask`` (both subsampled)."""
    values = a[mask] if mask.any() else a.ravel()
    lo, hi = np.percentile(values, [1, 99.5]) if values.size else (0.0, 1.0)
    return float(lo), float(max(hi - lo, 1e-6))


def _on_grid(image, reference) -> np.ndarray:
    """``image`` (a bijros Image) read on ``reference``'s voxels, nearest neighbour; the Jacobian lives on the
    coarser displacement grid."""
    if image.shape == reference.shape and np.allclose(image.ijk_to_ras, reference.ijk_to_ras, atol=1e-4):
        return np.asarray(image.array)
    m = np.linalg.inv(image.ijk_to_ras) @ reference.ijk_to_ras  # reference ijk -> image ijk
    if np.allclose(m[:3, :3], np.diag(np.diag(m[:3, :3])), atol=1e-6):
        idx = [np.clip(np.rint(m[a, a] * np.arange(n) + m[a, 3]).astype(int), 0, image.shape[a] - 1)
               for a, n in enumerate(reference.shape)]
        return np.asarray(image.array)[np.ix_(*idx)]
    from scipy.ndimage import map_coordinates

    ijk = np.indices(reference.shape, dtype=np.float32).reshape(3, -1)
    coords = m[:3, :3] @ ijk + m[:3, 3:4]
    return map_coordinates(np.asarray(image.array, np.float32), coords, order=0, mode="nearest").reshape(reference.shape)


def _slices(volume: np.ndarray, centre) -> dict[str, np.ndarray]:
    """2D display arrays (rows top -> bottom, columns left -> right) of a RAS+ volume."""
    i, j, k = centre
    return {
        "axial": volume[:, :, k].T[::-1, ::-1],  # rows: anterior at top; columns: patient right on the left
        "coronal": volume[:, j, :].T[::-1, ::-1],  # rows: superior at top
        "sagittal": volume[i, :, :].T[::-1, :],  # rows: superior at top; columns: posterior -> anterior
    }


def _aspect(spacing) -> dict[str, tuple[float, float]]:
    """(row mm, column mm) per display pixel for each view."""
    si, sj, sk = spacing
    return {"axial": (sj, si), "coronal": (sk, si), "sagittal": (sk, sj)}


def _boundaries(labels2d: np.ndarray) -> np.ndarray:
    edge = np.zeros(labels2d.shape, bool)
    edge[:-1, :] |= labels2d[:-1, :] != labels2d[1:, :]
    edge[:, :-1] |= labels2d[:, :-1] != labels2d[:, 1:]
    return edge & (labels2d != 0)


def _foreground_centre(volume: np.ndarray, lo: float, width: float) -> tuple[int, int, int]:
    """Voxel index of the centre of the box around the voxels brighter than 10 % of the display window."""
    fg = volume > lo + 0.1 * width
    box = [np.flatnonzero(fg.any(axis=tuple(b for b in range(3) if b != a))) for a in range(3)]
    return tuple(int((b[0] + b[-1]) // 2) if b.size else n // 2 for b, n in zip(box, volume.shape))


def _contours(base: np.ndarray, labels2d: np.ndarray, table) -> np.ndarray:
    """``base`` (H, W, 3) with the boundaries of ``labels2d`` drawn in the label table's colours (yellow without one)."""
    contour = base.copy()
    edge = _boundaries(labels2d)
    values = labels2d[edge]
    if values.size:
        colours = {int(v): (table.color(int(v)) if table is not None else (1.0, 1.0, 0.0)) for v in np.unique(values)}
        contour[edge] = np.array([colours[int(v)] for v in values])
    return contour


def _jacobian_rgb(jac: np.ndarray) -> np.ndarray:
    t = np.clip(np.log2(np.clip(jac, 1e-6, None)) / LOG2_RANGE, -1, 1)[..., None]
    white, blue, red = np.array([1.0, 1, 1]), np.array([0.13, 0.35, 0.85]), np.array([0.85, 0.15, 0.12])
    rgb = np.where(t < 0, white + (-t) * (blue - white), white + t * (red - white))
    rgb[jac <= 0] = FOLDED  # folded: a colour no other voxel takes
    return rgb


def _panel(rgb: np.ndarray, aspect: tuple[float, float]):
    """Fit an RGB float array into a PANEL x PANEL tile keeping its physical aspect."""
    from PIL import Image as PILImage

    h_mm, w_mm = rgb.shape[0] * aspect[0], rgb.shape[1] * aspect[1]
    scale = PANEL / max(h_mm, w_mm)
    size = (max(1, round(w_mm * scale)), max(1, round(h_mm * scale)))
    img = PILImage.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)).resize(size, PILImage.NEAREST)
    tile = PILImage.new("RGB", (PANEL, PANEL), (0, 0, 0))
    tile.paste(img, ((PANEL - size[0]) // 2, (PANEL - size[1]) // 2))
    return tile


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def write_qc_png(path, fixed, warped, jacobian, labels=None, report: dict | None = None) -> dict:
    """Write qc.png for a result (bijros Images on the fixed grid). Returns its layout."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    f, spacing = _canonical(np.asarray(fixed.array), fixed.ijk_to_ras)  # views: nothing whole is copied
    w, _ = _canonical(np.asarray(warped.array), fixed.ijk_to_ras)
    jac, _ = _canonical(_on_grid(jacobian, fixed), fixed.ijk_to_ras)
    lab = _canonical(np.asarray(labels.array), fixed.ijk_to_ras)[0] if labels is not None else None
    fs_, ws_ = _sample(f).astype(np.float32), _sample(w).astype(np.float32)
    inside = fs_ > np.percentile(fs_, 50) if fs_.size else np.ones_like(fs_, bool)
    (f_lo, f_w), (w_lo, w_w) = _window(fs_, inside), _window(ws_, inside)
    centre = _foreground_centre(f, f_lo, f_w)

    def scaled(slices: dict, lo: float, width: float) -> dict:
        return {k: np.clip((v.astype(np.float32) - lo) / width, 0, 1) for k, v in slices.items()}

    views = {"f": scaled(_slices(f, centre), f_lo, f_w), "w": scaled(_slices(w, centre), w_lo, w_w),
             "j": {k: v.astype(np.float32) for k, v in _slices(jac, centre).items()}}
    if lab is not None:
        views["l"] = _slices(lab, centre)
    aspect = _aspect(spacing)
    table = labels.label_table if labels is not None else None

    width, height = PANEL * len(COLUMNS), HEADER + PANEL * len(ROWS) + COLORBAR
    page = PILImage.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(page)
    layout = {"size": [width, height], "panels": {}}
    for r, view in enumerate(ROWS):
        fs, ws = views["f"][view], views["w"][view]
        square = max(4, round(16 / min(aspect[view])))  # 16 mm checker squares
        yy, xx = np.indices(fs.shape)
        checker = ((yy // square + xx // square) % 2).astype(bool)
        overlay = np.repeat(np.where(checker, ws, fs)[..., None], 3, -1)
        base = np.repeat(fs[..., None], 3, -1)
        if lab is not None:
            contour = _contours(base, views["l"][view], table)
        else:
            gy, gx = np.gradient(ws)
            mag = np.hypot(gy, gx)
            contour = base.copy()
            contour[mag > np.percentile(mag, 92)] = (1.0, 0.85, 0.0)
        jac_rgb = _jacobian_rgb(views["j"][view])
        jac_rgb[fs < 0.05] = 0.16  # outside the fixed image's foreground: dark grey
        tiles = {"overlay": overlay, "labels": contour, "jacobian": jac_rgb}
        for c, column in enumerate(COLUMNS):
            x0, y0 = c * PANEL, HEADER + r * PANEL
            page.paste(_panel(tiles[column], aspect[view]), (x0, y0))
            layout["panels"][f"{view}/{column}"] = [x0, y0, x0 + PANEL, y0 + PANEL]
            draw.rectangle((x0, y0, x0 + 150, y0 + 20), fill=(24, 24, 24))
            draw.text((x0 + 6, y0 + 4), f"{view} {column}", fill=(255, 255, 120), font=_font(13))
            if view != "sagittal":
                draw.text((x0 + 6, y0 + PANEL - 20), "R", fill=(200, 200, 200), font=_font(13))
    qc = (report or {}).get("qc", {})
    header = f"bijros {(report or {}).get('method', '')}  {fixed.name}  <-  {(report or {}).get('moving', {}).get('name', '')}"
    figures = ""
    if qc:
        figures = (f"folding {100 * qc.get('folding_fraction', 0):.3f} %   SDlogJ {qc.get('sdlogj', 0):.3f}   "
                   f"|J| {qc.get('jacobian_min', 0):.2f} .. {qc.get('jacobian_max', 0):.2f}")
    draw.text((8, 4), header.strip(), fill=(255, 255, 255), font=_font(15))
    draw.text((8, 24), figures, fill=(255, 220, 150), font=_font(14))
    # colour bar under the Jacobian column: J = 0.5 .. 2 on a log scale
    x0, y0 = 2 * PANEL + 20, HEADER + 3 * PANEL + 8
    bar_w = PANEL - 40
    ramp = np.exp2(np.linspace(-LOG2_RANGE, LOG2_RANGE, bar_w))[None, :].repeat(14, 0)
    page.paste(PILImage.fromarray((_jacobian_rgb(ramp) * 255).astype(np.uint8)), (x0, y0))
    for value, frac in ((0.5, 0.0), (1.0, 0.5), (2.0, 1.0)):
        draw.text((x0 + frac * (bar_w - 1) - 8, y0 + 18), f"{value:g}", fill=(230, 230, 230), font=_font(12))
    draw.text((8, y0 + 2), "checkerboard: fixed / warped   contours: labels   "
              "Jacobian: yellow = folded, grey = outside", fill=(200, 200, 200), font=_font(12))
    layout["colorbar"] = [x0, y0, x0 + bar_w, y0 + 14]
    page.save(str(Path(path)), format="PNG", optimize=False, compress_level=3)
    return layout


FUSION_COLUMNS = ("labels", "confidence")


def write_fusion_qc_png(path, target, labels, confidence, report: dict | None = None) -> dict:
    """qc.png of a multi-atlas fusion: the fused labels' contours on the target, and the confidence (the share
    of the atlases' votes the chosen label got: dark red = low, white = all agree), axial / coronal / sagittal
    through the centre of the target's foreground. Returns the layout."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    t, spacing = _canonical(np.asarray(target.array), target.ijk_to_ras)
    lab = _canonical(np.asarray(labels.array), target.ijk_to_ras)[0]
    conf = _canonical(np.asarray(confidence.array), target.ijk_to_ras)[0]
    ts = _sample(t).astype(np.float32)
    lo, width = _window(ts, ts > np.percentile(ts, 50) if ts.size else np.ones_like(ts, bool))
    centre = _foreground_centre(t, lo, width)
    images, label_slices, conf_slices = _slices(t, centre), _slices(lab, centre), _slices(conf, centre)
    aspect = _aspect(spacing)
    table = labels.label_table
    page = PILImage.new("RGB", (PANEL * 2, HEADER + PANEL * 3 + 24), (24, 24, 24))
    draw = ImageDraw.Draw(page)
    layout = {"size": list(page.size), "panels": {}}
    for r, view in enumerate(ROWS):
        base = np.repeat(np.clip((images[view].astype(np.float32) - lo) / width, 0, 1)[..., None], 3, -1)
        contour = _contours(base, label_slices[view], table)
        c = np.clip(conf_slices[view].astype(np.float32), 0, 1)[..., None]
        heat = np.concatenate([0.35 + 0.65 * c, c, c], -1)  # dark red (0) .. white (1)
        heat[label_slices[view] == 0] = 0.16
        for col, (name, tile) in enumerate(zip(FUSION_COLUMNS, (contour, heat))):
            x0, y0 = col * PANEL, HEADER + r * PANEL
            page.paste(_panel(tile, aspect[view]), (x0, y0))
            layout["panels"][f"{view}/{name}"] = [x0, y0, x0 + PANEL, y0 + PANEL]
            draw.rectangle((x0, y0, x0 + 150, y0 + 20), fill=(24, 24, 24))
            draw.text((x0 + 6, y0 + 4), f"{view} {name}", fill=(255, 255, 120), font=_font(13))
    rep = report or {}
    used = rep.get("top_k", "")
    draw.text((8, 4), f"bijros multi-atlas  {target.name}  {rep.get('fusion', '')}, {used} atlases".strip(),
              fill=(255, 255, 255), font=_font(15))
    inside = np.asarray(labels.array) > 0
    if inside.any():
        mean_conf = float(np.asarray(confidence.array)[inside].mean())
        draw.text((8, 24), f"mean confidence inside the labels {mean_conf:.3f}", fill=(255, 220, 150), font=_font(14))
    draw.text((8, HEADER + 3 * PANEL + 4), "contours: fused labels   confidence: dark red = atlases disagree, "
              "white = all agree", fill=(200, 200, 200), font=_font(12))
    page.save(str(Path(path)), format="PNG", optimize=False, compress_level=3)
    return layout
