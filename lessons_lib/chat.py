"""Talk to any checkpoint: ask a question, see the answer, the number the checker extracts, the reward.

    python -m lessons_lib.chat --ckpt checkpoints/grpo.pt --question "Tom has 3 apples ..." --gold 7
    python -m lessons_lib.chat --ckpt checkpoints/sft.pt          # interactive: one question per line

The question is wrapped in the same chat template the model was trained and scored with
(`encode_prompt`), decoded greedily by default (the scorer's setting), and the response is run
through the verifier: `extract_answer` shows which number would be graded, and with a gold answer
you also get `is_correct` and `reward_gsm8k` — exactly what the stage table and RL see.

Bad arguments are refused before the checkpoint loads; in the interactive session a question too
long for the model's context is reported and the session goes on; Ctrl-C or end of input ends it.
"""

import sys
from pathlib import Path

import torch

from rewards import extract_answer, is_correct, reward_gsm8k

from lessons_lib.checkpoint import CheckpointError, load_checkpoint
from lessons_lib.cli import ArgumentParser, UsageError, check_device, cli_errors, positive_int
from lessons_lib.generation import batched_generate
from lessons_lib.tokenizer import encode_prompt


def ask(model, question, gold=None, max_new_tokens=256, greedy=True, temperature=1.0, seed=0,
        device=None) -> dict:
    """One question -> {"question", "response", "extracted", "finished", "n_tokens"} plus
    {"gold", "correct", "reward"} when `gold` (a number string like "18") is given."""
    prompt = encode_prompt([{"role": "user", "content": question}])
    generator = None if greedy else torch.Generator().manual_seed(seed)  # reproducible sampling
    [gen] = batched_generate(model, [prompt], max_new_tokens=max_new_tokens, device=device, greedy=greedy,
                             temperature=temperature, generator=generator, return_details=True,
                             progress=False)
    out = {"question": question, "response": gen.text, "extracted": extract_answer(gen.text),
           "finished": bool(gen.finished), "n_tokens": len(gen.token_ids)}
    if gold is not None and str(gold).strip():
        gold = str(gold).strip()
        out.update(gold=gold, correct=bool(is_correct(gen.text, gold)), reward=float(reward_gsm8k(gen.text, gold)))
    return out


def format_answer(result: dict) -> str:
    """Human-readable report of `ask`'s result (what the CLI prints)."""
    lines = ["--- response " + "-" * 50, result["response"], "-" * 63,
             f"extracted answer: {result['extracted']}"
             + ("" if result["finished"] else f"   (truncated: hit the {result['n_tokens']}-token budget)")]
    if "gold" in result:
        lines.append(f"gold: {result['gold']}   correct: {result['correct']}   reward: {result['reward']:.1f}")
    return "\n".join(lines)


def too_long(model, question, max_new_tokens) -> str | None:
    """Why `question` does not fit in the model's context with this answer budget, or None."""
    room = model.config.max_seq_len - max_new_tokens
    n = len(encode_prompt([{"role": "user", "content": question}]))
    if n <= room:
        return None
    return (f"the question is {n} tokens in the chat template; this model's context ({model.config.max_seq_len}) "
            f"minus --max_new_tokens {max_new_tokens} leaves room for {max(room, 0)}: "
            f"ask a shorter question or lower --max_new_tokens")


def interactive(model, args, stdin=sys.stdin) -> None:
    """Read questions line by line until an empty line, 'quit', end of input or Ctrl-C.
    A line `question ### gold` also grades the answer against gold."""
    print("Ask a question (end with '### N' to give the gold answer; empty line or 'quit' to stop).")
    try:
        while True:
            print("> ", end="", flush=True)
            line = stdin.readline()
            if not line or line.strip() in ("", "quit", "exit"):
                break
            question, _, gold = line.strip().partition("###")
            problem = too_long(model, question.strip(), args.max_new_tokens)
            if problem:
                print(f"error: {problem}", flush=True)  # and the session goes on
                continue
            result = ask(model, question.strip(), gold.strip() or None, args.max_new_tokens, not args.sample,
                         args.temperature, args.seed, args.device)
            print(format_answer(result), flush=True)
    except KeyboardInterrupt:
        print()  # Ctrl-C: end the session quietly, on a fresh line


def main(argv=None) -> None:
    p = ArgumentParser(prog="python -m lessons_lib.chat", description="Ask a checkpoint a question; print its response, the extracted "
                                "answer and (with --gold) whether it is correct and its reward.")
    p.add_argument("--ckpt", required=True, help="checkpoint .pt to load (e.g. checkpoints/grpo.pt)")
    p.add_argument("--question", default=None, help="the question; omit for an interactive session")
    p.add_argument("--gold", default=None, help="gold answer (a number) to grade the response against")
    p.add_argument("--max_new_tokens", type=positive_int, default=256, help="generation budget")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --sample)")
    p.add_argument("--seed", type=int, default=0, help="random seed (with --sample)")
    p.add_argument("--device", default=None, help="cpu / cuda / mps (default: best available)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default: 1, fastest for tiny models)")
    args = p.parse_args(argv)
    try:
        validate_args(args)
    except UsageError as e:
        p.error(str(e))
    with cli_errors(CheckpointError):
        run(args)


def validate_args(args) -> None:
    """Usage checks before the checkpoint is loaded (raise UsageError)."""
    if args.sample and not 0 < args.temperature < float("inf"):
        raise UsageError(f"--temperature {args.temperature}: sampling needs a temperature > 0 (1.0 samples the model as it is)")
    if args.question is not None and not args.question.strip():
        raise UsageError("--question is empty: ask something, or leave --question out for an interactive session")
    if not Path(args.ckpt).is_file():
        raise UsageError(f"--ckpt {args.ckpt}: no such file (the course's are in checkpoints/, or run `make checkpoints`)")
    check_device(args.device)


def run(args) -> None:
    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.ckpt, device=args.device)
    print(f"loaded {args.ckpt} (stage: {model.meta.get('stage', '?')}, calculator: {model.calculator})")
    if args.question is None:
        interactive(model, args)
        return
    problem = too_long(model, args.question, args.max_new_tokens)
    if problem:
        raise UsageError(problem)
    result = ask(model, args.question, args.gold, args.max_new_tokens, not args.sample, args.temperature,
                 args.seed, args.device)
    print(format_answer(result))


if __name__ == "__main__":
    main()
