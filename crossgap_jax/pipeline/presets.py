"""The authors' per-backbone configurations (:class:`Preset`, frozen and typed), with their
keys, overridable from the CLI (parsed once there into a :class:`Preset`).

Values from the paper (see PAPER.md): AdamW lr 2e-2, weight decay 0.01, batch 64, OTI 150
steps with R = 1 for every backbone, OVI 1000 steps with P per backbone, template
``"a photo of {}"`` for OTI, seed 0.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from crossgap_jax.data import ASSET_DIR
from crossgap_jax.inversion import ExecutionSettings, InversionSettings, OTISettings, OVISettings
from crossgap_jax.models import list_aliases

#: The shipped demo model (a CLIP trained here, ``python -m crossgap_jax.train.demo_caltech``):
#: the weights of the ``demo`` preset and of ``--pretrained demo``.
DEMO_CHECKPOINT = os.path.join(ASSET_DIR, "demo_caltech101.safetensors")

# The defaults come from the inversion settings (the one source of the paper's values).
_OTI, _OVI, _EXECUTION = OTISettings(), OVISettings(), ExecutionSettings()

@dataclasses.dataclass(frozen=True)
class Preset:
    """A backbone's settings, typed and frozen. Its defaults are those of the inversion
    settings (:class:`~crossgap_jax.inversion.config.OTISettings`, ``OVISettings``,
    ``ExecutionSettings``): one source of defaults; :meth:`inversion` / :meth:`execution`
    give the typed settings an inversion runs with.

    Field names are the authors' configuration keys (they appear in every record and
    table). Every field is checked when a preset is made: a wrong type or an out-of-range
    value raises with the field's name and what it accepts.

    Attributes:
        name: the preset's name (``clip_vitb32``, ...).
        model: architecture name (:func:`crossgap_jax.models.list_architectures`).
        pretrained: checkpoint tag / source for :func:`~crossgap_jax.models.load_clip`
            (``"openai"``, ``"demo"``, ...), or None.
        ovi_num_pseudo_tokens: OVI's P (the authors' value per backbone).
        learning_rate, weight_decay: AdamW of OTI and OVI (paper: 2e-2, 0.01).
        batch_size: items per compiled inversion / encoding batch (>= 1).
        oti_steps, ovi_steps: optimisation steps (paper: 150 and 1000).
        num_pseudo_tokens: OTI's R (1 for every backbone in the paper).
        template_sentence: OTI's template, one ``{}`` (paper: ``"a photo of {}"``).
        seed: inversion init and subset seed (>= 0).
        isoclip_k: IsoCLIP's ``(k_top, k_bottom)`` override (CLI ``--isoclip-k``), or None:
            the published value of the backbone (:func:`isoclip_k`).

    Raises (on construction):
        TypeError: a field of the wrong type (``oti_steps="50"``, ``seed=True``, ...).
        ValueError: an out-of-range value (``batch_size=0``, a template without ``{}``).
    """

    name: str
    model: str
    pretrained: str | None = None
    ovi_num_pseudo_tokens: int = _OVI.num_tokens
    learning_rate: float = _OTI.learning_rate
    weight_decay: float = _OTI.weight_decay
    batch_size: int = _EXECUTION.batch_size
    oti_steps: int = _OTI.steps
    ovi_steps: int = _OVI.steps
    num_pseudo_tokens: int = _OTI.num_tokens
    template_sentence: str = _OTI.template
    seed: int = _OTI.seed
    isoclip_k: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for f in ("name", "model"):
            if not isinstance(getattr(self, f), str) or not getattr(self, f):
                raise TypeError(f"preset field {f!r} must be a non-empty string, got "
                                f"{getattr(self, f)!r}")
        if self.pretrained is not None and not isinstance(self.pretrained, str):
            raise TypeError(f"preset field 'pretrained' must be a string or None, got "
                            f"{self.pretrained!r}")
        for f in (*_POSITIVE_INTS, "seed"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"preset field {f!r} must be an int, got {v!r} "
                                f"({type(v).__name__})")
            low = 0 if f == "seed" else 1
            if v < low:
                raise ValueError(f"preset field {f!r} must be >= {low}, got {v}")
        for f in ("learning_rate", "weight_decay"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"preset field {f!r} must be a finite number, got {v!r}")
            if v < 0 or (f == "learning_rate" and v == 0):
                raise ValueError(f"preset field {f!r} must be "
                                 f"{'> 0' if f == 'learning_rate' else '>= 0'}, got {v}")
            object.__setattr__(self, f, float(v))
        if not isinstance(self.template_sentence, str) or \
                self.template_sentence.count("{}") != 1:
            raise ValueError("preset field 'template_sentence' must contain exactly one "
                             f"'{{}}', got {self.template_sentence!r}")
        if self.isoclip_k is not None:
            object.__setattr__(self, "isoclip_k", check_isoclip_k(self.isoclip_k))
        self.inversion("oti")  # the inversion settings' own checks
        self.inversion("ovi")

    def inversion(self, method: str, *, record_steps: Sequence[int] = (),
                  loss_reduction: str = "per_example") -> InversionSettings:
        """The typed settings of ``method``'s inversion (``"oti"``: steps, R, template;
        ``"ovi"``: steps, P; both: AdamW, seed) with ``record_steps`` / ``loss_reduction``
        (:mod:`crossgap_jax.inversion.config`).

        Raises:
            ValueError: an unknown method, or a value the inversion settings reject.
        """
        common = dict(learning_rate=self.learning_rate, weight_decay=self.weight_decay,
                      seed=self.seed, record_steps=tuple(record_steps),
                      loss_reduction=loss_reduction)
        if method == "oti":
            return OTISettings(steps=self.oti_steps, num_tokens=self.num_pseudo_tokens,
                               template=self.template_sentence, **common)
        if method == "ovi":
            return OVISettings(steps=self.ovi_steps, num_tokens=self.ovi_num_pseudo_tokens,
                               **common)
        raise ValueError(f"method must be 'oti' or 'ovi', got {method!r}")

    def execution(self) -> ExecutionSettings:
        """How inversions and encodings run (the batch size; other options default)."""
        return ExecutionSettings(batch_size=self.batch_size)

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The field names (the keys :meth:`replace` takes)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **overrides: Any) -> Preset:
        """This preset with ``overrides`` applied (``None`` values are skipped: "not given").

        Raises:
            KeyError: an unknown field (the message lists the fields).
            TypeError / ValueError: a mistyped or out-of-range value (names the field).
        """
        unknown = sorted(set(overrides) - set(self.fields()))
        if unknown:
            raise KeyError(f"unknown preset key(s) {', '.join(map(repr, unknown))}; keys: "
                           f"{', '.join(sorted(self.fields()))}")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items()
                                            if v is not None})

    def as_dict(self) -> dict[str, Any]:
        """The JSON-able record form: every field, with ``"preset"`` = :attr:`name`."""
        d = dataclasses.asdict(self)
        d["preset"] = d.pop("name")
        if d["isoclip_k"] is not None:
            d["isoclip_k"] = list(d["isoclip_k"])
        return d

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> Preset:
        """The preset of a record / run configuration (:meth:`as_dict`; other keys of a
        run's configuration are ignored), strictly typed.

        Raises:
            KeyError: no ``"preset"`` / ``"model"`` key.
            TypeError / ValueError: see the class.
        """
        missing = [k for k in ("preset", "model") if k not in cfg]
        if missing:
            raise KeyError(f"a preset configuration needs {missing}; got keys {sorted(cfg)}")
        kw = {k: cfg[k] for k in cls.fields() if k != "name" and k in cfg}
        if kw.get("isoclip_k") is not None:
            kw["isoclip_k"] = tuple(kw["isoclip_k"])
        return cls(name=cfg["preset"], **kw)


_POSITIVE_INTS = ("ovi_num_pseudo_tokens", "batch_size", "oti_steps", "ovi_steps",
                  "num_pseudo_tokens")

# The authors' per-backbone values (PAPER.md); everything else is the Preset default.
PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("clip_vitb32", "ViT-B/32", "openai", ovi_num_pseudo_tokens=1),
    Preset("clip_vitl14", "ViT-L/14", "openai", ovi_num_pseudo_tokens=4),
    Preset("openclip_vitb32", "ViT-B-32", "datacomp_xl_s13b_b90k", ovi_num_pseudo_tokens=1),
    Preset("openclip_vitl14", "ViT-L-14", "datacomp_xl_s13b_b90k", ovi_num_pseudo_tokens=2),
    Preset("siglip_vitb16", "SigLIP-ViT-B-16", "webli", ovi_num_pseudo_tokens=4),
    Preset("slip_vitb16", "SLIP-ViT-B-16", "slip", ovi_num_pseudo_tokens=1),
    Preset("slip_vitl16", "SLIP-ViT-L-16", "slip", ovi_num_pseudo_tokens=2),
    # SigLIP 2 B/16 (IsoCLIP's and Herzog & Wang's backbone): the Cross-the-Gap paper gives
    # no OVI P for it, so P is the SigLIP B/16 value (same graph and patch count).
    Preset("siglip2_vitb16", "SigLIP2-ViT-B-16", "webli", ovi_num_pseudo_tokens=4),
    # PE-Core (IsoCLIP's backbone; the Cross-the-Gap paper ran none: OVI's P is the default).
    Preset("pecore_vitb16", "PE-Core-B-16", "meta"),
    # The shipped demo model (DEMO_CHECKPOINT, a CLIP trained here; crossgap_jax.demo) with
    # the paper's OTI/OVI settings.
    Preset("demo", "crossgap-caltech", "demo", ovi_num_pseudo_tokens=1),
)}


def list_presets() -> list[str]:
    return list(PRESETS)


def preset(name: str, **overrides: Any) -> Preset:
    """Preset ``name`` with typed ``overrides`` applied (:meth:`Preset.replace`).

    Raises:
        KeyError: unknown preset (the message lists the known ones) or unknown field.
        TypeError / ValueError: a mistyped or out-of-range override (names the field).
    """
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides)


def parse_overrides(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides given as text (``{"oti_steps": "50"}``) parsed into their fields' types;
    typed values pass through, ``None`` means "not given".

    Raises:
        KeyError: an unknown field (the message lists the fields).
        ValueError: text that does not parse as the field's type (names the field).
    """
    types = {f.name: f.type for f in dataclasses.fields(Preset)}
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if k not in types:
            raise KeyError(f"unknown preset key {k!r}; keys: {', '.join(sorted(types))}")
        if isinstance(v, str) and types[k] in ("int", "float"):
            try:
                v = int(v) if types[k] == "int" else float(v)
            except ValueError:
                kind = "an int" if types[k] == "int" else "a number"
                raise ValueError(f"preset key {k!r} must be {kind}, got {v!r}") from None
        out[k] = v
    return out


def get_preset(name: str, **overrides: Any) -> dict[str, Any]:
    """The resolved configuration of preset ``name`` as a dict (:meth:`Preset.as_dict`)
    with ``overrides`` applied (text values parsed by :func:`parse_overrides`).

    The typed form is :func:`preset`; this dict is what run records hold.

    Raises:
        KeyError: unknown preset (the message lists the known ones) or unknown override key.
        TypeError / ValueError: a mistyped or out-of-range override (names the field).
    """
    return preset(name, **parse_overrides(overrides)).as_dict()


# IsoCLIP's (k_top, k_bottom) as the IsoCLIP authors ran them (PAPER.md, "IsoCLIP, exactly"),
# keyed by (architecture, pretrained tag). Task "image": image retrieval and NCM
# classification; "text": text retrieval. A missing task was not published.
ISOCLIP_K: dict[tuple[str, str], dict[str, tuple[int, int]]] = {
    ("ViT-B/32", "openai"): {"image": (150, 50), "text": (20, 100)},
    ("ViT-B/16", "openai"): {"image": (200, 50), "text": (10, 50)},
    ("ViT-L/14", "openai"): {"image": (250, 200), "text": (10, 300)},
    ("ViT-B-32", "datacomp_xl_s13b_b90k"): {"image": (50, 50)},
    ("ViT-B-16", "datacomp_xl_s13b_b90k"): {"image": (100, 100), "text": (2, 150)},
    # IsoCLIP's exp_img-img_retrieval/siglipv2_b16_img_retrieval.sh (open_clip
    # ViT-B-16-SigLIP2, webli; our architecture name; isoclip_k resolves open_clip's alias).
    ("SigLIP2-ViT-B-16", "webli"): {"image": (350, 50)},
    ("PE-Core-B-16", "meta"): {"image": (300, 50)},
}
# open_clip's names of the OpenAI architectures (same weights with pretrained "openai").
_OPENAI_ALIASES = {"ViT-B-32": "ViT-B/32", "ViT-B-32-quickgelu": "ViT-B/32",
                   "ViT-B-16": "ViT-B/16", "ViT-L-14": "ViT-L/14",
                   "ViT-L-14-quickgelu": "ViT-L/14"}


def check_isoclip_k(value: Any) -> tuple[int, int]:
    """``(k_top, k_bottom)`` from a pair of non-negative integers.

    Raises:
        ValueError: anything else (the message shows the expected form).
    """
    try:
        top, bottom = value
    except (TypeError, ValueError):
        raise ValueError(f"isoclip_k must be TOP,BOTTOM (two non-negative integers, e.g. "
                         f"150,50), got {value!r}") from None
    for k in (top, bottom):
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"isoclip_k must be TOP,BOTTOM (two non-negative integers, e.g. "
                             f"150,50), got {value!r}")
    return int(top), int(bottom)


