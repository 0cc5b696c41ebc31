"""Atlas libraries (folders of image/label pairs), atlas ranking, label fusion and multi-atlas propagation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bijros import cli
from bijros.atlas.folders import (
    add_library,
    discover_atlases,
    remove_library,
    resolve_library,
    user_libraries,
)
from bijros.atlas.fusion import fuse, local_weights
from bijros.atlas.multi import (
    LoadedAtlas,
    MultiAtlasOptions,
    load_library_atlases,
    propagate_library,
    rank_atlases,
)
from bijros.errors import InputError
from bijros.io import load_image, save_image, write_label_table
from bijros.io.image import Image, LabelTable
from bijros.registration.pipeline import RegistrationOptions

QUICK = RegistrationOptions(method="affine", preset="fast", spacing=4.0, device="cpu")


def brain_labels(image: Image) -> Image:
    arr = image.array.astype(np.float32)
    labels = (arr > np.percentile(arr, 50)).astype(np.int16) + (arr > np.percentile(arr, 80))
    return Image(labels, image.ijk_to_ras.copy(), name="labels")


def shifted(image: Image, mm: float, name: str) -> Image:
    moved = image.ijk_to_ras.copy()
    moved[:3, 3] += [mm, 0.0, 0.0]
    return Image(image.array.copy(), moved, name=name)


# ----------------------------------------------------------------------------- folders


def test_both_folder_layouts_pair_images_with_labels(small_brain, tmp_path):
    decathlon = tmp_path / "decathlon"
    for sub in ("images", "labels"):
        (decathlon / sub).mkdir(parents=True)
    for name in ("a", "b"):
        save_image(small_brain, decathlon / "images" / f"{name}.nii.gz")
        save_image(brain_labels(small_brain), decathlon / "labels" / f"{name}.nii.gz")
    save_image(small_brain, decathlon / "images" / "orphan.nii.gz")
    library = discover_atlases(decathlon)
    assert [a.name for a in library.atlases] == ["a", "b"]
    assert len(library.skipped) == 1 and "orphan.nii.gz" in library.skipped[0]

    malf = tmp_path / "malf"
    malf.mkdir()
    for subject in ("1000", "1001"):
        save_image(small_brain, malf / f"{subject}_t1.nii.gz")
        save_image(brain_labels(small_brain), malf / f"{subject}_labels.nii.gz")
    save_image(small_brain, malf / "1002_t1.nii.gz")  # its labels file is missing
    table = LabelTable()
    table.add(1, "grey")
    table.add(2, "white")
    write_label_table(table, malf / "labels.csv")
    library = discover_atlases(malf)
    assert [a.name for a in library.atlases] == ["1000", "1001"]
    assert all(a.table_path == malf / "labels.csv" for a in library.atlases)
    assert any("1002_t1.nii.gz" in line for line in library.skipped)

    with pytest.raises(InputError, match="No atlas"):
        discover_atlases(tmp_path / "decathlon" / "images")


def test_unreadable_atlas_is_skipped_by_name(small_brain, tmp_path):
    folder = tmp_path / "lib"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    save_image(small_brain, folder / "images" / "good.nii.gz")
    save_image(brain_labels(small_brain), folder / "labels" / "good.nii.gz")
    (folder / "images" / "broken.nii.gz").write_bytes(b"not an image")
    save_image(brain_labels(small_brain), folder / "labels" / "broken.nii.gz")
    atlases, skipped = load_library_atlases(discover_atlases(folder).atlases)
    assert [a.name for a in atlases] == ["good"]
    assert len(skipped) == 1 and skipped[0].startswith("broken:")


def test_added_libraries_are_listed_resolved_and_removed(small_brain, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BIJROS_CONFIG_DIR", str(tmp_path / "config"))
    folder = tmp_path / "my brains"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    save_image(small_brain, folder / "images" / "s1.nii.gz")
    save_image(brain_labels(small_brain), folder / "labels" / "s1.nii.gz")
    assert cli.main(["atlas", "add", str(folder), "--name", "mine"]) == 0
    assert "1 atlases" in capsys.readouterr().out
    assert user_libraries() == {"mine": str(folder.resolve())}
    assert [a.name for a in resolve_library("mine").atlases] == ["s1"]
    assert cli.main(["atlas", "list"]) == 0
    listing = capsys.readouterr().out
    assert "mni152-desikan-killiany (built-in)" in listing and "mine (library)" in listing
    assert cli.main(["atlas", "remove", "mine"]) == 0
    assert user_libraries() == {} and folder.is_dir()  # forgotten, not deleted
    assert cli.main(["atlas", "remove", "mine"]) == 2
    assert "No atlas library called 'mine'" in capsys.readouterr().err
    with pytest.raises(InputError, match="built-in atlas"):
        add_library(folder, "mni152-aal")
    with pytest.raises(InputError):
        remove_library("never-added")


# ----------------------------------------------------------------------------- ranking and fusion


def test_ranking_puts_an_atlas_identical_to_the_target_first(small_brain):
    labels = brain_labels(small_brain)
    rng = np.random.default_rng(0)
    noisy = Image(small_brain.array * 0.5 + rng.normal(0, small_brain.array.std(), small_brain.shape),
                  small_brain.ijk_to_ras.copy(), name="noisy")
    flipped = Image(small_brain.array[::-1].copy(), small_brain.ijk_to_ras.copy(), name="flipped")
    atlases = [LoadedAtlas("noisy", noisy, labels), LoadedAtlas("same", small_brain, labels),
               LoadedAtlas("flipped", flipped, labels)]
    ranked = rank_atlases(small_brain, atlases, QUICK)
    assert ranked[0][1].name == "same"
    assert ranked[0][0] > 0.98 and ranked[0][0] > ranked[1][0] + 0.05


def test_fusion_of_identical_label_maps_returns_them():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, (12, 10, 8)).astype(np.int16)
    stack = np.stack([labels] * 4)
    for weights in (None, rng.random(stack.shape).astype(np.float32)):
        fused, confidence = fuse(stack, weights)
        assert np.array_equal(fused, labels) and np.allclose(confidence, 1.0)


def test_vote_and_weighted_fusion_overrule_an_atlas_that_is_wrong_everywhere():
    rng = np.random.default_rng(2)
    truth = rng.integers(1, 6, (16, 16, 8)).astype(np.int16)
    wrong = (truth % 5) + 1  # a different label at every voxel
    stack = np.stack([wrong, truth, truth])  # the wrong one ranked first
    voted, confidence = fuse(stack)
    assert np.array_equal(voted, truth) and np.allclose(confidence, 2 / 3)
    # weighted voting: the wrong atlas's image differs from the target, so it gets little weight; even as
    # one of two atlases against one right atlas, the weights decide for the truth
    target = rng.random(truth.shape).astype(np.float32)
    warped = np.stack([1 - target, target])
    weights = local_weights(target, warped, (1.0, 1.0, 1.0), sigma_mm=1.0)
    weighted, _ = fuse(np.stack([wrong, truth]), weights)
    assert np.array_equal(weighted, truth)
    assert not np.array_equal(fuse(np.stack([wrong, truth]))[0], truth)  # a plain vote ties and keeps the first


# ----------------------------------------------------------------------------- multi-atlas propagation


def test_label_tables_that_disagree_are_an_error_naming_both(small_brain):
    a, b = brain_labels(small_brain), brain_labels(small_brain)
    a.label_table, b.label_table = LabelTable(), LabelTable()
    a.label_table.add(1, "grey matter")
    b.label_table.add(1, "hippocampus")
    with pytest.raises(InputError, match="'grey matter' in atlas 'first' but 'hippocampus' in atlas 'second'"):
        propagate_library(small_brain, [LoadedAtlas("first", small_brain, a), LoadedAtlas("second", small_brain, b)],
                          MultiAtlasOptions(registration=QUICK))


def test_a_library_of_one_atlas_falls_back_to_single_atlas_propagation(small_brain):
    moved = shifted(small_brain, 2.0, "only")
    result = propagate_library(small_brain, [LoadedAtlas("only", moved, brain_labels(moved))],
                               MultiAtlasOptions(registration=QUICK))
    labels = brain_labels(small_brain)
    assert any("one atlas" in note for note in result.notes)
    assert result.report["fusion"] == "none (one atlas)" and result.ranking[0]["used"]
    assert np.mean(result.labels.array == labels.array) > 0.9


def test_propagate_library_cli_on_three_hippocampus_crops(shared_data, tmp_path):
    images, labels = shared_data("hippocampus", "images"), shared_data("hippocampus", "labels")
    library = tmp_path / "library"
    (library / "images").mkdir(parents=True)
    (library / "labels").mkdir()
    for case in ("003", "004", "006"):
        for kind, folder in (("images", images), ("labels", labels)):
            (library / kind / f"hippocampus_{case}.nii.gz").symlink_to(folder / f"hippocampus_{case}.nii.gz")
    out = tmp_path / "out"
    target = images / "hippocampus_001.nii.gz"
    code = cli.main(["propagate", "--atlas-library", str(library), "--target", str(target), "--out", str(out),
                     "--top-k", "2", "--fusion", "weighted", "--preset", "fast", "--device", "cpu",
                     "--progress", "none"])
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"labels.nii.gz", "confidence.nii.gz", "atlases.json", "qc.png", "report.json"}
    ranking = json.loads((out / "atlases.json").read_text())["ranking"]
    assert [r["rank"] for r in ranking] == [1, 2, 3] and sum(r["used"] for r in ranking) == 2
    assert ranking[0]["score"] >= ranking[1]["score"] >= ranking[2]["score"]
    fused = load_image(out / "labels.nii.gz", label_map=True)
    truth = load_image(labels / "hippocampus_001.nii.gz", label_map=True)
    assert fused.shape == truth.shape
    from bijros.metrics import evaluate_labels

    assert evaluate_labels(fused.array, truth.array, truth.spacing, (0,), with_hd95=False)["mean_dice"] > 0.6
    confidence = load_image(out / "confidence.nii.gz")
    assert confidence.array.min() >= 0.0 and confidence.array.max() <= 1.0 + 1e-6
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "multi-atlas" and report["top_k"] == 2

    code = cli.main(["propagate", "--atlas-library", str(tmp_path / "nowhere"), "--target", str(target),
                     "--out", str(tmp_path / "out2")])
    assert code == 2 and not (tmp_path / "out2").exists()


def test_joint_label_fusion_discounts_atlases_that_make_the_same_mistake():
    """Two atlases with the same error outvote one right atlas in a plain vote; joint label fusion sees
    that their errors are correlated and trusts the right one."""
    from bijros.atlas.fusion import jlf_weights

    rng = np.random.default_rng(3)
    truth = rng.integers(1, 4, (14, 12, 10)).astype(np.int16)
    wrong = (truth % 3) + 1
    target = rng.random(truth.shape).astype(np.float32) * 0.5
    twin = np.clip(target + 0.3, 0, 1)
    right = np.clip(target + rng.normal(0, 0.02, truth.shape), 0, 1).astype(np.float32)
    labels = np.stack([wrong, wrong, truth])
    assert np.array_equal(fuse(labels)[0], wrong)
    weights = jlf_weights(target, np.stack([twin, twin, right]), labels)
    fused, _ = fuse(labels, weights)
    assert np.mean(fused == truth) > 0.99
    unanimous = np.stack([truth] * 3)
    assert np.array_equal(fuse(unanimous, jlf_weights(target, np.stack([twin, twin, right]), unanimous))[0], truth)


def test_local_search_undoes_a_one_voxel_misregistration():
    """An atlas that is the target moved by one voxel (image and labels alike) has its labels put back in
    place by the local search of radius 1; without the search a third of the boundary voxels would be wrong."""
    from bijros.atlas.fusion import local_search

    rng = np.random.default_rng(5)
    i, j, k = np.indices((24, 22, 20))
    labels = (1 + (i > 11) + 2 * (j > 10) + 4 * ((i + k) % 7 > 3)).astype(np.int16)  # many edges, all axes
    target = (labels / 8.0 + rng.normal(0, 0.01, labels.shape)).astype(np.float32)
    shifts = [(1, 0, 0), (0, -1, 1)]
    warped = np.stack([np.roll(target, s, axis=(0, 1, 2)) for s in shifts])
    moved = np.stack([np.roll(labels, s, axis=(0, 1, 2)) for s in shifts])
    inner = (slice(3, -3),) * 3
    assert all(np.mean(m[inner] == labels[inner]) < 0.8 for m in moved)
    searched, found = local_search(target, warped, moved, radius=1)
    for a in range(2):
        assert np.mean(found[a][inner] == labels[inner]) > 0.99
        assert np.abs(searched[a][inner] - target[inner]).mean() < 0.01
    same, untouched = local_search(target, warped, moved, radius=0)
    assert same is warped and untouched is moved


def test_atlas_show_lists_modality_labels_and_thumbnails(small_brain, tmp_path):
    folder = tmp_path / "malf-like"
    folder.mkdir()
    for name in ("s1", "s2"):
        save_image(small_brain, folder / f"{name}_t1.nii.gz")
        save_image(brain_labels(small_brain), folder / f"{name}_labels.nii.gz")
    save_image(small_brain, folder / "s3_t1.nii.gz")  # no labels: reported
    out = tmp_path / "out"
    assert cli.main(["atlas", "show", "--library", str(folder), "--out", str(out), "--progress", "none"]) == 0
    info = json.loads((out / "library.json").read_text())
    assert [a["name"] for a in info["atlases"]] == ["s1", "s2"]
    assert info["atlases"][0]["modality"] == "MR (T1)" and info["atlases"][0]["labels"] == 2
    assert any("s3_t1" in line for line in info["skipped"])
    from PIL import Image as PILImage

    with PILImage.open(info["atlases"][0]["thumbnail"]) as picture:
        assert max(picture.size) == 96 and picture.getextrema()[1] > 0
