"""Service configuration declared once: command-line flags, environment, argv and JSON schema.

A service's Config is a dataclass decorated with :func:`declared` whose
fields are :func:`option` (one value) or :func:`group` (a nested declared
dataclass, e.g. :class:`~privproc.runtime.http.HttpLimits`). Each option
says its help text and default, and where needed its flag spelling, a
parser and formatter for values that are not plain ``str``/``int``/
``float``/``bool``/``Path`` (a ``--publisher NAME:SCOPE:FILE``, hex bytes),
and whether the file it names holds a secret. From that one declaration:

* :func:`add_arguments` gives ``privproc serve SERVICE`` its flags;
* :func:`load` builds the Config from the parsed flags and the environment,
  ``PRIVPROC_<SERVICE>_<FIELD>`` (a group's fields: ``..._<GROUP>_<FIELD>``).
  Precedence: a flag given wins over the environment, which wins over the
  default. A repeated option's variable holds a JSON array of strings (or a
  single value); a boolean's ``true``/``false``;
* :func:`to_argv` gives the flags that rebuild a Config (``privproc up``
  starts each child from a Config value, never from hand-written strings);
* :func:`json_schema` gives the schema of the Config (``privproc config
  schema``), which a deployment's values file (a Helm chart's
  ``values.schema.json``) reuses; :func:`to_json` a value in that shape.

A field without a default is required: by flag or by environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, TypeVar, dataclass_transform

from privproc.errors import ConfigError, PrivprocError

T = TypeVar("T")

#: Where a Config's service name is kept on its class (see :func:`declared`).
_SERVICE_ATTRIBUTE = "__privproc_service__"
ENV_PREFIX = "PRIVPROC"


@dataclass(frozen=True)
class Option:
    """What a field declares beyond its type and default."""

    help: str
    flag: str | None = None
    #: Text (one flag value or one list item) to value; ``None``: from the field's type.
    parse: Callable[[str], Any] | None = None
    #: Value (or one list item) to the text ``parse`` reads back; ``None``: ``str``.
    format: Callable[[Any], str] | None = None
    #: The option names a file whose content is a secret (mounted from a secret store).
    secret_file: bool = False
    metavar: str | None = None


@dataclass(frozen=True)
class Group:
    """A nested declared dataclass; its fields bring their own flag spellings."""

    help: str


def option(
    *,
    help: str,
    default: Any = MISSING,
    default_factory: Callable[[], Any] | None = None,
    flag: str | None = None,
    parse: Callable[[str], Any] | None = None,
    format: Callable[[Any], str] | None = None,
    secret_file: bool = False,
    metavar: str | None = None,
    repr: bool = True,
) -> Any:
    """A declared Config field (see the module docstring); no ``default``: required."""
    metadata = {"option": Option(help, flag, parse, format, secret_file, metavar)}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata, repr=repr)
    return dataclasses.field(default=default, metadata=metadata, repr=repr)


def group(*, help: str, default_factory: Callable[[], Any]) -> Any:
    """A Config field holding a nested declared dataclass (its default: ``default_factory()``)."""
    return dataclasses.field(default_factory=default_factory, metadata={"group": Group(help)})


@dataclass_transform(field_specifiers=(option, group, dataclasses.field))
def declared(service: str | None = None, *, frozen: bool = False) -> Callable[[type[T]], type[T]]:
    """Make a class a declared Config (a dataclass) of ``service`` (its environment prefix).

    A group's class (declared without a service) takes its prefix from the Config holding it.
    """

    def decorate(cls: type[T]) -> type[T]:
        made = dataclass(frozen=frozen)(cls)
        setattr(made, _SERVICE_ATTRIBUTE, service)
        for item in dataclasses.fields(made):  # type: ignore[arg-type]
            if "option" not in item.metadata and "group" not in item.metadata:
                raise TypeError(f"{cls.__name__}.{item.name} is neither an option nor a group")
        return made

    return decorate


def service_name(config: type[Any]) -> str | None:
    """The service a declared Config belongs to."""
    name: str | None = getattr(config, _SERVICE_ATTRIBUTE, None)
    return name


# ---------------------------------------------------------------------------------------------
# The declaration, walked: one leaf per option, groups flattened.


@dataclass(frozen=True)
class Leaf:
    """One option of a Config, wherever it sits (``path`` is its field names from the top)."""

    path: tuple[str, ...]
    option: Option
    #: The type of one value: the field's type without ``None`` and without ``tuple[..., ...]``.
    item_type: Any
    repeated: bool
    optional: bool
    #: The default: ``MISSING`` for a required option.
    default: Any

    @property
    def dest(self) -> str:
        return ".".join(self.path)

    @property
    def flag(self) -> str:
        return self.option.flag or "--" + self.path[-1].replace("_", "-")

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def env(self, service: str | None) -> str | None:
        if service is None:
            return None
        return "_".join((ENV_PREFIX, service, *self.path)).upper().replace("-", "_")

    def parse(self, text: str) -> Any:
        if self.option.parse is not None:
            return self.option.parse(text)
        if self.item_type is bool:
            return _parse_bool(text)
        if typing.get_origin(self.item_type) is typing.Literal:
            if text not in typing.get_args(self.item_type):
                raise ValueError(f"one of {', '.join(map(str, typing.get_args(self.item_type)))}")
            return text
        return self.item_type(text)

    def format(self, value: Any) -> str:
        if self.option.format is not None:
            return self.option.format(value)
        return str(value)


def leaves(config: type[Any]) -> Iterator[Leaf]:
    """Every option of a declared Config, groups' options included, in declaration order."""
    yield from _leaves(config, ())


