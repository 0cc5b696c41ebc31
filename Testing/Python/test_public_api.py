"""Every public entry point keeps working after the move to one subpackage per capability:
the console API on ``bijros`` (lazy: importing it loads no torch), each documented module path,
and each CLI subcommand (the heavy ones run end to end in test_cli.py / test_learned.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bijros import cli


def test_import_bijros_loads_no_torch():
    code = ("import sys, bijros, bijros.io, bijros.metrics, bijros.atlas.library, bijros.models.library,"
            " bijros.registration.methods, bijros.cli; assert 'torch' not in sys.modules, 'torch was imported';"
            " assert bijros.register.__module__ == 'bijros.registration.pipeline'; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_console_api_propagates_and_writes(small_brain, tmp_path):
    import bijros

    labels = bijros.Image((small_brain.array > np.percentile(small_brain.array, 60)).astype(np.int16),
                          small_brain.ijk_to_ras.copy(), name="labels")
    result = bijros.propagate(small_brain, labels, small_brain,
                              bijros.RegistrationOptions(method="affine", preset="fast", spacing=4.0, device="cpu"))
    assert isinstance(result, bijros.RegistrationResult)
    written = bijros.write_outputs(result, tmp_path / "out")
    assert {"displacement.nii.gz", "affine.tfm", "labels.nii.gz", "report.json"} <= set(written)
    again = bijros.load_image(tmp_path / "out" / "labels.nii.gz", label_map=True)
    assert again.shape == small_brain.shape
    scores = bijros.evaluate_labels(again.array, labels.array, labels.spacing, (0,), with_hd95=False)
    assert scores["mean_dice"] > 0.95


@pytest.mark.parametrize("module, names", [
    ("bijros.io", ["load_image", "save_image", "read_label_table", "write_label_table", "Image", "LabelTable"]),
    ("bijros.io.outputs", ["write_outputs", "check_out_dir", "OUTPUT_FILES"]),
    ("bijros.registration.pipeline", ["register", "propagate", "RegistrationOptions", "check_mask"]),
    ("bijros.registration.methods", ["METHOD_NAMES", "DEFAULT_METHOD", "method_info"]),
    ("bijros.registration.learned", ["get_model", "learned_register"]),
    ("bijros.registration.deformable", ["deformable_register", "DeformableOptions"]),
    ("bijros.registration.affine", ["affine_register", "AffineOptions"]),
    ("bijros.models", ["build_model", "count_parameters", "MODELS"]),
    ("bijros.models.library", ["models_dir", "load_catalog", "list_models", "resolve_entry", "publish_model"]),
    ("bijros.models.weights", ["load_model", "read_entry", "sha256_file"]),
    ("bijros.training.trainer", ["TrainConfig", "train"]),
    ("bijros.training.losses", ["registration_loss", "soft_dice_loss", "one_hot_labels"]),
    ("bijros.training.synth", ["SynthGenerator", "SynthOptions", "load_label_maps"]),
    ("bijros.atlas.library", ["list_atlases", "get_atlas", "catalog_atlases", "default_atlas", "demo_target"]),
    ("bijros.atlas.mirror", ["with_mirrored", "lateral_pairs", "mirrored"]),
    ("bijros.atlas.describe", ["describe_library"]),
    ("bijros.text.match", ["match_prompt"]),
    ("bijros.text.encoder", ["Embeddings", "encode", "load_table"]),
    ("bijros.text.regions", ["region_table", "region_text", "background_row"]),
    ("bijros.models.textscf", ["TextSCF"]),
    ("bijros.registration.text", ["text_register", "region_rows", "read_region_prompts"]),
    ("bijros.registration.prompted", ["PromptOptions", "prompt_values", "refine"]),
])
def test_documented_module_paths(module, names):
    import importlib

    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{module} lost {missing}"


def test_every_subcommand_is_registered():
    parser = cli.build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices
    assert set(choices) == {"register", "propagate", "evaluate", "atlases", "atlas", "models", "demo",
                            "train-registration", "publish-model", "prompt-match", "fewshot", "train-fewshot",
                            "train-oneshot", "segment", "batch"}


def test_models_and_atlases_subcommands(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "eoir-synth-2mm (default)" in out
    assert cli.main(["atlases"]) == 0
    out = capsys.readouterr().out
    assert "mni152-desikan-killiany" in out and "mni152-aal" in out
