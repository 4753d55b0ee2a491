"""notebooks/solutions/: the exercise solutions agree with the library, as the notebooks' check cells demand."""
import importlib.util
from pathlib import Path

import torch

from lessons_lib.data import load_qa_pairs
from lessons_lib.generation import _left_pad
from lessons_lib.hf_model import fewshot_examples, fewshot_prompt, left_pad

SOLUTIONS = Path(__file__).resolve().parent.parent / "notebooks" / "solutions"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, SOLUTIONS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_08_left_pad_matches_the_library():
    solution = _load("score_a_real_model")
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        prompts = [torch.randint(0, 5, (int(n),), generator=g).tolist() for n in torch.randint(1, 9, (4,), generator=g)]
        ids, mask, positions = solution.my_left_pad(prompts, pad_id=0)  # pad id 0 also occurs inside prompts
        ref_ids, ref_mask = left_pad(prompts, 0)
        _, _, course_positions = _left_pad(prompts, "cpu")
        real = ref_mask.bool()
        assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask)
        assert torch.equal(positions[real], course_positions[real])


def test_08_fewshot_prompt_matches_the_library():
    solution = _load("score_a_real_model")
    question = load_qa_pairs("gsm8k", "test", limit=1)[0][0]
    for k in (0, 1, 5):
        assert solution.my_fewshot_prompt(question, fewshot_examples(k)) == fewshot_prompt(question, fewshot_examples(k))