def _leaves(config: type[Any], prefix: tuple[str, ...]) -> Iterator[Leaf]:
    hints = typing.get_type_hints(config)
    for item in dataclasses.fields(config):
        if "group" in item.metadata:
            yield from _leaves(hints[item.name], (*prefix, item.name))
            continue
        kind, optional = _without_none(hints[item.name])
        repeated = typing.get_origin(kind) is tuple
        item_type = typing.get_args(kind)[0] if repeated else kind
        if item.default is not MISSING:
            default = item.default
        elif item.default_factory is not MISSING:
            default = item.default_factory()
        else:
            default = MISSING
        yield Leaf((*prefix, item.name), item.metadata["option"], item_type, repeated, optional, default)


def _without_none(kind: Any) -> tuple[Any, bool]:
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        rest = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return (rest[0] if len(rest) == 1 else kind), len(rest) < len(typing.get_args(kind))
    return kind, False


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("a boolean is true or false")


# ---------------------------------------------------------------------------------------------
# (a) command-line flags


def add_arguments(
    parser: argparse.ArgumentParser, config: type[Any], *, exclude: tuple[str, ...] = ()
) -> None:
    """Add a flag per option of ``config`` (none has an argparse default: see :func:`load`)."""
    service = service_name(config)
    for leaf in leaves(config):
        if leaf.dest in exclude:
            continue
        env = leaf.env(service)
        notes = []
        if env is not None:
            notes.append(f"env {env}")
        if leaf.required:
            notes.append("required")
        elif leaf.default is not None and leaf.default != () and leaf.item_type is not bool:
            notes.append(f"default {_display(leaf, leaf.default)}")
        text = leaf.option.help + (f" ({'; '.join(notes)})" if notes else "")
        if leaf.repeated:
            text += "; repeat for more"
        kwargs: dict[str, Any] = {"dest": leaf.dest, "help": text, "default": argparse.SUPPRESS}
        if leaf.item_type is bool and not leaf.repeated:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _argparse_type(leaf)
            kwargs["metavar"] = leaf.option.metavar or leaf.path[-1].upper()
            if leaf.repeated:
                kwargs["action"] = "append"
            if typing.get_origin(leaf.item_type) is typing.Literal:
                kwargs["choices"] = typing.get_args(leaf.item_type)
                del kwargs["metavar"]
        parser.add_argument(leaf.flag, **kwargs)


