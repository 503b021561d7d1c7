"""Preparing and caching: the model catalog, model resolution and shared inputs, the artifact cache, the embedded
image model's scenes, the server-made broken exports.
"""
