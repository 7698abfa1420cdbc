"""Model code: the branches, their fusion and evaluation."""
