"""Text prompts: label names and a clinician's words as embeddings (offline), and which labels a prompt names.

* :mod:`.names` -- a label name -> its side and the descriptions that are embedded for it;
* :mod:`.encoder` -- the offline sentence-embedding model (an optional extra) and the precomputed tables;
* :mod:`.match` -- ``bijros prompt-match``: the labels a prompt refers to, with scores.
"""
