"""What every command-line tool of the course shares: one-line errors, argument checks, safe outputs.

The promise (see docs/reliability.md): a bad argument gets one line `error: ...` that says what to
do, exit status 2; a failure (unreadable data, a broken checkpoint, a full disk) gets one line too,
exit status 1; no traceback for either. A closed pipe (`... | head`) is not an error, Ctrl-C ends
quietly. Everything here runs before a model or a data set is loaded.
"""
import argparse
import contextlib
import os
import sys
import tempfile
import warnings
from pathlib import Path


class UsageError(Exception):
    """A bad argument: reported as `error: ...`, exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line `error: ...` (not the usage block), exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a count of questions, tokens, threads, prompts...)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def check_device(name):
    """Refuse a device this machine does not have, before anything is loaded onto it."""
    if name is None:
        return
    import torch
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"unknown device {name!r}: use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device {name}: no CUDA GPU is visible here; use --device cpu")
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError(f"--device {name}: Apple MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise UsageError(f"device {name!r} is not supported: use cpu, cuda, cuda:N or mps")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a name too long to even look up
        return False


def check_writable(path, what: str, make_dirs: bool = True) -> None:
    """Refuse (UsageError) an output file that could not be written, *before* the work that fills it.

    Probes for real instead of guessing from permission bits: an existing file is opened for
    appending (nothing is written), a new one is tested with a scratch file in the folder it will
    land in (never under its own name: another writer may be about to create it). `make_dirs`:
    missing folders will be created (as the stage table does), else they must exist.
    """
    path = Path(path).absolute()
    parent = path.parent
    while not _exists(parent) and parent != parent.parent:
        parent = parent.parent  # the nearest folder that exists: everything below gets created
    if not parent.is_dir():
        raise UsageError(f"{what} {path}: {parent} is a file, not a folder")
    name_max = os.pathconf(parent, "PC_NAME_MAX")
    too_long = [p for p in path.relative_to(parent).parts if len(os.fsencode(p)) > name_max]
    if too_long:
        raise UsageError(f"{what} {path}: the name {too_long[0][:30]}... is longer than the "
                         f"{name_max} bytes this file system allows; choose a shorter one")
    if not make_dirs and parent != path.parent:
        raise UsageError(f"{what} {path}: folder {path.parent} does not exist; create it first")
    if path.is_dir():
        raise UsageError(f"{what} {path} is a folder; give a file name")
    if path.is_symlink() and not path.exists():  # writing would create a file wherever it points
        raise UsageError(f"{what} {path} is a symbolic link to {os.readlink(path)}, which does not exist; "
                         f"give the real path")
    if path.exists() and not path.is_file():  # a FIFO would block the probe below forever
        raise UsageError(f"{what} {path} is not a regular file (a FIFO, a device or a socket); give a file path")
    try:
        if path.exists():
            with open(path, "ab"):  # opened, nothing written
                pass
        else:
            fd, probe = tempfile.mkstemp(dir=parent, prefix=".write-test-")
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise UsageError(f"{what} {path} cannot be written ({e.strerror}); choose another path "
                         f"or fix the folder's permissions") from None


def _quiet_warning(message, category, filename, lineno, line=None):
    return f"warning: {message}\n"  # a CLI's warnings are for its user: no source line


@contextlib.contextmanager
def cli_errors(*failures):
    """Run a CLI's body: UsageError -> exit 2, any of `failures` (or OSError) -> exit 1, each as
    one `error:` line; a closed stdout pipe and Ctrl-C end quietly."""
    formatwarning, warnings.formatwarning = warnings.formatwarning, _quiet_warning
    try:
        yield
        sys.stdout.flush()  # here, not at exit: a closed pipe must be caught below
    except UsageError as e:
        _exit(2, f"error: {e}")
    except BrokenPipeError:  # `... | head` closed the pipe: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush doesn't complain
        raise SystemExit(0)
    except KeyboardInterrupt:
        _exit(130, "interrupted")
    except (OSError, *failures) as e:
        _exit(1, f"error: {e}")
    finally:
        warnings.formatwarning = formatwarning


def _exit(status: int, line: str):
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(status)
