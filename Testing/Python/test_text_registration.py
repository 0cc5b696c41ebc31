"""Text in registration (issue 11): the TextSCF head, its region embeddings, --method text and --prompt.

* the region embedding table: one row per region, the background row orthogonal to the label rows, made from
  the precomputed table alone for known label names;
* the head's flow depends on the region map, starts as its backbone, and the learned-table ablation maps new
  names onto its training regions;
* training a head from a backbone (init_from) on synthetic pairs with region maps, and exporting it;
* register with --method text and with --prompt end to end on a small real brain (engine and command line);
* bad input: a prompt naming nothing, prompts files with bad JSON / CSV / unknown values, a model that does not
  fit the method; nothing is written to --out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from test_engine_registration import tissue_labels
from test_learned import blob_labels

from bijros.errors import InputError
from bijros.io.image import Image, LabelTable
from bijros.models.textscf import TextSCF
from bijros.models.weights import load_model, sha256_file
from bijros.registration.pipeline import RegistrationOptions, register
from bijros.registration.text import read_region_prompts, region_rows
from bijros.text.encoder import Embeddings
from bijros.text.regions import region_table, region_text
from bijros.training.trainer import TrainConfig, train

ENV = {**os.environ, "BIJROS_NUM_THREADS": "2"}
BACKBONE = {"channels": 8, "encoder_depth": 2, "levels": 3, "head_channels": 16, "head_layers": 1,
            "diffeomorphic": True, "int_steps": 3, "norm": True}
NAMES = ["background", "Left-Hippocampus", "Right-Amygdala", "Left-Lateral-Ventricle", "Brain-Stem"]


def write_model(folder, embedding="text", perturb=True, **extra):
    """A small TextSCF model.json + safetensors (the head's last layer made non-zero when ``perturb``)."""
    torch.manual_seed(0)
    config = {**BACKBONE, "embedding": embedding, **extra}
    model = TextSCF(**config)
    if perturb:
        torch.nn.init.normal_(model.mlp[-1].weight, std=0.05)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "m.safetensors"))
    entry = {"name": f"tiny-{embedding}", "file": "m.safetensors", "sha256": sha256_file(folder / "m.safetensors"),
             "architecture": "textscf", "config": config, "input_spacing_mm": 2.0}
    (folder / "model.json").write_text(json.dumps(entry))
    return folder / "model.json"


def test_region_table_rows_and_an_orthogonal_background():
    embed = Embeddings()
    table = region_table(NAMES, embed)
    assert table.shape == (len(NAMES), 384)
    assert embed.computed == 0, "known label names must come from the precomputed table"
    assert np.allclose(np.linalg.norm(table, axis=1), 1, atol=1e-4)
    assert np.abs(table[1:] @ table[0]).max() < 1e-5  # the background row is out of the label rows' span
    assert np.allclose(table[1], embed([region_text("Right-Hippocampus")])[0])  # a side does not change the text
    assert "hippocampal" in region_text("Left-Hippocampus") and region_text("Unknown") == region_text("background")


def test_the_head_depends_on_the_region_map_and_starts_as_its_backbone():
    torch.manual_seed(0)
    fixed, moving = torch.rand(1, 1, 24, 24, 24), torch.rand(1, 1, 24, 24, 24)
    fresh = TextSCF(**BACKBONE)
    fresh.set_regions(torch.as_tensor(region_table(NAMES)))
    regions = torch.randint(0, len(NAMES), (1, 1, 24, 24, 24))
    with torch.no_grad():
        assert torch.allclose(fresh(fixed, moving, regions), fresh(fixed, moving), atol=1e-6)
        torch.nn.init.normal_(fresh.mlp[-1].weight, std=0.05)
        a = fresh(fixed, moving, regions)
        b = fresh(fixed, moving, torch.zeros_like(regions))
        c = fresh(fixed, moving, regions)
    assert (a - b).abs().max() > 1e-3, "the flow must depend on the region map"
    assert torch.equal(a, c)
    with pytest.raises(ValueError, match="region indices"):
        fresh(fixed, moving, regions + len(NAMES))


