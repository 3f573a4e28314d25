"""LongNet reproduction suite: dilated attention and everything needed to test its claims."""
from .dilated_attention import dilated_attention, dilated_attention_decode
from .kv_cache import DilatedKVCache, RowCache
from .multihead import MultiheadAttention, MultiheadDilatedAttention
from .schedule import DilatedSchedule

__all__ = ["dilated_attention", "dilated_attention_decode", "DilatedKVCache",
           "RowCache", "MultiheadAttention", "MultiheadDilatedAttention", "DilatedSchedule"]
