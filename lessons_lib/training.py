"""Shared pieces of the training stages: configs, batches, log-probs, evaluation, saving.

Every stage module (`train_base`, `train_sft`, `train_reward_model`, `train_dpo`, `train_ppo`,
`train_grpo`) is a config dataclass whose defaults are the shipped recipe (`config.py`), a
`train(cfg, out_dir)` function, and a command line built from the config; `pipeline.py` calls them
in the order of the stage registry (`stages.py`). What they share lives here, so each stage file
reads as just its own algorithm.
"""
import argparse
import math
import random
import time
from dataclasses import fields
from pathlib import Path

import torch
import torch.nn.functional as F

from lessons_lib.calculator import calculator_forced_byte_mask
from lessons_lib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from lessons_lib.cli import ArgumentParser, UsageError, check_writable, cli_errors, positive_int
from lessons_lib.config import StageConfig
from lessons_lib.data import load_qa_pairs, solution_with_answer_tag
from lessons_lib.losses import masked_mean, token_logprobs
from lessons_lib.metrics import MetricsLogger
from lessons_lib.model import GPT, GPTConfig
from lessons_lib.tokenizer import PAD, encode_conversation, encode_prompt


# ---------------------------------------------------------------- configs and CLIs

def parse_bool(text: str) -> bool:
    """A command-line boolean: true/1/yes or false/0/no (any case); anything else is refused."""
    if text.lower() not in {"1", "true", "yes", "0", "false", "no"}:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in {"1", "true", "yes"}


def add_config_args(parser: argparse.ArgumentParser, config: StageConfig) -> argparse.ArgumentParser:
    """One --flag per config field, typed from its declaration, defaulting to `config`'s value."""
    for f in fields(config):
        kind = f.type if isinstance(f.type, type) else type(f.default)
        parser.add_argument(f"--{f.name}", type=parse_bool if kind is bool else kind, default=getattr(config, f.name),
                            metavar="true|false" if kind is bool else None, help=f.metadata.get("help") or None)
    return parser


INPUT_FILES = ("init", "pairs", "reward_model")  # fields naming a file an earlier stage wrote


def check_stage_config(cfg: StageConfig, out) -> None:
    """Refuse (UsageError) a stage config that cannot train, before anything is loaded: every field
    within its declared bounds (`StageConfig.problems`), input files present, `out` writable."""
    cfg.validate()
    for key in INPUT_FILES:
        path = getattr(cfg, key, "")
        if path and not Path(path).is_file():
            raise UsageError(f"--{key} {path}: no such file (train the earlier stages first: `make checkpoints`)")
    check_writable(Path(out) / "logs" / "stage.jsonl", "--out")


def stage_cli(config: StageConfig, train_fn, doc: str, presets=None):
    """The command line every stage shares: one flag per config field (defaults: `config`, the
    shipped recipe), --out (checkpoint folder), --threads, --use_wandb. `presets` maps a --stage name
    to a function giving that stage's recipe (a stage trained by the same module, e.g. ppo_rm)."""
    name = type(config).__name__.removesuffix("Config").lower()
    parser = ArgumentParser(prog=f"python -m {train_fn.__module__}", description=doc)
    parser.add_argument("--out", default="checkpoints", help="folder for the .pt and logs/<stage>.jsonl")
    parser.add_argument("--threads", type=positive_int, default=1, help="CPU threads (a model this small: 1 is ~as fast as 2)")
    parser.add_argument("--use_wandb", type=parse_bool, default=False, metavar="true|false",
                        help="also mirror the metrics to Weights & Biases (offline unless WANDB_MODE says "
                             "otherwise); the JSONL log is always written")
    stage, init = _preset_stage(config, presets)
    if stage is not None:
        try:  # that stage's shipped recipe (it may read the checkpoint it starts from)
            config = presets[stage](**({"init": init} if init else {}))
        except UsageError as e:
            parser.error(str(e))
    add_config_args(parser, config)
    args = vars(parser.parse_args())
    out, threads, use_wandb = Path(args.pop("out")), args.pop("threads"), args.pop("use_wandb")
    try:
        cfg = type(config)(**args)
        check_stage_config(cfg, out)
    except UsageError as e:
        parser.error(str(e))  # one line, exit status 2, nothing loaded yet
    torch.set_num_threads(threads)
    with cli_errors(CheckpointError):
        summary = train_fn(cfg, out, use_wandb=use_wandb)
    print({k: v for k, v in summary.items() if not isinstance(v, (list, dict))}, f"({name})")


def _preset_stage(config, presets) -> tuple[str | None, str | None]:
    """(--stage, --init) from the command line when --stage names a preset (read before the other
    flags, whose defaults it sets), else (None, None)."""
    if not presets:
        return None, None
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("--stage", default=getattr(config, "stage", None))
    probe.add_argument("--init", default=None)
    known, _ = probe.parse_known_args()
    return (known.stage, known.init) if known.stage in presets else (None, None)