def _display(leaf: Leaf, value: Any) -> str:
    if leaf.repeated:
        return " ".join(leaf.format(v) for v in value)
    return leaf.format(value)


def _argparse_type(leaf: Leaf) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return leaf.parse(text)
        except (ValueError, TypeError, PrivprocError) as err:
            raise argparse.ArgumentTypeError(str(err) or f"not a valid {leaf.flag} value") from None

    convert.__name__ = leaf.flag
    return convert


# ---------------------------------------------------------------------------------------------
# (b) flags, then environment, then defaults


def load(config: type[T], given: argparse.Namespace | Mapping[str, Any], environ: Mapping[str, str]) -> T:
    """The Config from flags ``given`` (parsed by :func:`add_arguments`), then ``environ``, then defaults.

    Raises :class:`ConfigError` naming the flag and variable of a required
    option given neither way, or of a value that does not parse.
    """
    values = vars(given) if isinstance(given, argparse.Namespace) else dict(given)
    service = service_name(config)
    chosen: dict[str, Any] = {}
    for leaf in leaves(config):
        env = leaf.env(service)
        if leaf.dest in values:
            value = values[leaf.dest]
            chosen[leaf.dest] = tuple(value) if leaf.repeated else value
        elif env is not None and env in environ:
            chosen[leaf.dest] = _from_env(leaf, env, environ[env])
        elif leaf.required:
            where = f" (or {env})" if env is not None else ""
            raise ConfigError(f"{leaf.flag}{where} is required")
    return _build(config, chosen)


def _from_env(leaf: Leaf, name: str, text: str) -> Any:
    try:
        if not leaf.repeated:
            return leaf.parse(text)
        if text.lstrip().startswith("["):
            items = json.loads(text)
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ValueError("a JSON array of strings")
            return tuple(leaf.parse(i) for i in items)
        return (leaf.parse(text),) if text else ()
    except (ValueError, TypeError, PrivprocError) as err:
        raise ConfigError(f"{name}: {err}") from None


def _build(config: type[T], chosen: dict[str, Any]) -> T:
    """``config`` from the values chosen (by dotted path); a group's fields over its default."""
    kwargs: dict[str, Any] = {}
    try:
        for item in dataclasses.fields(config):  # type: ignore[arg-type]
            dest = item.name
            if "group" in item.metadata:
                # The group's default for this Config (its default_factory) with the options given.
                inner = {k.removeprefix(dest + "."): v for k, v in chosen.items() if k.startswith(dest + ".")}
                if inner:
                    assert item.default_factory is not MISSING
                    kwargs[item.name] = dataclasses.replace(item.default_factory(), **inner)
            elif dest in chosen:
                kwargs[item.name] = chosen[dest]
        return config(**kwargs)
    except ValueError as err:  # a value its class refuses (e.g. HttpLimits' checks)
        raise ConfigError(str(err)) from None


def from_args(config: type[T], argv: list[str], environ: Mapping[str, str] | None = None) -> T:
    """Parse ``argv`` with ``config``'s flags alone (and ``environ``): for tests and tools."""
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser, config)
    return load(config, parser.parse_args(argv), environ or {})


# ---------------------------------------------------------------------------------------------
# (c) argv


def to_argv(config: Any) -> list[str]:
    """Flags that :func:`load` turns back into ``config`` (only the options off their default)."""
    argv: list[str] = []
    for leaf in leaves(type(config)):
        value = _value_at(config, leaf.path)
        if not leaf.required and value == leaf.default:
            continue
        if leaf.item_type is bool and not leaf.repeated:
            argv.append(leaf.flag if value else "--no-" + leaf.flag.removeprefix("--"))
        elif value is None:
            raise ConfigError(f"{leaf.flag} has no flag for 'unset' (its default is {leaf.default})")
        elif leaf.repeated:
            for item in value:
                argv += [leaf.flag, leaf.format(item)]
        else:
            argv += [leaf.flag, leaf.format(value)]
    return argv


