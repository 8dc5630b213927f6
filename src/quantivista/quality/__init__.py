"""Data quality: rules, validation and reports."""

from quantivista.quality.rules import DEFAULT_RULES, ROW_RULES, Rule
from quantivista.quality.validate import ValidationResult, Validator, profile

__all__ = ["DEFAULT_RULES", "ROW_RULES", "Rule", "ValidationResult", "Validator", "profile"]
