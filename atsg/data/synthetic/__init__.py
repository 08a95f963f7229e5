"""Procedural aerial scenes in the Potsdam style: the demo dataset (drawn by `atsg synth`, atsg/stages/synth.py)."""
