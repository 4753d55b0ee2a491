"""Shared pieces of the training stages: configs, batches, log-probs, evaluation, saving.

Every stage module (`train_base`, `train_sft`, `train_reward_model`, `train_dpo`, `train_ppo`,
`train_grpo`) is a `train(cfg, out_dir)` function plus an argparse CLI built from its `DEFAULTS`
dict; `pipeline.py` calls them in order. What they share lives here, so each stage file reads as
just its own algorithm.
"""
import argparse
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lessons_lib.calculator import calculator_forced_byte_mask
from lessons_lib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from lessons_lib.cli import ArgumentParser, UsageError, check_writable, cli_errors, positive_int
from lessons_lib.data import load_qa_pairs, solution_with_answer_tag
from lessons_lib.losses import masked_mean, token_logprobs
from lessons_lib.metrics import MetricsLogger
from lessons_lib.model import GPT, GPTConfig
from lessons_lib.synthetic import TEACHERS
from lessons_lib.tokenizer import PAD, encode_conversation, encode_prompt


# ---------------------------------------------------------------- configs and CLIs

def parse_bool(text: str) -> bool:
    """A command-line boolean: true/1/yes or false/0/no (any case); anything else is refused."""
    if text.lower() not in {"1", "true", "yes", "0", "false", "no"}:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in {"1", "true", "yes"}


def add_config_args(parser: argparse.ArgumentParser, defaults: dict) -> argparse.ArgumentParser:
    """One --flag per config key, typed from its default (bools accept true/false)."""
    for key, value in defaults.items():
        kind = type(value)
        if kind is bool:
            parser.add_argument(f"--{key}", type=parse_bool, default=value)
        else:
            parser.add_argument(f"--{key}", type=kind if value is not None else str, default=value)
    return parser


_MAY_BE_ZERO = ("seed", "warmup", "offset", "coef", "gamma", "lam", "frac")  # name parts: 0 makes sense


def validate_stage_args(args: dict) -> None:
    """Refuse (UsageError) a stage config that cannot train, before anything is loaded: counts and
    sizes >= 1 (seeds, offsets, warmup >= 0), rates and temperatures > 0, coefficients >= 0,
    fractions <= 1, n_head dividing n_embd, input files present, --out writable."""
    for key, value in args.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        zero_ok = any(part in key for part in _MAY_BE_ZERO)
        if isinstance(value, int) and value < (0 if zero_ok else 1):
            raise UsageError(f"--{key} {value}: must be >= {0 if zero_ok else 1}")
        if isinstance(value, float) and not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
            raise UsageError(f"--{key} {value}: must be a finite number {'>= 0' if zero_ok else '> 0'}")
        if key.endswith("frac") and value > 1:
            raise UsageError(f"--{key} {value}: a fraction, between 0 and 1")
    if args.get("teacher", "flawed") not in TEACHERS:
        raise UsageError(f"--teacher {args['teacher']}: use one of {', '.join(TEACHERS)}")
    if "n_embd" in args and "n_head" in args and args["n_embd"] % args["n_head"]:
        raise UsageError(f"--n_head {args['n_head']} must divide --n_embd {args['n_embd']}")
    for key in ("init", "pairs"):  # files written by an earlier stage
        if args.get(key) and not Path(args[key]).is_file():
            raise UsageError(f"--{key} {args[key]}: no such file (train the earlier stages first: `make checkpoints`)")
    check_writable(Path(args["out"]) / "logs" / "stage.jsonl", "--out")


def stage_cli(name: str, defaults: dict, train_fn, doc: str):
    """The CLI every stage shares: its config flags, --out (checkpoint folder), --threads, --use_wandb."""
    parser = ArgumentParser(prog=f"python -m lessons_lib.train_{name}", description=doc)
    parser.add_argument("--out", default="checkpoints", help="folder for the .pt and logs/<stage>.jsonl")
    parser.add_argument("--threads", type=positive_int, default=1, help="CPU threads (a model this small: 1 is ~as fast as 2)")
    parser.add_argument("--use_wandb", type=parse_bool, default=False, metavar="true|false",
                        help="also mirror the metrics to Weights & Biases (offline unless WANDB_MODE says "
                             "otherwise); the JSONL log is always written")
    add_config_args(parser, defaults)
    args = vars(parser.parse_args())
    try:
        validate_stage_args(args)
    except UsageError as e:
        parser.error(str(e))  # one line, exit status 2, nothing loaded yet
    out = Path(args.pop("out"))
    torch.set_num_threads(args.pop("threads"))
    with cli_errors(CheckpointError):
        summary = train_fn(args, out)
    print({k: v for k, v in summary.items() if not isinstance(v, (list, dict))})