def isoclip_k(p: Preset, task: str) -> tuple[tuple[int, int], str]:
    """IsoCLIP's ``(k_top, k_bottom)`` for a run's preset and a task kind.

    Args:
        p: the run's preset (as loaded: ``model``, ``pretrained``) with the optional
            override ``isoclip_k`` (checked when the preset was made).
        task: ``"image"`` (image retrieval, NCM classification) or ``"text"`` (text
            retrieval).

    Returns:
        ``((k_top, k_bottom), source)``; ``source`` says where the values came from.

    Raises:
        ValueError: no override and no published value for this backbone and task (the
            message asks for ``--isoclip-k TOP,BOTTOM``; values are never guessed).
    """
    if task not in ("image", "text"):
        raise ValueError(f"IsoCLIP task must be 'image' or 'text', got {task!r}")
    if p.isoclip_k is not None:
        return p.isoclip_k, "--isoclip-k"
    model, pretrained = p.model, p.pretrained
    model = list_aliases().get(model, model)  # open_clip's "ViT-B-16-SigLIP2"
    key = (_OPENAI_ALIASES.get(model, model) if pretrained == "openai" else model, pretrained)
    published = ISOCLIP_K.get(key, {})
    if task not in published:
        weights = f"{model} ({pretrained})" if pretrained else f"{model} (a local checkpoint)"
        only = " (only image-task values)" if published else ""
        raise ValueError(
            f"IsoCLIP needs (k_top, k_bottom) for {task} tasks: pass --isoclip-k TOP,BOTTOM; "
            f"its authors published none for {weights}{only}, only for "
            f"{', '.join(f'{m} ({p})' for m, p in ISOCLIP_K)}")
    return published[task], f"published for {key[0]} ({key[1]})"