def _value_at(config: Any, path: tuple[str, ...]) -> Any:
    value = config
    for name in path:
        value = getattr(value, name)
    return value


# ---------------------------------------------------------------------------------------------
# (d) JSON schema


def json_schema(config: type[Any]) -> dict[str, Any]:
    """The JSON schema (2020-12) of ``config``'s values, as :func:`to_json` writes them."""
    service = service_name(config)
    schema = _object_schema(config, (), service)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"privproc {service or config.__name__} configuration"
    return schema


def _object_schema(config: type[Any], prefix: tuple[str, ...], service: str | None) -> dict[str, Any]:
    hints = typing.get_type_hints(config)
    properties: dict[str, Any] = {}
    required: list[str] = []
    by_path = {leaf.path: leaf for leaf in leaves(config)}
    for item in dataclasses.fields(config):
        if "group" in item.metadata:
            sub = _object_schema(hints[item.name], (*prefix, item.name), service)
            sub["description"] = item.metadata["group"].help
            properties[item.name] = sub
            continue
        leaf = dataclasses.replace(by_path[(item.name,)], path=(*prefix, item.name))
        properties[item.name] = _leaf_schema(leaf, service)
        if leaf.required:
            required.append(item.name)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


_JSON_TYPES: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    Path: {"type": "string", "format": "path"},
}


def _leaf_schema(leaf: Leaf, service: str | None) -> dict[str, Any]:
    if typing.get_origin(leaf.item_type) is typing.Literal:
        item: dict[str, Any] = {"enum": list(typing.get_args(leaf.item_type))}
    elif leaf.option.parse is None and leaf.item_type in _JSON_TYPES:
        item = dict(_JSON_TYPES[leaf.item_type])
    else:  # a value with its own text form (parse/format)
        item = {"type": "string"}
    if leaf.repeated:
        schema: dict[str, Any] = {"type": "array", "items": item}
    elif leaf.optional:
        schema = {"anyOf": [item, {"type": "null"}]}
    else:
        schema = item
    schema["description"] = leaf.option.help
    if not leaf.required:
        schema["default"] = _json_value(leaf, leaf.default)
    schema["x-privproc-flag"] = leaf.flag
    env = leaf.env(service)
    if env is not None:
        schema["x-privproc-env"] = env
    if leaf.option.secret_file:
        schema["x-privproc-secret-file"] = True
    return schema


def _json_value(leaf: Leaf, value: Any) -> Any:
    if value is None:
        return None
    if leaf.repeated:
        return [_json_item(leaf, v) for v in value]
    return _json_item(leaf, value)


def _json_item(leaf: Leaf, value: Any) -> Any:
    if isinstance(value, bool | int | float) and leaf.option.format is None:
        return value
    return leaf.format(value)


def to_json(config: Any) -> dict[str, Any]:
    """``config`` as a JSON object valid under :func:`json_schema` (every option, defaults too)."""
    document: dict[str, Any] = {}
    for leaf in leaves(type(config)):
        target = document
        for name in leaf.path[:-1]:
            target = target.setdefault(name, {})
        target[leaf.path[-1]] = _json_value(leaf, _value_at(config, leaf.path))
    return document


# ---------------------------------------------------------------------------------------------
# Options every service has, spelled once.


def host_option() -> Any:
    """The address a service listens on."""
    return option(default="127.0.0.1", help="address to listen on")


def grpc_port_option() -> Any:
    """Its gRPC port (0: a free one, reported on the ready line)."""
    return option(default=0, help="gRPC port (0: a free port, reported on the ready line)")


def http_port_option() -> Any:
    """Its HTTP port (0: a free one, reported on the ready line)."""
    return option(default=0, help="HTTP port (0: a free port, reported on the ready line)")


def read_secret_file(path: Path) -> str:
    """The secret held in ``path`` (a key string or credential), surrounding whitespace removed."""
    try:
        return path.read_text().strip()
    except OSError as err:
        raise ConfigError("a secret file is not readable") from err
