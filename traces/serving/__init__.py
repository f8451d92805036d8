"""A real MoSKA serving loop (continuous batching of decode steps over a shared corpus KV held once)
for end-to-end validation of the simulator. ``records`` (the measurement file format) is numpy-only;
``engine``, ``shared_side``, ``loop`` and ``cli`` need the ``reference`` extra (torch, triton).
See docs/validation.md."""
