"""Mirrored atlases: left/right pairing from label names, the flip and the label swap, and their use in fusion."""

from __future__ import annotations

import numpy as np
import pytest

from bijros.atlas.mirror import lateral_pairs, mirror_axis, mirrored, with_mirrored
from bijros.atlas.multi import LoadedAtlas, MultiAtlasOptions, propagate_library
from bijros.errors import InputError
from bijros.io.image import Image, LabelTable
from bijros.registration.pipeline import RegistrationOptions

QUICK = RegistrationOptions(method="affine", preset="fast", spacing=4.0, device="cpu")


def table(*names: str) -> LabelTable:
    t = LabelTable()
    for value, name in enumerate(names, start=1):
        t.add(value, name)
    return t


@pytest.mark.parametrize("left,right", [("Left Hippocampus", "Right Hippocampus"),  # MALF / Neuromorphometrics
                                        ("Left-Hippocampus", "Right-Hippocampus"),  # FreeSurfer aseg
                                        ("ctx-lh-insula", "ctx-rh-insula"),
                                        ("Hippocampus_L", "Hippocampus_R")])  # AAL
def test_left_and_right_labels_pair_by_name_in_each_naming_style(left, right):
    swap, unpaired = lateral_pairs(table("Brain Stem", left, right))
    assert swap == {2: 3, 3: 2} and unpaired == []


def test_a_lateral_label_without_its_partner_is_reported_and_mirroring_refused():
    t = table("Left Caudate", "Right Caudate", "Left Thalamus")
    swap, unpaired = lateral_pairs(t)
    assert swap == {1: 2, 2: 1} and unpaired == ["Left Thalamus"]
    image = Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    atlas = LoadedAtlas("a", image, Image(np.zeros((4, 4, 4), np.int16), np.eye(4), t))
    with pytest.raises(InputError, match="Left Thalamus"):
        with_mirrored([atlas, atlas], t, "on")
    kept, note = with_mirrored([atlas, atlas], t, "auto")
    assert len(kept) == 2 and "without a partner" in note


def test_mirroring_flips_along_the_left_right_axis_and_swaps_the_sides():
    # voxel axis 1 runs along RAS x here (a permuted, scaled direction matrix)
    ijk_to_ras = np.array([[0, 2.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    arr = np.zeros((3, 6, 4), np.float32)
    arr[:, :2] = 1.0  # bright on the low-x side
    lab = np.zeros((3, 6, 4), np.int16)
    lab[:, :2] = 1  # "Left Caudate" on the low-x side
    lab[:, 4:] = 2
    t = table("Left Caudate", "Right Caudate", "Brain Stem")
    lab[0, 2, 0] = 3  # a midline label keeps its value
    atlas = LoadedAtlas("s1", Image(arr, ijk_to_ras), Image(lab, ijk_to_ras, t))
    assert mirror_axis(atlas.image) == 1
    m = mirrored(atlas, lateral_pairs(t)[0])
    assert m.name == "s1 (mirrored)"
    assert np.array_equal(m.image.array, arr[:, ::-1]) and np.array_equal(m.image.ijk_to_ras, ijk_to_ras)
    # the left structure now lies on the high-x (right) side and is labelled right, and vice versa
    assert (m.labels.array[:, 4:] == 2).all() and (m.labels.array[:, :2] == 1).all()
    assert np.array_equal(m.image.array[:, 4:], np.ones((3, 2, 4)))
    assert m.labels.array[0, 3, 0] == 3
    twice = mirrored(m, lateral_pairs(t)[0])
    assert np.array_equal(twice.labels.array, lab) and np.array_equal(twice.image.array, arr)
    assert np.array_equal(atlas.labels.array, lab)  # the original is untouched


def test_no_lateral_labels_means_no_mirrors_in_auto(small_brain):
    labels = Image((small_brain.array > np.median(small_brain.array)).astype(np.int16), small_brain.ijk_to_ras,
                   table("Anterior"))
    atlases = [LoadedAtlas(n, small_brain, labels) for n in ("a", "b")]
    assert with_mirrored(atlases, labels.label_table, "auto") == (atlases, None)
    result = propagate_library(small_brain, atlases, MultiAtlasOptions(registration=QUICK, fusion="vote"))
    assert result.report["mirrored"] is False and result.report["candidates"] == 2


def test_a_lateral_library_fuses_its_atlases_and_their_mirrors(small_brain):
    arr = small_brain.array
    axis = mirror_axis(small_brain)
    half = np.moveaxis(np.indices(arr.shape)[axis], 0, 0) < arr.shape[axis] // 2
    inside = arr > np.median(arr)
    lab = np.where(inside & half, 1, np.where(inside, 2, 0)).astype(np.int16)
    t = table("Left Cortex", "Right Cortex")
    atlases = [LoadedAtlas(n, small_brain, Image(lab, small_brain.ijk_to_ras, t)) for n in ("a", "b")]
    result = propagate_library(small_brain, atlases, MultiAtlasOptions(registration=QUICK, fusion="vote"))
    assert result.report["mirrored"] is True and result.report["candidates"] == 4 and result.report["top_k"] == 4
    names = {r["name"] for r in result.ranking}
    assert names == {"a", "b", "a (mirrored)", "b (mirrored)"}
    assert any("mirrored" in note for note in result.notes)
    off = propagate_library(small_brain, atlases, MultiAtlasOptions(registration=QUICK, fusion="vote", mirror="off"))
    assert off.report["candidates"] == 2
