"""Stage configs: one dataclass per stage, whose defaults *are* the shipped recipe.

    @dataclass
    class GRPOConfig(StageConfig):
        steps: int = knob(80, lo=1, help="optimizer iterations (each: one batch of rollouts)")

Every field says its bounds where it is declared (`knob`) or its allowed values (`choice`), so the
pipeline, a stage's own command line and the tests check a config the same way, before anything is
loaded. `python -m lessons_lib.train_grpo` with no flags trains exactly what `make checkpoints`
trains; the only other preset is the pipeline's micro config (a smoke test), written as overrides.
"""
import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace

from lessons_lib.cli import UsageError


def knob(default, lo=None, hi=None, *, above: bool = False, help: str = ""):
    """A numeric field: `lo <= value <= hi` (`lo < value` with above=True); None = unbounded."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "above": above, "help": help})


def choice(default, options, help: str = ""):
    """A field whose value must be one of `options`."""
    return field(default=default, metadata={"choices": tuple(options), "help": help})


def text(default, help: str = ""):
    """A free string (a path, a stage name)."""
    return field(default=default, metadata={"help": help})


def _field_problem(f, value) -> str | None:
    meta, kind = f.metadata, f.type if isinstance(f.type, type) else type(f.default)
    if "choices" in meta:
        return None if value in meta["choices"] else f"use one of {', '.join(map(str, meta['choices']))}"
    if kind is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
            return f"must be {'a whole number' if kind is int else 'a number'}"
        if not math.isfinite(value):
            return "must be a finite number"
        lo, hi = meta.get("lo"), meta.get("hi")
        if lo is not None and (value <= lo if meta.get("above") else value < lo):
            return f"must be {'>' if meta.get('above') else '>='} {lo}"
        if hi is not None and value > hi:
            return f"must be <= {hi}"
    return None


@dataclass
class StageConfig:
    """Shared behaviour of the stage configs: validation, dict round trip, overrides."""

    def problems(self) -> list[str]:
        """One line per field that is out of bounds (empty: the config is valid)."""
        out = []
        for f in fields(self):
            why = _field_problem(f, getattr(self, f.name))
            if why:
                out.append(f"--{f.name} {getattr(self, f.name)!r}: {why}")
        return out + self.cross_field_problems()

    def cross_field_problems(self) -> list[str]:
        """Constraints between fields (a subclass adds its own)."""
        return []

    def validate(self):
        """Raise UsageError with the first problem; return self when there is none."""
        problems = self.problems()
        if problems:
            raise UsageError(problems[0])
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        """A config from a dict (e.g. a checkpoint's meta): unknown keys are refused, missing keys default."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
        return cls(**values)

    def updated(self, **changes):
        """A copy with `changes` applied (a KeyError-like UsageError for an unknown field)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise UsageError(f"{type(self).__name__} has no field(s) {', '.join(unknown)}")
        return replace(self, **changes)

    @classmethod
    def defaults(cls) -> dict:
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}
