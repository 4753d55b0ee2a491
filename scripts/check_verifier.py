"""The verifier's sanity check on real GSM8K: gold scores 1319/1319, wrong answers give 0 false
positives, and our checker agrees with all 5276 of OpenAI's labels on GPT-3's solutions.

    python scripts/check_verifier.py                      # the copies shipped in data/gsm8k/
    python scripts/check_verifier.py --data-dir ../shared/data/gsm8k

Exits 1 when any check fails, 2 when the data cannot be found. The logic lives in
lessons_lib/check_verifier.py (the test and notebook 01 call the same code).
"""
import argparse
import json
import sys

from lessons_lib.check_verifier import format_report, run_sanity_check, sanity_passed
from lessons_lib.data import DatasetUnavailableError


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None,
                        help="folder with test.jsonl and example_model_solutions.jsonl (default: $GSM8K_DIR, else the copies in data/gsm8k/)")
    parser.add_argument("--limit", type=int, default=None, help="check only the first N test items")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON instead")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    try:
        report = run_sanity_check(args.data_dir, limit=args.limit, progress=not args.no_progress)
    except DatasetUnavailableError as e:
        print(f"cannot run the sanity check: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0 if sanity_passed(report) else 1


if __name__ == "__main__":
    sys.exit(main())
