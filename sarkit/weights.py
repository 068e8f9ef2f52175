"""Pretrained weight files, found offline: one resolver for every kind (CLIP, Inception, LPIPS, SAM, ...).

sarkit never downloads weights. A kind of weights is one ``WeightKind`` record: the CLI option and the
environment variable that name its file, the cache locations where a copy may already be, what the file is and
how to get it. Adding a kind means adding one record to ``KINDS``; the lookup and the messages are shared.

Lookup order (``locate``): the explicit path (the CLI option), else ``$ENV``, else a file the caller offers
(``fallback``, used only when it is a file), else the kind's cache locations in their order. An explicit or
environment path that is not a file is an error rather than a reason to look further, so a typo is never
hidden by a cached copy. Nothing found: one ``WeightsNotFoundError`` (exit 2) naming the option and the
variable. ``read_state_dict`` reads a file's tensors safely (safetensors, or ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import enum
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from sarkit.errors import CheckpointError, WeightsNotFoundError

__all__ = ["CacheQuery", "TorchHubFile", "PackageFile", "OpenClipCache", "WeightKind", "Source", "Found", "CLIP",
           "INCEPTION", "LPIPS_HEADS", "LPIPS_BACKBONE", "SAM", "VGG19", "KINDS", "kind", "locate", "resolve",
           "read_state_dict", "markdown_table"]


# ------------------------------------------------------------------------------------------ cache locations

@dataclass(frozen=True)
class CacheQuery:
    """What a cache is asked for: the variant of a kind that has several (open_clip model and tag), and an
    optional cache root replacing the location's default."""

    model: str = ""
    tag: str = ""
    cache_dir: str | None = None


class CacheLocation(Protocol):
    """A place where a copy of a weights file may already be on this machine."""

    def find(self, query: CacheQuery) -> Path | None:
        """The cached file when it exists, else None; never downloads."""

    def hint(self, query: CacheQuery) -> str:
        """How the user puts the file there (a clause of the not-found message, starting with "or")."""

    def describe(self) -> str:
        """Where it is, for the documentation table."""


@dataclass(frozen=True)
class TorchHubFile:
    """``torch.hub.get_dir()/checkpoints/FILENAME`` (``$TORCH_HOME/hub``, by default ``~/.cache/torch/hub``),
    where torchvision keeps the weights it downloads."""

    filename: str

    def folder(self) -> Path:
        """torch hub's checkpoints folder, read now (so ``$TORCH_HOME`` set after import counts)."""
        return Path(torch.hub.get_dir()) / "checkpoints"

    def find(self, query: CacheQuery) -> Path | None:
        """The file in the checkpoints folder, if it is there."""
        p = self.folder() / self.filename
        return p if p.is_file() else None

    def hint(self, query: CacheQuery) -> str:
        """Where to put the file."""
        return f"or put torchvision's {self.filename} in {self.folder()}"

    def describe(self) -> str:
        """The cache path with its variable."""
        return f"`$TORCH_HOME/hub/checkpoints/{self.filename}` (default `~/.cache/torch/hub/checkpoints`)"


@dataclass(frozen=True)
class PackageFile:
    """A file shipped inside an installed Python package, located without importing the package."""

    package: str
    relpath: str

    def find(self, query: CacheQuery) -> Path | None:
        """``relpath`` under the first search location of ``package`` that holds it, if the package is installed."""
        try:
            spec = importlib.util.find_spec(self.package)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        for loc in spec.submodule_search_locations:
            p = Path(loc) / self.relpath
            if p.is_file():
                return p
        return None

    def hint(self, query: CacheQuery) -> str:
        """Install the package."""
        return f"or install the {self.package} package, whose {Path(self.relpath).name} is used"

    def describe(self) -> str:
        """The file inside the package."""
        return f"`{self.relpath}` inside an installed `{self.package}` package"