def seed_everything(seed: int):
    random.seed(seed)
    torch.manual_seed(seed)


def new_model(cfg: dict) -> GPT:
    """A fresh GPT with the dims in cfg (the checkpoint stores them, loaders read them back)."""
    model = GPT(GPTConfig(n_layer=cfg["n_layer"], n_head=cfg["n_head"], n_embd=cfg["n_embd"],
                          max_seq_len=cfg["max_seq_len"]))
    model.calculator = True  # the course models always write arithmetic through the calculator
    return model


def load_trainable(path) -> GPT:
    """A checkpoint on CPU in train mode (training here is CPU; load_checkpoint picks the device)."""
    model = load_checkpoint(path, device="cpu")
    model.train()
    return model


def save_stage(out_dir, stage: str, model: GPT, parent: str | None, training: dict) -> Path:
    """checkpoints/<stage>.pt with the meta every stage carries (see SPEC: Checkpoints)."""
    training = {k: v for k, v in training.items() if k != "use_wandb"}  # how it was watched, not trained
    meta = {"stage": stage, "calculator": True, "parent": parent, "training": training}
    model.meta = meta
    return save_checkpoint(Path(out_dir) / f"{stage}.pt", model, meta)


def stage_logger(out_dir, stage: str, cfg: dict) -> MetricsLogger:
    """logs/<stage>.jsonl next to the checkpoint, mirrored to W&B when cfg["use_wandb"] is true
    (a flag of the run, not of the recipe: it is never stored in the checkpoint's config)."""
    return MetricsLogger(Path(out_dir) / "logs" / f"{stage}.jsonl", use_wandb=bool(cfg.get("use_wandb")),
                         run_name=stage, config={k: v for k, v in cfg.items() if k != "use_wandb"})


class Timer:
    def __init__(self):
        self.start = time.time()

    @property
    def seconds(self) -> float:
        return round(time.time() - self.start, 1)


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
    """Endless shuffled epochs over a fixed pool of examples."""
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


def sequence_logprobs(model, idx, return_hidden: bool = False):
    """(B, T) ids -> (B, T-1) log p(idx[:, t+1] | idx[:, :t+1]) [and hidden states (B, T-1, C)].
    Position t of the output scores token t+1, so masks are shifted the same way: mask[:, 1:]."""
    logits, hidden = model(idx[:, :-1], return_hidden=True)
    logp = token_logprobs(logits, idx[:, 1:])
    return (logp, hidden) if return_hidden else logp


def sample(model, prompts, cfg: dict, generator: torch.Generator):
    """One sampled response per prompt, with details (token ids, which were forced, finished)."""
    from lessons_lib.generation import batched_generate
    return batched_generate(model, prompts, max_new_tokens=cfg["max_new_tokens"], greedy=False,
                            temperature=cfg["temperature"], generator=generator, return_details=True,
                            batch_size=64, progress=False)


def prompt_stream(pairs, n_per_step: int, seed: int):
    """Endless shuffled epochs over RL prompts, `n_per_step` (question, answer) pairs at a time."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(pairs)))
        rng.shuffle(order)
        for s in range(0, len(order) - n_per_step + 1, n_per_step):
            yield [pairs[i] for i in order[s:s + n_per_step]]


# ---------------------------------------------------------------- evaluation

def evaluate(model, qa_pairs, max_new_tokens: int = 256) -> float:
    """Greedy accuracy with the repo's scorer (the same function the stage table uses)."""
    from lessons_lib.scoring import gsm8k_accuracy
    acc, _ = gsm8k_accuracy(model, qa_pairs, max_new_tokens=max_new_tokens, greedy=True, progress=False)
    return acc


def qa(split: str, limit: int | None = None, offset: int = 0) -> list[tuple[str, str]]:
    """Synthetic (question, answer) pairs from the course's loader; `offset` skips the first ones
    (stages draw disjoint slices of the train split: SFT pool, RL prompts, preference prompts)."""
    pairs = load_qa_pairs("synthetic", split, limit=None if limit is None else offset + limit)
    return pairs[offset:]