def seed_everything(seed: int):
    random.seed(seed)
    torch.manual_seed(seed)


def new_model(cfg) -> GPT:
    """A fresh GPT with the dims in cfg (the checkpoint stores them, loaders read them back)."""
    model = GPT(GPTConfig(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, max_seq_len=cfg.max_seq_len))
    model.calculator = True  # the course models always write arithmetic through the calculator
    return model


def load_trainable(path) -> GPT:
    """A checkpoint on CPU in train mode (training here is CPU; load_checkpoint picks the device)."""
    model = load_checkpoint(path, device="cpu")
    model.train()
    return model


def save_stage(out_dir, stage: str, model: GPT, parent: str | None, training: dict) -> Path:
    """checkpoints/<stage>.pt with the meta every stage carries (`checkpoint.py` describes the format):
    its stage name, the calculator flag, the checkpoint it started from and its training config."""
    meta = {"stage": stage, "calculator": True, "parent": parent, "training": training}
    model.meta = meta
    return save_checkpoint(Path(out_dir) / f"{stage}.pt", model, meta)


def stage_logger(out_dir, stage: str, cfg: StageConfig, use_wandb: bool = False) -> MetricsLogger:
    """logs/<stage>.jsonl next to the checkpoint, mirrored to W&B when `use_wandb` (a flag of the
    run, not of the recipe: it is never stored in the checkpoint's config)."""
    return MetricsLogger(Path(out_dir) / "logs" / f"{stage}.jsonl", use_wandb=use_wandb, run_name=stage,
                         config=cfg.to_dict())


class Timer:
    def __init__(self):
        self.start = time.time()

    @property
    def seconds(self) -> float:
        return round(time.time() - self.start, 1)


def lr_at(step: int, *, lr: float, warmup: int, decay_end: int, floor: float) -> float:
    """The learning rate of optimizer step `step` (counted from 1), for base and SFT alike: linear
    warmup to `lr` at step `warmup` (lr / warmup on the first step, never 0), then cosine decay to
    `floor * lr` at step `decay_end`, flat after it. Ending the decay before the step budget lets a
    run sit at a low rate where the dev loss can settle (SFT), or anneal to the end (base)."""
    if step < warmup:
        return lr * step / warmup
    progress = min(1.0, (step - warmup) / max(1, decay_end - warmup))
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


# ---------------------------------------------------------------- supervised batches

def sft_target(answer_field: str) -> str:
    """GSM8K answer field -> the assistant's reply: worked steps ending with <answer>N</answer>."""
    return solution_with_answer_tag(answer_field)


def user_prompt(question: str) -> list[int]:
    """The prompt the model sees at scoring time (the same chat template everywhere)."""
    return encode_prompt([{"role": "user", "content": question}])


def sft_example(question: str, answer_field: str) -> tuple[list[int], list[int]]:
    """Chat ids and loss mask: loss on the reply and its EOT only, and none on the characters the
    calculator forces (`24>>` after `<<48/2=`): the model never has to produce those itself."""
    reply = sft_target(answer_field)
    ids, mask = encode_conversation([{"role": "user", "content": question},
                                     {"role": "assistant", "content": reply}])
    forced = calculator_forced_byte_mask(reply)
    start = len(ids) - 1 - len(forced)  # reply bytes sit just before the final EOT
    for i, f in enumerate(forced):
        if f:
            mask[start + i] = 0
    return ids, mask


