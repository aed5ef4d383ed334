"""Helpers shared by the tests: tiny-model factories, independent references, compile counter."""
