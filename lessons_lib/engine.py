"""The engine interface: the three things the scorer needs from any model, whoever decodes it.

    context_length             how many tokens prompt + answer may hold
    encode_question(question)  the token ids the model is given for one question (its prompt format)
    generate(prompts, ...)     greedy answers to a batch of prompts, as `Generation`s

`scoring.gsm8k_accuracy` is written against these three only, so one function scores every kind of
model: a course checkpoint or the Llama-family model decoded by the course's `batched_generate`
(`CourseEngine`), or a Hugging Face model decoded by transformers' `generate` (`hf_model.HFModel`).
Each engine also carries `meta` (a course checkpoint's stage and parent; empty elsewhere).
"""
from abc import ABC, abstractmethod
from dataclasses import dataclass

from .generation import Generation, batched_generate


class Engine(ABC):
    """What every model kind implements for the scorer (see the module docstring)."""
    meta: dict  # a course checkpoint's meta (stage, parent, ...); {} for a model from elsewhere

    @property
    @abstractmethod
    def context_length(self) -> int: ...

    @abstractmethod
    def encode_question(self, question: str) -> list[int]: ...

    @abstractmethod
    def generate(self, prompts, max_new_tokens=256, device=None, greedy=True, batch_size=64, strategy=None,
                 progress=True) -> list[Generation]: ...


@dataclass
class CourseEngine(Engine):
    """A model the course's own engine decodes (the course GPT, the Llama-family model): its
    `tokenizer` writes the prompt, `batched_generate` decodes."""
    model: object

    @property
    def context_length(self) -> int:
        return self.model.config.max_seq_len

    @property
    def meta(self) -> dict:
        return self.model.meta

    def encode_question(self, question: str) -> list[int]:
        return self.model.tokenizer.encode_question(question)

    def generate(self, prompts, max_new_tokens=256, device=None, greedy=True, batch_size=64, strategy=None,
                 progress=True) -> list[Generation]:
        return batched_generate(self.model, prompts, max_new_tokens, device=device, greedy=greedy,
                                batch_size=batch_size, strategy=strategy, return_details=True, progress=progress)


def as_engine(model) -> Engine:
    """An engine for `model`: itself when it is one, else the course's engine around it (a bare course
    model, as training holds it and `load_checkpoint` returns it)."""
    return model if isinstance(model, Engine) else CourseEngine(model)
