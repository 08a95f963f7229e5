"""Loss functions (plain functions on tensors)."""
