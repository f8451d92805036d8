"""Reference PyTorch + Triton MoSKA decoder and trace capture (needs the `reference` extra: torch, triton).

Importing this package does not import torch; the submodules do. Entry point for the CLI:
``traces.capture.cli.main(argv) -> int`` (also ``python -m traces.capture``).
"""
