"""rewards: the verifiable GSM8K reward — find the model's final number and compare it to the gold.

Read `rewards/gsm8k.py` top to bottom: its docstring states the whole extraction policy.
"""
from rewards.gsm8k import (
    _answers_match,
    extract_answer,
    find_numbers,
    gsm8k_gold_answer,
    has_well_formed_answer,
    is_correct,
    parse_number,
    reward_gsm8k,
    reward_gsm8k_strict,
)

__all__ = [
    "_answers_match", "extract_answer", "find_numbers", "gsm8k_gold_answer", "has_well_formed_answer",
    "is_correct", "parse_number", "reward_gsm8k", "reward_gsm8k_strict",
]