def test_region_rows_text_and_learned_variants():
    names = {17: "Left-Hippocampus", 53: "Right-Hippocampus", 4: "Left-Lateral-Ventricle", 99: "Unknown"}
    text_model = TextSCF(**BACKBONE)
    lut, rows = region_rows(text_model, names)
    assert lut[99] == 0 and len({lut[17], lut[53], lut[4]}) == 3 and rows.shape == (4, 384)
    lut_p, rows_p = region_rows(text_model, names, {17: "the hippocampal formation"})
    assert not np.allclose(rows_p[lut_p[17]], rows[lut[17]])  # the user's words replace the name
    learned = TextSCF(**BACKBONE, embedding="learned",
                      region_names=["background", "hippocampus", "lateral ventricle", "amygdala"])
    lut_l, _ = region_rows(learned, names)
    assert lut_l[17] == lut_l[53] == 1 and lut_l[4] == 2 and lut_l[99] == 0


def test_prompts_file_errors_name_the_line(tmp_path):
    good = tmp_path / "p.csv"
    good.write_text("value,prompt\n17,left hippocampus\n# a comment\n53, right hippocampus, body\n")
    assert read_region_prompts(good, {17, 53}) == {17: "left hippocampus", 53: "right hippocampus, body"}
    bad_json = tmp_path / "p.json"
    bad_json.write_text('{\n "17": "hippocampus",\n "53" "amygdala"\n}')
    with pytest.raises(InputError, match=r"p.json, line 3: not valid JSON"):
        read_region_prompts(bad_json)
    bad_value = tmp_path / "v.csv"
    bad_value.write_text("17,hippocampus\nseventeen,amygdala\n")
    with pytest.raises(InputError, match=r"v.csv, line 2: 'seventeen' is not a label value"):
        read_region_prompts(bad_value)
    unknown = tmp_path / "u.json"
    unknown.write_text('{\n "17": "hippocampus",\n "5": "amygdala"\n}')
    with pytest.raises(InputError, match=r"u.json, line 3: label 5 is not in the moving label map"):
        read_region_prompts(unknown, {17, 53})


def test_training_a_head_from_a_backbone_exports_a_loadable_model(tmp_path):
    from bijros.models.eoir import EOIR

    maps = tmp_path / "maps"
    maps.mkdir()
    for i in range(3):  # values 2, 3: cerebral white matter and cortex
        nib.save(nib.Nifti1Image(blob_labels(i), np.diag([2.0, 2.0, 2.0, 1.0])), maps / f"seg_{i}.nii.gz")
    backbone = EOIR(**BACKBONE)
    torch.nn.init.normal_(backbone.heads[0].out.weight, std=0.01)
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(tmp_path / "b.safetensors"))
    (tmp_path / "b.json").write_text(json.dumps({"name": "b", "file": "b.safetensors", "architecture": "eoir",
                                                 "sha256": sha256_file(tmp_path / "b.safetensors"),
                                                 "config": BACKBONE, "input_spacing_mm": 2.0}))
    cfg = TrainConfig(model="textscf", model_config={**BACKBONE, "embedding": "text"},
                      labelmaps=str(maps / "seg_*.nii.gz"), synth={"crop": [16, 16, 16], "regions": "aseg"}, steps=2,
                      learning_rate=1e-3, checkpoint_every=2, device="cpu", init_from=str(tmp_path / "b.json"))
    train(cfg, tmp_path / "run", progress=False)
    entry = json.loads((tmp_path / "run" / "model.json").read_text())
    assert entry["architecture"] == "textscf" and entry["config"]["region_names"][0] == "background"
    assert "cerebral white matter" in entry["config"]["region_names"]
    model = load_model(tmp_path / "run" / "model.json")
    assert not torch.equal(model.heads[0].out.weight, torch.zeros_like(model.heads[0].out.weight))  # from b.json
    with pytest.raises(InputError, match='needs region maps: set "regions": "aseg"'):
        train(TrainConfig(**{**cfg.__dict__, "synth": {"crop": [16, 16, 16]}, "model_config":
                             {**BACKBONE, "embedding": "text"}, "init_from": None}), tmp_path / "r2", progress=False)


