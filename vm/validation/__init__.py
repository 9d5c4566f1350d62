"""Validation (spec chapter 3): ``validate_module`` accepts a decoded module or raises
InvalidError, and records the operand stack heights that execution relies on."""

from vm.validation.validator import validate_module

__all__ = ["validate_module"]
