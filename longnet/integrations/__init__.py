"""Dilated attention inside other libraries' models (each submodule needs its library installed)."""
