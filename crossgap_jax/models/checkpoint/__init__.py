"""Checkpoint I/O for every family: hub and URL fetching, file formats, the native format,
the one fit check, content fingerprints, errors and the one loading pipeline (:mod:`.loader`).
"""
