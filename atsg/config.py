"""Configuration: the JSON Schema is the single source of defaults and types.

The Snakefile and the CLI both go through :func:`validate_config`, which fills
defaults from ``workflow/schemas/config.schema.yaml`` (shipped inside the
package as ``atsg/config.schema.yaml``) and turns the first schema violation
into a one-line :class:`~atsg.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators

from .errors import ConfigError

SCHEMA_NAME = "config.schema.yaml"

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"
"""The synthetic demo's settings: used (by the Snakefile and by atsg alike) only when no config file is given."""


@functools.lru_cache(maxsize=1)
def load_schema() -> dict:
    """The configuration schema as a dict."""
    text = resources.files("atsg").joinpath(SCHEMA_NAME).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _with_defaults(validator_class):
    """A validator class that writes schema defaults into the instance as it validates."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(Draft202012Validator)


def _key_of(error) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return path or "(top level)"


def _describe(error) -> str:
    if error.validator == "additionalProperties":
        return f"{error.message} (unknown key; check its spelling against {SCHEMA_NAME})"
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {error.validator_value}"
    if error.validator == "anyOf":
        return f"{error.instance!r} is none of: " + "; ".join(_alternative(s) for s in error.validator_value)
    return error.message


def _alternative(schema: dict) -> str:
    """One branch of an anyOf in words: 'an integer >= 16', "one of ['crop', None]"."""
    if "enum" in schema:
        return f"one of {schema['enum']}"
    kind = schema.get("type", "value")
    words = {"integer": "an integer", "number": "a number", "string": "a string", "array": "a list"}
    text = words.get(kind, f"a {kind}") if isinstance(kind, str) else " or ".join(kind)
    bounds = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))
    return " ".join([text] + [f"{op} {schema[k]}" for k, op in bounds if k in schema])


_YAML_TYPES = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None), "array": list}


def _coerce(instance, schema: dict):
    """Strings that parse (as YAML) to the type the schema wants become that value.

    Snakemake reads nested ``--config`` values with YAML's BaseLoader, so
    ``--config tiling='{size: 512}'`` arrives as the string "512".
    """
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        for key, value in instance.items():
            if key in props:
                instance[key] = _coerce(value, props[key])
        return instance
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        return [_coerce(v, schema["items"]) for v in instance]
    if isinstance(instance, str):
        wanted = schema.get("type", [])
        wanted = [wanted] if isinstance(wanted, str) else wanted
        pattern = schema.get("pattern")
        fits_string = "string" in wanted and (pattern is None or re.search(pattern, instance))
        if fits_string or not any(t in _YAML_TYPES for t in wanted):
            return instance
        try:
            value = yaml.safe_load(instance)
        except yaml.YAMLError:
            return instance
        if isinstance(value, str) and "number" in wanted:  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                return instance
        for t in wanted:
            kinds = _YAML_TYPES.get(t)
            if kinds and isinstance(value, kinds) and not (t in ("integer", "number") and isinstance(value, bool)):
                return _coerce(value, schema)
    return instance


def validate_config(config: dict) -> dict:
    """Fill defaults into ``config`` in place, check types and cross-field rules; return it."""
    _coerce(config, load_schema())
    errors = sorted(_Validator(load_schema()).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(f"config key {_key_of(first)}: {_describe(first)}{more}")
    _check_consistency(config)
    return config


def _check_consistency(cfg: dict) -> None:
    ds, split, tiling = cfg["dataset"], cfg["split"], cfg["tiling"]
    if ds["label_encoding"] == "rgb" and len(ds["palette"]) != len(ds["classes"]):
        raise ConfigError(
            f"config keys dataset.palette / dataset.classes: {len(ds['palette'])} colours for "
            f"{len(ds['classes'])} classes; give one RGB colour per class"
        )
    if len(ds["band_names"]) != len(ds["bands"]):
        raise ConfigError(
            f"config keys dataset.band_names / dataset.bands: {len(ds['band_names'])} names for "
            f"{len(ds['bands'])} bands; give one name per band read"
        )
    if ds["expected_bands"] is not None and max(ds["bands"]) > ds["expected_bands"]:
        raise ConfigError(
            f"config key dataset.bands: band {max(ds['bands'])} asked for, but dataset.expected_bands "
            f"is {ds['expected_bands']}"
        )
    if ds["background"] and len(ds["classes"]) < 2:
        raise ConfigError("config key dataset.classes: with dataset.background true at least 2 classes are needed")
    if ds["value_range"] is not None and ds["value_range"][1] <= ds["value_range"][0]:
        raise ConfigError("config key dataset.value_range: give [low, high] with high > low")
    if tiling["stride"] > tiling["size"]:
        raise ConfigError(
            f"config key tiling.stride: {tiling['stride']} is larger than tiling.size {tiling['size']}; "
            "tiles would leave gaps between them"
        )
    c = cfg["classifier"]
    if c["select_metric"] == "seg_miou" and not c["joint_segmentation"]:
        raise ConfigError(
            "config key classifier.select_metric: seg_miou scores the segmentation decoder of paper "
            "mode; set classifier.joint_segmentation true or choose cam_miou / f1"
        )
    if c["select_metric"] == "cam_miou_calibrated" and not c["bkg_candidates"]:
        raise ConfigError(
            "config key classifier.bkg_candidates: select_metric cam_miou_calibrated needs the "
            "background thresholds to try, e.g. [0.2, 0.3, 0.4, 0.5, 0.6]"
        )
    if split["method"] == "ratio" and sum(split["ratios"]) <= 0:
        raise ConfigError("config key split.ratios: the fractions must not all be 0")


def demo_configfile() -> Path:
    """config/config.yaml of the checkout atsg runs from (the demo, a preset like the others)."""
    if not DEMO_CONFIG.is_file():
        raise ConfigError(
            f"no --configfile given, and the demo config {DEMO_CONFIG} is not there (atsg was installed "
            "without its checkout); pass --configfile with a preset"
        )
    return DEMO_CONFIG


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """A new dict: ``base`` updated recursively by ``override`` (lists are replaced, as Snakemake does)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from ``path``, or a ConfigError naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def parse_assignment(text: str) -> dict:
    """``"tiling.size=512"`` -> ``{"tiling": {"size": 512}}`` (the value is read as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: write KEY=VALUE, e.g. --set tiling.size=512")
    value = yaml.safe_load(raw) if raw != "" else ""
    out: dict = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_config(
    configfiles: Iterable[str | Path] = (),
    params: str | Mapping | Iterable[str | Mapping] | None = None,
    assignments: Iterable[str] = (),
) -> dict:
    """Merge config files, JSONs/mappings of sections (as rules pass them) and KEY=VALUE overrides; validate."""
    cfg: dict = {}
    for path in configfiles:
        cfg = deep_merge(cfg, read_yaml(path))
    for part in [params] if isinstance(params, (str, Mapping)) else params or []:
        if isinstance(part, str):
            try:
                part = json.loads(part)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"--params is not valid JSON: {exc}") from None
        cfg = deep_merge(cfg, part)
    for text in assignments:
        cfg = deep_merge(cfg, parse_assignment(text))
    return validate_config(cfg)


RUN_SECTIONS = ("devices", "train", "shards")
"""Sections that only say how jobs run (GPU claims, training processes, shard counts)."""


@functools.lru_cache(maxsize=1)
def run_keys() -> dict[str, frozenset]:
    """Section -> its keys marked ``x-run: true`` in the schema: how a stage runs, not what it makes."""
    props = load_schema()["properties"]
    return {
        name: frozenset(k for k, v in sec.get("properties", {}).items() if v.get("x-run"))
        for name, sec in props.items()
        if name not in RUN_SECTIONS
    }


def artifact_settings(config: Mapping, section: str) -> dict:
    """The keys of ``section`` that define what its stage makes (every key but the ``x-run`` ones)."""
    keys = run_keys().get(section, frozenset())
    value = config[section]
    return {k: v for k, v in value.items() if k not in keys} if isinstance(value, Mapping) else value


def run_settings(config: Mapping) -> dict:
    """Every setting that only says how stages run: the run sections and each section's ``x-run`` keys."""
    out = {s: config[s] for s in RUN_SECTIONS}
    out.update({s: {k: config[s][k] for k in sorted(keys)} for s, keys in run_keys().items() if keys})
    return out


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def section_json(config: Mapping, *sections: str) -> str:
    """What a rule passes as ``params``: the artifact settings of the named sections, as canonical JSON.

    Run keys are left out, so changing them reruns nothing; they reach the stages through :func:`run_json`.
    """
    return canonical_json({s: artifact_settings(config, s) for s in sections})