def collate(seqs: list[list[int]], masks: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to (B, T). Padding sits after each sequence, so causal attention never lets a
    real token see it and positions need no offset; the mask is 0 there."""
    T = max(len(s) for s in seqs)
    idx = torch.full((len(seqs), T), PAD, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.float32)
    for r, (s, m) in enumerate(zip(seqs, masks)):
        idx[r, :len(s)] = torch.tensor(s)
        mask[r, :len(m)] = torch.tensor(m, dtype=torch.float32)
    return idx, mask


def lm_loss(model, idx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, averaged over target tokens where mask is 1."""
    logits = model(idx[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1), reduction="none")
    return masked_mean(loss.view(idx.shape[0], -1), mask[:, 1:])


@torch.no_grad()
def dataset_loss(model, examples, batch_size: int = 32) -> float:
    """Mean masked loss over a list of (ids, mask) examples (e.g. the dev split)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0.0
    for s in range(0, len(examples), batch_size):
        idx, mask = collate(*zip(*examples[s:s + batch_size]))
        n = mask[:, 1:].sum().item()
        total += lm_loss(model, idx, mask).item() * n
        count += n
    model.train(was_training)
    return total / max(count, 1.0)


def cycle_batches(examples, batch_size: int, rng: random.Random):
    """Endless shuffled epochs over a fixed pool, `batch_size` items at a time (SFT examples, RL
    prompts); the last incomplete batch of an epoch is dropped, so every batch has the same size."""
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for s in range(0, len(order) - batch_size + 1, batch_size):
            yield [examples[i] for i in order[s:s + batch_size]]


# ---------------------------------------------------------------- RL batches

def rollout_batch(prompts: list[list[int]], generations):
    """prompt + generated tokens as one right-padded (B, T) batch, plus two masks:
    `policy`: 1 on tokens the model chose (0 on prompt, padding and calculator-forced tokens,
    which were not the policy's choice and get no loss); `response`: 1 on every generated token
    (the contiguous span PPO's critic and GAE run over)."""
    seqs = [p + g.token_ids for p, g in zip(prompts, generations)]
    policy = [[0] * len(p) + [0 if f else 1 for f in g.forced] for p, g in zip(prompts, generations)]
    idx, policy_mask = collate(seqs, policy)
    _, response_mask = collate(seqs, [[0] * len(p) + [1] * len(g.token_ids) for p, g in zip(prompts, generations)])
    return idx, policy_mask, response_mask


def sequence_logprobs(model, idx, temperature: float = 1.0, return_hidden: bool = False, return_entropy: bool = False):
    """(B, T) ids -> (B, T-1) log p(idx[:, t+1] | idx[:, :t+1]) [, hidden states (B, T-1, C)] [, entropy (B, T-1)].
    Position t of the output scores token t+1, so masks are shifted the same way: mask[:, 1:].

    `temperature`: the log-probs of the distribution softmax(logits / T). An RL trainer passes the
    temperature its rollouts were *sampled* at, for the old, new and reference log-probs alike, so the
    importance ratio and the KL are taken against the policy that produced the samples (as TRL and
    verl do); at T = 1 they would describe a different, flatter or sharper, policy. `return_entropy`
    adds the entropy of that same distribution at every position (how sure the policy is)."""
    logits, hidden = model(idx[:, :-1], return_hidden=True)
    logits = logits.float() / temperature if temperature != 1.0 else logits.float()
    out = [token_logprobs(logits, idx[:, 1:])]
    if return_hidden:
        out.append(hidden)
    if return_entropy:
        logp_all = torch.log_softmax(logits, dim=-1)
        out.append(-(logp_all.exp() * logp_all).sum(dim=-1))
    return out[0] if len(out) == 1 else tuple(out)


def sample_responses(model, prompts, max_new_tokens: int, temperature: float, generator: torch.Generator):
    """One sampled response per prompt, with details (token ids, which were forced, finished, the
    sampler's log-probs), with the calculator, as at test time."""
    from lessons_lib.generation import batched_generate
    return batched_generate(model, prompts, max_new_tokens=max_new_tokens, greedy=False, temperature=temperature,
                            generator=generator, return_details=True, batch_size=64, progress=False)


UNFINISHED_REWARD = 0.0  # what a rollout that ran out of tokens earns, whatever it says (see `rollout_reward`)


def rollout_reward(generation, gold: str) -> float:
    """The RL reward of one sampled answer: `reward_gsm8k` (1.0 right + 0.2 well-formed) if the answer
    finished (emitted end-of-turn), else UNFINISHED_REWARD = 0, no credit.

    Why: an answer cut off at the token budget may still end with the right number (the tolerant
    checker reads the last number), and rewarding it teaches the policy that rambling until the budget
    runs out is as good as answering (TRL's `missing_eos_penalty` exists for the same reason). The
    stage table is a different matter: it scores what the model wrote, cut off or not, with the
    seed's tolerant checker, and reports how many of its right answers were cut off."""
    from rewards import reward_gsm8k
    return reward_gsm8k(generation.text, gold) if generation.finished else UNFINISHED_REWARD


def minibatch_schedule(n: int, minibatches: int, epochs: int, generator: torch.Generator):
    """The (epoch, row indices) of every optimizer step over one batch of n rollouts: `epochs` passes,
    each a fresh seeded shuffle cut into `minibatches` parts. Only the very first minibatch sees the
    policy that sampled the batch (ratio exactly 1); every later one sees a policy that has moved,
    which is what PPO's clip is for (Schulman et al. 2017, Algorithm 1: K epochs, minibatch size M <= NT)."""
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        for mb in order.chunk(minibatches):
            yield epoch, mb.sort().values  # sorted: rows keep their order inside a minibatch


# ---------------------------------------------------------------- evaluation

def evaluate(model, qa_pairs, max_new_tokens: int = 256) -> float:
    """Greedy accuracy with the repo's scorer (the same function the stage table uses)."""
    from lessons_lib.scoring import gsm8k_accuracy
    acc, _ = gsm8k_accuracy(model, qa_pairs, max_new_tokens=max_new_tokens, greedy=True, progress=False)
    return acc


def synthetic_pairs(split: str, limit: int | None = None, offset: int = 0) -> list[tuple[str, str]]:
    """Synthetic (question, answer) pairs from the course's loader; `offset` skips the first ones
    (stages draw disjoint slices of the train split: SFT pool, RL prompts, preference prompts)."""
    pairs = load_qa_pairs("synthetic", split, limit=None if limit is None else offset + limit)
    return pairs[offset:]