def hf_hub_cache(cache_dir: str | None = None) -> Path:
    """The Hugging Face hub cache: ``cache_dir``, else ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub`` (default ``~/.cache/huggingface/hub``), read now."""
    if cache_dir:
        return Path(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(xdg) / "huggingface" / "hub"


def hub_file_names(hub: str) -> tuple[str, list[str]]:
    """(repo id, file names to try) of an open_clip ``hf_hub`` entry ("org/repo/" or "org/repo/file.bin");
    a ``.bin``/``.pth`` file is tried as ``.safetensors`` first, as open_clip does."""
    if hub.endswith("/"):
        return hub.rstrip("/"), ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    repo, filename = os.path.split(hub)
    names = [filename]
    if filename.endswith((".bin", ".pth")):
        names.insert(0, filename[:-4] + ".safetensors")
    return repo, names


@dataclass(frozen=True)
class OpenClipCache:
    """open_clip's download cache for a (model, tag): the Hugging Face hub cache for tags hosted there, or
    ``~/.cache/clip`` for tags with a plain URL. Empty ``model``/``tag`` take the query's."""

    model: str = ""
    tag: str = ""

    def wanted(self, query: CacheQuery) -> tuple[str, str]:
        """(model, tag): this location's own, else the query's."""
        return self.model or query.model, self.tag or query.tag

    def config(self, query: CacheQuery) -> dict:
        """open_clip's pretrained config of the (model, tag), ``{}`` for a tag it does not know."""
        from open_clip.pretrained import get_pretrained_cfg

        model, tag = self.wanted(query)
        return get_pretrained_cfg(model, tag) if model and tag else {}

    def find(self, query: CacheQuery) -> Path | None:
        """The cached checkpoint of the (model, tag), if it is on this machine."""
        cfg = self.config(query)
        if cfg.get("file"):
            return Path(cfg["file"]) if Path(cfg["file"]).is_file() else None
        if cfg.get("hf_hub"):
            from huggingface_hub import try_to_load_from_cache

            repo, names = hub_file_names(cfg["hf_hub"])
            for name in names:
                found = try_to_load_from_cache(repo_id=repo, filename=name,
                                               cache_dir=str(hf_hub_cache(query.cache_dir)))
                if isinstance(found, str) and os.path.isfile(found):
                    return Path(found)
        if cfg.get("url"):
            target = Path(query.cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
            if target.is_file():
                return target
        return None

    def hint(self, query: CacheQuery) -> str:
        """Put open_clip's file in its cache, or name a tag open_clip knows."""
        model, tag = self.wanted(query)
        cfg = self.config(query)
        if not cfg:
            return f"or name a tag open_clip has for {model} ({tag!r} is unknown)"
        places = [str(hf_hub_cache(query.cache_dir))] if cfg.get("hf_hub") else []
        places += [query.cache_dir or os.path.expanduser("~/.cache/clip")] if cfg.get("url") else []
        where = " or ".join(places) or "open_clip's cache"
        return f"or put open_clip's file for {model}/{tag} in {where} (not in the open_clip cache now)"

    def describe(self) -> str:
        """The two caches open_clip downloads to."""
        which = f" for {self.model}/{self.tag}" if self.model and self.tag else " for the model and tag"
        return (f"open_clip's download cache{which}: the Hugging Face hub cache (`~/.cache/huggingface/hub`, "
                f"`$HF_HUB_CACHE`, `$HF_HOME/hub`) or `~/.cache/clip`")


# ------------------------------------------------------------------------------------------------ kinds

@dataclass(frozen=True)
class WeightKind:
    """One kind of pretrained weights: how the user names its file and where a cached copy may be."""

    name: str                       # short id, e.g. "inception"
    what: str                       # subject of the messages, e.g. "FID"
    option: str                     # CLI option naming the file, e.g. "--fid-weights"
    env: str                        # environment variable naming the file, e.g. "SARKIT_FID_WEIGHTS"
    used_by: str                    # the commands that need it
    file: str                       # what the file is
    get: str                        # how to get the file on a machine with network (one line)
    cache: tuple[CacheLocation, ...] = field(default=())

    def __post_init__(self) -> None:
        if not (self.name and self.what and self.option.startswith("--") and self.env.startswith("SARKIT_")):
            raise ValueError(f"incomplete weight kind {self!r}: name, what, --option and SARKIT_ variable needed")


CLIP = WeightKind(
    name="clip", what="CLIP", option="--clip-weights", env="SARKIT_CLIP_WEIGHTS",
    used_by="`sarkit train --model pix2pix-clip`, `sarkit eval --metrics fid-clip,clip_iqa`",
    file="an open_clip checkpoint (`open_clip_model.safetensors`, `open_clip_pytorch_model.bin`, OpenAI `.pt`)",
    get="`open_clip.pretrained.download_pretrained(get_pretrained_cfg(MODEL, TAG))` downloads it and prints its path",
    cache=(OpenClipCache(),))
INCEPTION = WeightKind(
    name="inception", what="FID", option="--fid-weights", env="SARKIT_FID_WEIGHTS",
    used_by="`sarkit eval --metrics fid`",
    file="a torchvision `inception_v3` state dict (`.pt`/`.pth` or `.safetensors`)",
    get="`torch.save(torchvision.models.inception_v3(weights='IMAGENET1K_V1').state_dict(), 'inception_v3.pt')`")
LPIPS_HEADS = WeightKind(
    name="lpips-heads", what="LPIPS", option="--lpips-weights", env="SARKIT_LPIPS_WEIGHTS",
    used_by="`sarkit eval --metrics lpips`, `sarkit train --model fusion` (and `regression` with an LPIPS term)",
    file="the LPIPS v0.1 AlexNet linear heads (`lin0.model.1.weight` … `lin4.model.1.weight`)",
    get="`weights/v0.1/alex.pth` from the `lpips` wheel (`pip download --no-deps lpips`)",
    cache=(PackageFile("lpips", "weights/v0.1/alex.pth"),))
LPIPS_BACKBONE = WeightKind(
    name="lpips-backbone", what="LPIPS backbone (AlexNet)", option="--lpips-backbone", env="SARKIT_LPIPS_BACKBONE",
    used_by="`sarkit eval --metrics lpips`, `sarkit train --model fusion` (and `regression` with an LPIPS term)",
    file="a torchvision `alexnet` state dict (only `features.*` is used)",
    get="`torchvision.models.alexnet(weights='IMAGENET1K_V1')` writes it to the torch hub cache",
    cache=(TorchHubFile("alexnet-owt-7be5be79.pth"),))
SAM = WeightKind(
    name="sam", what="SAM (--sms-model sam)", option="--sam-weights", env="SARKIT_SAM_WEIGHTS",
    used_by="`sarkit eval --metrics sms --sms-model sam`",
    file="an official Segment Anything checkpoint (`sam_vit_b_01ec64.pth`, `sam_vit_l_0b3195.pth`, "
         "`sam_vit_h_4b8939.pth`)",
    get="the checkpoint links in the segment-anything repository's README; plus `pip install 'sarkit[sam]'`")
VGG19 = WeightKind(
    name="vgg19", what="The contextual loss (VGG19)", option="--vgg19-weights", env="SARKIT_VGG19_WEIGHTS",
    used_by="`sarkit train --model fusion` (the contextual loss on conv3_2 and conv4_2)",
    file="a torchvision `vgg19` state dict (only `features.*` up to conv4_2 is used)",
    get="`torchvision.models.vgg19(weights='IMAGENET1K_V1')` writes it to the torch hub cache",
    cache=(TorchHubFile("vgg19-dcbb9e9d.pth"),))

#: Every kind sarkit knows, by name.
KINDS: dict[str, WeightKind] = {k.name: k for k in (CLIP, INCEPTION, LPIPS_HEADS, LPIPS_BACKBONE, SAM, VGG19)}


def kind(name: str) -> WeightKind:
    """The kind called ``name`` (``KeyError`` naming the known ones otherwise)."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown weight kind {name!r}; known: {', '.join(KINDS)}") from None


# ---------------------------------------------------------------------------------------------- lookup

class Source(enum.Enum):
    """Where a weights file was found."""

    OPTION = "option"
    ENV = "environment"
    FALLBACK = "fallback"
    CACHE = "cache"


@dataclass(frozen=True)
class Found:
    """A weights file and where it came from."""

    path: Path
    source: Source


def missing_error(k: WeightKind, query: CacheQuery) -> WeightsNotFoundError:
    """The one message for a kind with no file: the option, the variable, then each cache location's hint."""
    hints = "".join(f", {loc.hint(query)}" for loc in k.cache)
    return WeightsNotFoundError(f"{k.what} needs local weights: pass {k.option} PATH or set {k.env}{hints} "
                                f"(sarkit never downloads weights)")


def locate(k: WeightKind, explicit: str | os.PathLike | None = None, *, query: CacheQuery = CacheQuery(),
           fallback: str | os.PathLike | None = None) -> Found:
    """explicit path → ``$ENV`` → ``fallback`` (if a file) → cache locations; else ``WeightsNotFoundError``."""
    named, source = (explicit, Source.OPTION) if explicit else (os.environ.get(k.env) or None, Source.ENV)
    if named:
        p = Path(named)
        if not p.is_file():
            raise WeightsNotFoundError(f"{k.what} weights not found: {p} (check {k.option} or {k.env})")
        return Found(p, source)
    if fallback and Path(fallback).is_file():
        return Found(Path(fallback), Source.FALLBACK)
    for loc in k.cache:
        p = loc.find(query)
        if p is not None:
            return Found(p, Source.CACHE)
    raise missing_error(k, query)


def resolve(k: WeightKind, explicit: str | os.PathLike | None = None, *, query: CacheQuery = CacheQuery(),
            fallback: str | os.PathLike | None = None) -> Path:
    """The weights file of kind ``k`` (``locate``'s path)."""
    return locate(k, explicit, query=query, fallback=fallback).path


# --------------------------------------------------------------------------------------------- reading

def _first_line(exc: Exception) -> str:
    """The first line of an exception's message, at most 160 characters (its type when empty)."""
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (by suffix) or of a ``torch.load(weights_only=True)`` state dict, on the CPU;
    a ``{"state_dict": …}`` wrapper is opened and a ``module.`` key prefix removed. ``CheckpointError`` otherwise."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch / safetensors raise several types for foreign or truncated files
        raise CheckpointError(f"cannot read weights file {path}: {_first_line(exc)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"weights file {path} does not hold a state dict")
    for key, value in state.items():
        if not (isinstance(key, str) and isinstance(value, torch.Tensor)):
            raise CheckpointError(f"weights file {path} does not hold a state dict "
                                  f"({key!r} is a {type(value).__name__}, not a tensor)")
    return {k.removeprefix("module."): v for k, v in state.items()}


# ------------------------------------------------------------------------------------------------ docs

def markdown_table(kinds: tuple[WeightKind, ...] | None = None) -> str:
    """The table of docs/weights.md: a row per kind (option, variable, cache location, file, how to get it)."""
    rows = ["| kind | used by | option | environment variable | cache location | the file | how to get it |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for k in kinds or tuple(KINDS.values()):
        cache = "; ".join(loc.describe() for loc in k.cache) or "none"
        rows.append(f"| {k.name} | {k.used_by} | `{k.option} FILE` | `${k.env}` | {cache} | {k.file} | {k.get} |")
    return "\n".join(rows)
