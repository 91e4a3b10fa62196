"""The toy world and its tiny models: offline demos and ranking-quality tests.

- :mod:`searchengine.toy.world` generates captioned synthetic photos (shapes, colours,
  positions, with exact object boxes), deterministically from a seed.
- ``searchengine/toy/assets/<name>/`` holds the tiny models trained on it (``toy``,
  ``toy-large``), in the hub's open_clip layout, loaded like any other model.
- :mod:`searchengine.toy.demo` is ``searchengine demo``.
"""
