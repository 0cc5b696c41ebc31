"""Atlases: the one atlas catalog (``bijros/data/atlases.json``) and its files.

* :mod:`.library` -- list and resolve the catalog's atlases (files inside installed pip packages)
"""
