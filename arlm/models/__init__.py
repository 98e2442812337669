"""Model families on one contract (see base.py)."""

from .base import LanguageModel
from .registry import FAMILIES, get_family

__all__ = ["LanguageModel", "FAMILIES", "get_family"]
