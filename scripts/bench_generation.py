"""Time the generation strategies side by side: sequential vs bucket vs pad, and KV cache vs none.

    python scripts/bench_generation.py                 # 200 real GSM8K + 200 synthetic prompts
    python scripts/bench_generation.py --n 20 --max_new_tokens 64   # a quick look

Prints, per prompt set: generated tokens per second, the speed-up over one-prompt-at-a-time, the
number of distinct prompt lengths (= buckets), and whether every strategy produced exactly the
sequential outputs (greedy). Then KV-cache decoding vs re-running the whole sequence each step.
Then the course's engine beside transformers' own `generate` (left padding, greedy) on the very
same weights: the course GPT is GPT-2's architecture, so `gpt2_from_course` copies it into a
`GPT2LMHeadModel` (needs `transformers`: pip install -e ".[hf]"; skipped without it).
A random model rarely emits EOT, so every row runs the full max_new_tokens: fine for timing.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

import torch  # noqa: E402

from lessons_lib.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from lessons_lib.cli import ArgumentParser, UsageError, cli_errors, positive_int  # noqa: E402
from lessons_lib.data import DatasetFormatError, DatasetUnavailableError, load_qa_pairs  # noqa: E402
from lessons_lib.generation import batched_generate, sample_next  # noqa: E402
from lessons_lib.model import GPT, GPTConfig  # noqa: E402
from lessons_lib.tokenizer import EOT, PAD, encode_prompt  # noqa: E402


def gsm8k_questions(n: int) -> list[str]:
    return [q for q, _ in load_qa_pairs("gsm8k", "test", limit=n)]  # GSM8K_DIR, else `datasets`


def synthetic_questions(n: int) -> list[str]:
    return [q for q, _ in load_qa_pairs("synthetic", "test", limit=n)]  # the course's practice set


def make_model(ckpt: str | None, seed: int):
    if ckpt:
        return load_checkpoint(ckpt, device="cpu")
    torch.manual_seed(seed)
    model = GPT(GPTConfig()).eval()  # the course's default size
    with torch.no_grad():  # 5x init scale: varied outputs (see tests/test_generation.py)
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(5.0)
    return model


def time_strategy(model, prompts, args, strategy):
    """Wall seconds, and CPU seconds of this process: on a shared machine the CPU time is the
    steadier measure (it doesn't count time spent waiting for a core)."""
    t0, c0 = time.perf_counter(), time.process_time()
    outs = batched_generate(model, prompts, args.max_new_tokens, device="cpu", strategy=strategy,
                            batch_size=args.batch_size, progress=False, return_details=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return [g.token_ids for g in outs], wall, cpu, sum(len(g.token_ids) for g in outs)


def bench_set(name, model, prompts, args):
    n_buckets = len({len(p) for p in prompts})
    print(f"\n{name}: {len(prompts)} prompts, {n_buckets} distinct lengths (buckets), "
          f"mean length {sum(map(len, prompts)) / len(prompts):.0f} tokens, {args.max_new_tokens} new tokens")
    print(f"{'strategy':<12}{'wall s':>8}{'tokens/s':>10}{'vs seq':>8}{'CPU s':>8}{'vs seq':>8}  matches sequential")
    ref = None
    for strategy in ("sequential", "bucket", "pad"):
        ids, wall, cpu, n_tok = time_strategy(model, prompts, args, strategy)
        if ref is None:
            ref, base_wall, base_cpu = ids, wall, cpu
        print(f"{strategy:<12}{wall:>8.1f}{n_tok / wall:>10.0f}{base_wall / wall:>7.1f}x"
              f"{cpu:>8.1f}{base_cpu / cpu:>7.1f}x  {ids == ref}", flush=True)


@torch.inference_mode()
def decode_one(model, prompt, n, use_cache):
    """Greedy decoding of one prompt, with the KV cache or by re-running the whole sequence each step."""
    ids = torch.tensor([prompt])
    cache = model.new_kv_cache(1, len(prompt) + n) if use_cache else None
    logits = model(ids, kv_cache=cache)[:, -1]
    out = []
    for _ in range(n):
        nxt = sample_next(logits).view(1, 1)
        out.append(nxt.item())
        ids = torch.cat([ids, nxt], dim=1)
        logits = model(nxt if use_cache else ids, kv_cache=cache)[:, -1]
    return out


def bench_cache(model, prompts, args):
    print(f"\nKV cache vs no cache: {len(prompts)} real GSM8K prompts one at a time, {args.max_new_tokens} new tokens")
    results, seconds = {}, {}
    for use_cache in (False, True):
        t0, c0 = time.perf_counter(), time.process_time()
        results[use_cache] = [decode_one(model, p, args.max_new_tokens, use_cache) for p in prompts]
        seconds[use_cache] = (time.perf_counter() - t0, time.process_time() - c0)
        rate = len(prompts) * args.max_new_tokens / seconds[use_cache][0]
        label = "KV cache" if use_cache else "no cache"
        print(f"{label:<12}{seconds[use_cache][0]:>8.1f} wall s{rate:>8.0f} tokens/s{seconds[use_cache][1]:>8.1f} CPU s", flush=True)
    (w0, c0), (w1, c1) = seconds[False], seconds[True]
    print(f"speed-up {w0 / w1:.1f}x wall, {c0 / c1:.1f}x CPU; outputs identical: {results[False] == results[True]}")


def bench_group_prefill(model, prompts, args, group=8):
    """A GRPO step's rollout: `group` sampled answers to each prompt. Sharing the prompt's prefill
    across its group vs prefilling every row; the same seeded samples either way."""
    rows = [p for p in prompts for _ in range(group)]
    print(f"\nGRPO rollout: {len(prompts)} synthetic prompts x {group} samples, {args.max_new_tokens} new tokens, "
          f"T=0.7, one batch")
    outs, seconds = {}, {}
    for share in (False, True):
        t0 = time.perf_counter()
        outs[share] = batched_generate(model, rows, args.max_new_tokens, greedy=False, temperature=0.7,
                                       generator=torch.Generator().manual_seed(0), batch_size=len(rows),
                                       progress=False, share_prefill=share)
        seconds[share] = time.perf_counter() - t0
        print(f"{'shared prefill' if share else 'prefill per row':<18}{seconds[share]:>8.2f} wall s", flush=True)
    print(f"speed-up {seconds[False] / seconds[True]:.2f}x; samples identical: {outs[False] == outs[True]}")


def bench_transformers(model, prompts, args):
    """The course's `batched_generate` ("pad") vs transformers' `generate` on a GPT2LMHeadModel holding
    the same weights: same prompts, batches, greedy decoding and new-token budget, EOT ends a row."""
    from lessons_lib.hf_model import HFUnavailableError, generate_ids, gpt2_from_course
    try:
        hf = gpt2_from_course(model)
    except HFUnavailableError as e:
        print(f"\ntransformers comparison skipped: {e}")
        return
    import transformers
    print(f"\ncourse engine vs transformers {transformers.__version__} generate: {len(prompts)} real GSM8K prompts, "
          f"{args.max_new_tokens} new tokens, batch {args.batch_size}, left padding, greedy, same weights (GPT-2)")
    hf_run = lambda cache, n=args.max_new_tokens: [ids for ids, _ in generate_ids(
        hf, prompts, n, PAD, [EOT], args.batch_size, "pad", progress=False, cache=cache)]
    course_run = lambda n=args.max_new_tokens: [g.token_ids for g in batched_generate(
        model, prompts, n, device="cpu", strategy="pad", batch_size=args.batch_size, calculator=False,
        progress=False, return_details=True)]  # no calculator: generate has none
    engines = {"course": course_run, "transformers": lambda: hf_run(None),  # the --hf scorer: default cache
               "transformers, static cache": lambda: hf_run("static")}
    print(f"{'engine':<28}{'wall s':>8}{'tokens/s':>10}{'CPU s':>8}  course / this  outputs = course's")
    outputs, rates = {}, {}
    for name, run in engines.items():
        t0, c0 = time.perf_counter(), time.process_time()
        outputs[name] = run()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rates[name] = sum(map(len, outputs[name])) / wall
        same = sum(a == b for a, b in zip(outputs[name], outputs["course"]))
        print(f"{name:<28}{wall:>8.1f}{rates[name]:>10.0f}{cpu:>8.1f}  {rates['course'] / rates[name]:>12.2f}x"
              f"  {same}/{len(prompts)}", flush=True)
    prefill = {}
    for name, run in (("course", lambda: course_run(1)), ("transformers", lambda: hf_run(None, 1))):
        t0 = time.perf_counter()
        run()
        prefill[name] = time.perf_counter() - t0
    print(f"prefill alone (1 new token): course {prefill['course']:.1f} s (each prompt alone), transformers "
          f"{prefill['transformers']:.1f} s (the left-padded rectangle, pads included)")


def parse_args(argv=None):
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=positive_int, default=200, help="prompts per set (default 200)")
    ap.add_argument("--max_new_tokens", type=positive_int, default=192, help="tokens generated per prompt (default 192)")
    ap.add_argument("--batch_size", type=positive_int, default=64, help="rows decoded together (default 64)")
    ap.add_argument("--cache_n", type=positive_int, default=8, help="prompts for the KV cache comparison (default 8)")
    ap.add_argument("--ckpt", default=None, help="a checkpoint to time instead of a seeded random model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["gsm8k", "synthetic", "cache", "group", "transformers"])
    args = ap.parse_args(argv)
    if args.ckpt and not Path(args.ckpt).is_file():
        ap.error(f"--ckpt {args.ckpt}: no such file")
    return args


def main(argv=None):
    args = parse_args(argv)
    with cli_errors(CheckpointError, DatasetFormatError, DatasetUnavailableError):
        bench(args)


def bench(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    model = make_model(args.ckpt, args.seed)
    print(f"model: {'checkpoint ' + args.ckpt if args.ckpt else 'seeded random, default size'} "
          f"({model.num_params() / 1e6:.2f}M params), torch {torch.__version__}, {torch.get_num_threads()} threads")
    encode = lambda qs: [encode_prompt([{"role": "user", "content": q}]) for q in qs]
    real = encode(gsm8k_questions(args.n))
    room = model.config.max_seq_len - max(map(len, real))
    if args.max_new_tokens > room:  # every set's prompts are at most as long as GSM8K's
        raise UsageError(f"--max_new_tokens {args.max_new_tokens}: the longest of these prompts leaves room for "
                         f"{max(room, 0)} new tokens in the model's context ({model.config.max_seq_len}); lower it or --n")
    if "gsm8k" not in args.skip:
        bench_set("real GSM8K test questions", model, real, args)
    if "synthetic" not in args.skip:
        bench_set("synthetic GSM8K-style questions", model, encode(synthetic_questions(args.n)), args)
    if "cache" not in args.skip:
        bench_cache(model, real[: args.cache_n], args)
    if "group" not in args.skip:
        bench_group_prefill(model, encode(synthetic_questions(8)), args)
    if "transformers" not in args.skip:
        bench_transformers(model, real, args)


if __name__ == "__main__":
    main()
