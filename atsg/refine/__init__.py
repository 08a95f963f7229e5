"""Pseudo-label refinement: PAR, affinity random walk, mask voting, and the stage that chains them."""