def run_json(config: Mapping) -> str:
    """:func:`run_settings` as canonical JSON: passed to every stage on its command line, never as params."""
    return canonical_json(run_settings(config))


WEAK_ONLY_KEYS = ("seg_weight", "loss_warmup_iterations", "object_loss", "boundary_loss", "energy_loss", "joint_loss")
"""Settings of the segmentation section that only weak training reads (the supervised bound ignores them)."""


def supervised_section(config: Mapping) -> dict:
    """The segmentation settings the fully supervised upper bound is made from (no weak-only, no run keys)."""
    return {k: v for k, v in artifact_settings(config, "segmentation").items() if k not in WEAK_ONLY_KEYS}


def run_dir(config: Mapping) -> Path:
    """``{results_dir}/{run}``, where every artifact of the run lives."""
    return Path(config["results_dir"]) / config["run"]


def dataset_root(config: Mapping) -> Path:
    """Where the scenes are: the run's synthetic scenes, or ``dataset.root`` (a ConfigError if unset)."""
    if config["dataset"]["preset"] == "synthetic":
        return run_dir(config) / "scenes"
    if not config["dataset"]["root"]:
        raise ConfigError(
            f"config key dataset.root is not set; point it at the {config['dataset']['preset']} folder "
            "(atsg: --set dataset.root=/data/potsdam; snakemake: --config dataset='{root: /data/potsdam}')"
        )
    return Path(config["dataset"]["root"]).expanduser()