@pytest.fixture()
def brain_with_names(small_brain):
    labels = tissue_labels(small_brain)
    table = LabelTable()
    for value, name in ((1, "CSF"), (2, "Left Cerebral Cortex"), (3, "Left Cerebral White Matter")):
        table.add(value, name)
    return small_brain, Image(labels.array, labels.ijk_to_ras, table, name="tissue")


def test_method_text_and_prompt_through_the_engine(tmp_path, brain_with_names):
    brain, labels = brain_with_names
    model = write_model(tmp_path / "m")
    result = register(brain, brain, labels, RegistrationOptions(method="text", model=str(model)))
    assert result.report["text"]["regions"] == 3 and result.report["text"]["region_model"] == "eoir-synth-2mm"
    assert result.labels is not None and np.isfinite(result.field_ras_mm).all()
    prompted = register(brain, brain, labels, RegistrationOptions(method="io", spacing=2.0, prompt="white matter"))
    assert [lab["value"] for lab in prompted.report["prompt"]["labels"]] == [3]
    assert "prompt" in prompted.report["seconds"]
    with pytest.raises(InputError, match="does not fit method 'text'"):
        register(brain, brain, labels, RegistrationOptions(method="text", model="eoir-synth-2mm"))
    with pytest.raises(InputError, match="needs the moving image's labels"):
        register(brain, brain, None, RegistrationOptions(method="text", model=str(model)))


def test_cli_prompt_and_method_text_end_to_end_and_bad_prompts(tmp_path, small_brain_path, brain_with_names):
    _, labels = brain_with_names
    lab_path = tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(labels.array, labels.ijk_to_ras), lab_path)
    table = tmp_path / "table.csv"
    table.write_text("value,name\n1,CSF\n2,Left Cerebral Cortex\n3,Left Cerebral White Matter\n")
    model = write_model(tmp_path / "m")
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("3,the white matter of the brain\n")
    base = [sys.executable, "-m", "bijros", "register", "--fixed", str(small_brain_path), "--moving",
            str(small_brain_path), "--moving-labels", str(lab_path), "--labels-table", str(table), "--progress",
            "none", "--no-qc"]
    run = subprocess.run([*base, "--method", "text", "--model", str(model), "--prompt", "cortex", "--out",
                          str(tmp_path / "o")], capture_output=True, text=True, env=ENV, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["method"] == "text" and report["text"]["embedding"] == "text"
    assert [lab["name"] for lab in report["prompt"]["labels"]] == ["Left Cerebral Cortex"]
    assert (tmp_path / "o" / "displacement.nii.gz").is_file()

    nothing = subprocess.run([*base, "--prompt", "the left kidney", "--out", str(tmp_path / "n")],
                             capture_output=True, text=True, env=ENV, timeout=120)
    assert nothing.returncode == 2 and "matches no label" in nothing.stderr and "closest label names" in nothing.stderr
    assert not (tmp_path / "n").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("3,white matter\n7,amygdala\n")
    wrong = subprocess.run([*base, "--method", "text", "--model", str(model), "--prompts", str(bad), "--out",
                            str(tmp_path / "w")], capture_output=True, text=True, env=ENV, timeout=120)
    assert wrong.returncode == 2 and "bad.csv, line 2: label 7 is not in the moving label map" in wrong.stderr
    assert not (tmp_path / "w").exists()
    fine = subprocess.run([*base, "--method", "text", "--model", str(model), "--prompts", str(prompts), "--out",
                           str(tmp_path / "p")], capture_output=True, text=True, env=ENV, timeout=300)
    assert fine.returncode == 0, fine.stderr
    assert json.loads((tmp_path / "p" / "report.json").read_text())["text"]["prompts"] == {
        "3": "the white matter of the brain"}
