"""Procedural aerial scenes in the Potsdam style: the demo dataset (`atsg synth`)."""

from .writer import SCENE_PATTERN, run_synth

__all__ = ["SCENE_PATTERN", "run_synth"]
