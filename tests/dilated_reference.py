"""The float64 reference the tests check against; it lives in the library (longnet.reference) so
that benchmarks/peers.py can measure other implementations with the same definition."""
from longnet.reference import reference_dilated_attention

__all__ = ["reference_dilated_attention"]
