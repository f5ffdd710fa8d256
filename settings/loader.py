"""The one settings loader: a frozen dataclass declares the settings, :func:`load` fills it.

Every component (the API, the worker, the manager, the launcher) declares its settings as a
frozen, keyword-only dataclass and builds it once at start with :func:`load`, which reads, per
field:

1. the environment variable (``prefix + FIELD_NAME``, or the name the field's
   :func:`setting` gives);
2. for a ``secret`` field, the file named by ``VARIABLE_FILE`` (Docker and ECS secrets);
3. the settings file named by ``SKYFLEET_CONFIG_FILE`` (TOML, keys are the variable names, one
   file for every component: each takes its own keys and leaves the others');
4. the field's default; a field without one is required.

Values are converted to the field's annotated type (``bool``, ``int``, ``float``, ``str``,
``Path``, ``tuple[str, ...]`` from a comma-separated list, or ``X | None``) and checked against
the field's bounds; numbers are never negative unless the field says so. Then the object's
``check()`` (if it has one) checks what involves several fields. Every error is a
:class:`ConfigError` that names the variable, raised before the component does anything.
"""

from __future__ import annotations

import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

#: Names a TOML file of settings (``SKYFLEET_LEASE_S = 8.0``); the environment wins over it.
CONFIG_FILE_VAR = "SKYFLEET_CONFIG_FILE"
#: The prefix of a variable whose field does not name one.
PREFIX = "SKYFLEET_"
#: Suffix of the variable that names a file holding a secret setting's value.
FILE_SUFFIX = "_FILE"

T = TypeVar("T", bound="DataclassInstance")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Spec:
    """How one field is read and bounded (kept in the dataclass field's metadata)."""

    env: str | None = None
    minimum: float | None = 0
    maximum: float | None = None
    #: Strictly greater than zero.
    positive: bool = False
    choices: tuple[str, ...] = ()
    #: Also read from the file named by ``VARIABLE_FILE``; never shown in a repr.
    secret: bool = False


def setting(default: Any = MISSING, *, env: str | None = None, minimum: float | None = 0,
            maximum: float | None = None, positive: bool = False, choices: Sequence[str] = (),
            secret: bool = False, default_factory: Any = MISSING) -> Any:
    """A settings field with its variable name and bounds (``minimum=None``: negatives allowed)."""
    spec = Spec(env=env, minimum=minimum, maximum=maximum, positive=positive, choices=tuple(choices),
                secret=secret)
    return field(default=default, default_factory=default_factory, repr=not secret,
                 metadata={"setting": spec})


def spec_of(f: Field[Any]) -> Spec:
    """The field's :class:`Spec` (the defaults when it was declared without :func:`setting`)."""
    found = f.metadata.get("setting")
    return found if isinstance(found, Spec) else Spec()


def variable(cls: type, name: str, prefix: str = PREFIX) -> str:
    """The environment variable that sets field ``name`` of settings class ``cls``."""
    for f in fields(cls):
        if f.name == name:
            return spec_of(f).env or prefix + name.upper()
    raise KeyError(name)


def load(cls: type[T], environ: Mapping[str, str] | None = None, *, prefix: str = PREFIX,
         **given: Any) -> T:
    """Build ``cls`` from the environment (``os.environ`` by default) and the settings file.

    ``given`` fields are taken as they are (values a component works out itself, such as a
    default computed from another setting).
    """
    env = os.environ if environ is None else environ
    from_file = _read_file(env)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        if not f.init or f.name in given:
            continue
        spec = spec_of(f)
        name = spec.env or prefix + f.name.upper()
        raw, source = _raw(name, spec, env, from_file)
        if raw is None:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{name} is not set")
            continue
        values[f.name] = convert(source, raw, hints[f.name], spec)
    settings = cls(**values, **given)
    check = getattr(settings, "check", None)
    if callable(check):
        check()
    return settings


def _raw(name: str, spec: Spec, env: Mapping[str, str], from_file: tuple[str, dict[str, Any]]) -> tuple[Any, str]:
    """The value for variable ``name`` and where it came from (for the error), or None."""
    value = env.get(name)
    if value not in (None, ""):
        return value, name
    if spec.secret and env.get(name + FILE_SUFFIX):
        path = env[name + FILE_SUFFIX]
        try:
            return Path(path).read_text().strip(), name + FILE_SUFFIX
        except OSError as exc:
            raise ConfigError(f"{name + FILE_SUFFIX} cannot be read: {exc}") from None
    path, table = from_file
    if table.get(name) not in (None, ""):
        return table[name], f"{name} (in {path})"
    return None, name


def _read_file(env: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    path = env.get(CONFIG_FILE_VAR)
    if not path:
        return "", {}
    try:
        with open(path, "rb") as f:
            return path, tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{CONFIG_FILE_VAR}: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{CONFIG_FILE_VAR} ({path}): not valid TOML: {exc}") from None


def convert(name: str, raw: Any, kind: Any, spec: Spec = Spec()) -> Any:
    """``raw`` (a string from the environment, or a TOML value) as ``kind``, within ``spec``'s bounds."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        return convert(name, raw, options[0], spec)
    value = _typed(name, raw, kind)
    if isinstance(value, int | float) and not isinstance(value, bool):
        _check_bounds(name, value, spec)
    if spec.choices and value not in spec.choices:
        raise ConfigError(f"{name} must be one of {', '.join(spec.choices)}, got {value!r}")
    return value


def _typed(name: str, raw: Any, kind: Any) -> Any:
    kind_name = getattr(kind, "__name__", str(kind))
    if typing.get_origin(kind) is tuple:
        if isinstance(raw, str):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if isinstance(raw, list) and all(isinstance(part, str) for part in raw):
            return tuple(part.strip() for part in raw if part.strip())
        raise ConfigError(f"{name} must be a comma-separated list, got {raw!r}")
    if kind is bool:
        lowered = str(raw).strip().lower() if not isinstance(raw, bool) else ("true" if raw else "false")
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    elif kind in (int, float):
        if isinstance(raw, str):
            try:
                return kind(raw)
            except ValueError:
                pass
        elif isinstance(raw, int | float) and not isinstance(raw, bool) and (kind is float or isinstance(raw, int)):
            return kind(raw)
        kind_name = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name} must be {kind_name}, got {raw!r}")
    elif kind in (str, Path):
        if isinstance(raw, str):
            return kind(raw)
    else:
        raise TypeError(f"settings of type {kind!r} are not supported ({name})")
    raise ConfigError(f"{name} must be a {kind_name}, got {raw!r}")


def _check_bounds(name: str, value: float, spec: Spec) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if spec.positive and value <= 0:
        raise ConfigError(f"{name} must be positive, got {value:g}")
    if spec.minimum is not None and value < spec.minimum:
        raise ConfigError(f"{name} must not be negative, got {value:g}" if spec.minimum == 0
                          else f"{name} must be at least {spec.minimum:g}, got {value:g}")
    if spec.maximum is not None and value > spec.maximum:
        raise ConfigError(f"{name} must be at most {spec.maximum:g}, got {value:g}")
