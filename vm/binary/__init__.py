"""The binary format (spec chapter 5): bytes to :class:`vm.structure.Module`."""

from vm.binary.decoder import decode_module

__all__ = ["decode_module"]
