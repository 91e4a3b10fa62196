"""Train the tiny CLIP models shipped as ``toy`` and ``toy-large``, on CPU, deterministically.

Usage::

    python scripts/train_toy_clip.py searchengine/toy/assets/toy --size toy
    python scripts/train_toy_clip.py searchengine/toy/assets/toy-large --size toy-large

The output folder is an open_clip hub-format model (``open_clip_config.json`` plus fp16
``open_clip_model.safetensors``) that ``open_clip.create_model_and_transforms("local-dir:DIR")``
loads. The model and its preprocess transform are built through that very loader before
training, so training sees images exactly as the search engine will: photo-sized renders of
the toy world (half of them round-tripped through JPEG) passed through the model's preprocess.

Determinism: fixed seeds for the world, captions and weights,
``torch.use_deterministic_algorithms(True)`` and a fixed torch thread count (``--threads``,
default 2). Re-running with the same arguments on the same machine and library versions
gives the same weights; other CPUs or thread counts may differ in the last bits.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from searchengine.scoring import with_prefix
from searchengine.toy import world as toyworld

# Token embedding rows dominate size (49408 x text width x 2 bytes in fp16), so the text
# towers stay narrow; the image tower is where "large" spends its budget.
ARCHS: dict[str, dict[str, object]] = {
    "toy": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 96, "layers": 3,
                       "head_width": 32, "mlp_ratio": 4.0},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2,
                     "layers": 2},
    },
    "toy-large": {
        "embed_dim": 96,
        "vision_cfg": {"image_size": 96, "patch_size": 12, "width": 160, "layers": 4,
                       "head_width": 32, "mlp_ratio": 4.0},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 96, "heads": 3,
                     "layers": 3},
    },
}  # fmt: skip
# "squash" keeps the whole frame, so objects in the corners are never cropped away.
PREPROCESS_CFG = {
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "squash",
}
DEFAULTS = {"toy": {"steps": 800, "images": 12000}, "toy-large": {"steps": 1600, "images": 16000}}
PHOTO_SIZE = (640, 480)
CHECK_SEED = 999  # quick held-out check at the end; the full evaluation uses other seeds


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on."""

    size: str
    out_dir: Path
    steps: int
    images: int
    seed: int
    batch_size: int
    lr: float
    threads: int
    bf16: bool


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse the command line into a ``TrainConfig``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="model folder to write")
    parser.add_argument("--size", choices=sorted(ARCHS), default="toy")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: per size)")
    parser.add_argument("--images", type=int, help="training images (default: per size)")
    parser.add_argument("--seed", type=int, default=1, help="world, caption and init seed")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (fixed)")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    args = parser.parse_args(argv)
    if args.batch_size % 2:
        parser.error("--batch-size must be even: batches hold pairs of twin scenes")
    return TrainConfig(
        size=args.size,
        out_dir=args.out_dir,
        steps=args.steps or DEFAULTS[args.size]["steps"],
        images=args.images or DEFAULTS[args.size]["images"],
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
        threads=args.threads,
        bf16=not args.fp32,
    )


def make_deterministic(seed: int, threads: int) -> None:
    """Fix every source of randomness and the thread count."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def build_model(cfg: TrainConfig) -> tuple[torch.nn.Module, Callable, Callable]:
    """Write the config and build model, preprocess and tokenizer through open_clip's loader.

    Old weights are removed first: the loader would otherwise pick them up.
    """
    if cfg.out_dir.exists():
        shutil.rmtree(cfg.out_dir)
    cfg.out_dir.mkdir(parents=True)
    config = {"model_cfg": ARCHS[cfg.size], "preprocess_cfg": PREPROCESS_CFG}
    (cfg.out_dir / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    name = f"local-dir:{cfg.out_dir.resolve()}"
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    return model, preprocess, open_clip.get_tokenizer(name)


def training_scene(seed: int, index: int) -> toyworld.Scene:
    """Scene ``index`` of the training world: even indices are fresh, odd ones a twin.

    A twin differs from its partner in one way a caption can tell (see ``perturb``), and
    batches keep twins together, so the loss must read positions and which attribute goes
    with which object. Without twins most retrieval errors were the right objects at the
    wrong positions: random batches rarely contain such near misses.
    """
    base = toyworld.sample_scene(np.random.default_rng((seed, index - index % 2)))
    if index % 2 == 0:
        return base
    return perturb(base, np.random.default_rng((seed, index)))


_EDITS = ("move", "swap_positions", "swap_colors", "size", "color", "shape", "count")
_EDIT_WEIGHTS = (0.3, 0.15, 0.1, 0.1, 0.1, 0.1, 0.15)
_CHOICES = {"size": toyworld.SIZES, "color": tuple(toyworld.COLORS), "shape": toyworld.SHAPES}


def perturb(scene: toyworld.Scene, rng: np.random.Generator) -> toyworld.Scene:
    """A near miss of ``scene``: one caption-visible edit, new background and rendering."""
    objects = list(scene.objects)
    edit = _EDITS[rng.choice(len(_EDITS), p=_EDIT_WEIGHTS)]
    if edit == "swap_positions" and len(objects) == 2:
        a, b = objects
        objects = [replace(a, position=b.position), replace(b, position=a.position)]
    elif edit == "swap_colors" and len(objects) == 2 and objects[0].color != objects[1].color:
        a, b = objects
        objects = [replace(a, color=b.color), replace(b, color=a.color)]
    elif edit in _CHOICES:
        k = int(rng.integers(len(objects)))
        others = [c for c in _CHOICES[edit] if c != getattr(objects[k], edit)]
        objects[k] = replace(objects[k], **{edit: others[rng.integers(len(others))]})
    elif edit == "count" and len(objects) == 2:
        objects.pop(int(rng.integers(2)))
    elif edit == "count":
        extra = toyworld.sample_scene(rng).objects[0]
        free = [p for p in toyworld.POSITIONS if p != objects[0].position]
        objects.append(replace(extra, position=free[rng.integers(len(free))]))
    else:  # "move", and the fallback when an edit does not apply to this scene
        moved = objects
        while moved == objects:
            picks = rng.choice(len(toyworld.POSITIONS), size=len(objects), replace=False)
            moved = [
                replace(o, position=toyworld.POSITIONS[p])
                for o, p in zip(objects, picks, strict=True)
            ]
        objects = moved
    background = toyworld.BACKGROUNDS[rng.integers(len(toyworld.BACKGROUNDS))]
    return toyworld.Scene(tuple(objects), background, int(rng.integers(2**31)))


def _render_one(args: tuple[int, int, Callable]) -> tuple[torch.Tensor, toyworld.Scene]:
    seed, index, preprocess = args
    scene = training_scene(seed, index)
    image = toyworld.render(scene, PHOTO_SIZE)
    if index % 2 == 0:
        # Most photos are JPEGs: let the model see compression artefacts too.
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        image = Image.open(buffer).convert("RGB")
    return preprocess(image).to(torch.float16), scene


def render_dataset(
    seed: int, count: int, preprocess: Callable, workers: int = 2
) -> tuple[torch.Tensor, list[toyworld.Scene]]:
    """Render ``count`` scenes at photo size and preprocess them, in parallel.

    Each item depends only on ``(seed, index)``, so the worker count does not change data.
    Rendering at photo size and downscaling costs ~5 ms an image; the tensors are cached
    in memory for the whole run instead of rendering fresh images every step.
    Stored as fp16 to halve memory; the rounding is far below what the models resolve.
    """
    jobs = [(seed, i, preprocess) for i in range(count)]
    # spawn, not fork: forking after torch has started its thread pool can deadlock.
    with multiprocessing.get_context("spawn").Pool(workers, _init_worker) as pool:
        results = pool.map(_render_one, jobs, chunksize=256)
    return torch.stack([r[0] for r in results]), [r[1] for r in results]


def _init_worker() -> None:
    torch.set_num_threads(1)


_SHAPE_ID = {s: i for i, s in enumerate(toyworld.SHAPES)}
_ATTR_IDS = (
    {c: i for i, c in enumerate(toyworld.COLORS)},
    {s: i for i, s in enumerate(toyworld.SIZES)},
    {p: i for i, p in enumerate(toyworld.POSITIONS)},
)


def encode_objects(scenes: Sequence[toyworld.Scene]) -> np.ndarray:
    """Objects as ``[n, 2, 4]`` ints (shape, color, size, position); ``-2`` = no object."""
    table = np.full((len(scenes), 2, 4), -2, dtype=np.int64)
    for i, scene in enumerate(scenes):
        for j, obj in enumerate(scene.objects):
            attrs = (obj.color, obj.size, obj.position)
            table[i, j, 0] = _SHAPE_ID[obj.shape]
            table[i, j, 1:] = [ids[a] for a, ids in zip(attrs, _ATTR_IDS, strict=True)]
    return table


def encode_mentions(captions: Sequence[Sequence[toyworld.Mention]]) -> np.ndarray:
    """Mentions as ``[n, 2, 4]`` ints; ``-1`` = attribute not said, all ``-1`` = no mention."""
    table = np.full((len(captions), 2, 4), -1, dtype=np.int64)
    for i, mentions in enumerate(captions):
        for j, m in enumerate(mentions):
            attrs = (m.color, m.size, m.position)
            table[i, j, 0] = _SHAPE_ID[m.shape]
            table[i, j, 1:] = [
                -1 if a is None else ids[a] for a, ids in zip(attrs, _ATTR_IDS, strict=True)
            ]
    return table


def truth_matrix(objects: np.ndarray, mentions: np.ndarray) -> torch.Tensor:
    """``[images, captions]`` bool: caption true of image (vectorised ``scene_matches``).

    Knowing every true pair lets the loss treat "a red circle" as matching all images with
    a red circle in the batch instead of pushing them apart as false negatives.
    """
    o = objects[:, None, :, None, :]  # image, -, object, -, attr
    m = mentions[None, :, None, :, :]  # -, caption, -, mention, attr
    said = m != -1
    hit = np.all(~said | (m == o), axis=-1) & (o[..., 0] >= 0)  # [img, cap, obj, mention]
    hit |= ~said.any(axis=-1)  # an absent second mention is satisfied by anything
    straight = hit[:, :, 0, 0] & hit[:, :, 1, 1]
    crossed = hit[:, :, 1, 0] & hit[:, :, 0, 1]
    return torch.from_numpy(straight | crossed)


def multi_positive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    scale: torch.Tensor,
    truth: torch.Tensor,
) -> torch.Tensor:
    """Symmetric InfoNCE whose targets spread evenly over every true pair."""
    logits = scale * image_features @ text_features.T
    target = truth.float()
    loss_i = F.cross_entropy(logits, target / target.sum(1, keepdim=True))
    loss_t = F.cross_entropy(logits.T, (target / target.sum(0, keepdim=True)).T)
    return (loss_i + loss_t) / 2


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with no weight decay on gains, biases, embeddings and the logit scale."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:  # frozen (none in the shipped configs)
            continue
        skip = param.ndim < 2 or "embedding" in name or "logit_scale" in name
        (no_decay if skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over 5% of the steps, then cosine decay to zero."""
    warmup = max(1, cfg.steps // 20)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


# CLIPScore reranking prefixes every query with "A photo depicts "; half the training
# captions carry the prefix so the models read both forms the same way.
PREFIX_FRACTION = 0.5


class CaptionSampler:
    """Draws a random true caption per image and tokenizes it (with a cache).

    A ``PREFIX_FRACTION`` of the captions get CLIPScore's prefix, so a model scores
    "A photo depicts a red circle" as it scores "a red circle".
    """

    def __init__(self, scenes: Sequence[toyworld.Scene], tokenizer: Callable) -> None:
        self.scenes = scenes
        self.tokenizer = tokenizer
        self.cache: dict[str, torch.Tensor] = {}

    def batch(
        self, indices: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Token ids ``[b, context]`` and encoded mentions ``[b, 2, 4]`` for ``indices``."""
        mentions = [toyworld.random_mentions(self.scenes[i], rng) for i in indices]
        prefixed = rng.random(len(mentions)) < PREFIX_FRACTION
        texts = [
            with_prefix(toyworld.describe(m)) if p else toyworld.describe(m)
            for m, p in zip(mentions, prefixed, strict=True)
        ]
        missing = sorted({t for t in texts if t not in self.cache})
        if missing:
            self.cache.update(zip(missing, self.tokenizer(missing), strict=True))
        return torch.stack([self.cache[t] for t in texts]), encode_mentions(mentions)


def train(
    model: torch.nn.Module,
    images: torch.Tensor,
    scenes: list[toyworld.Scene],
    tokenizer: Callable,
    cfg: TrainConfig,
) -> None:
    """Contrastive training with multi-positive targets; prints progress."""
    objects = encode_objects(scenes)
    sampler = CaptionSampler(scenes, tokenizer)
    optimizer = make_optimizer(model, cfg)
    order_rng = np.random.default_rng((cfg.seed, 1))
    order = _twin_order(order_rng, len(scenes))
    cursor, started, running = 0, time.monotonic(), 0.0
    model.train()
    for step in range(cfg.steps):
        if cursor + cfg.batch_size > len(order):
            order, cursor = _twin_order(order_rng, len(scenes)), 0
        idx = order[cursor : cursor + cfg.batch_size]
        cursor += cfg.batch_size
        tokens, mentions = sampler.batch(idx, np.random.default_rng((cfg.seed, 2, step)))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        # bf16 autocast: ~1.35x faster on CPUs with AVX512-BF16, same accuracy here.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            image_features, text_features, scale = model(images[idx].float(), tokens)
        truth = truth_matrix(objects[idx], mentions)
        loss = multi_positive_loss(image_features.float(), text_features.float(), scale, truth)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # as in CLIP: cap the temperature
        running = 0.9 * running + 0.1 * loss.item() if step else loss.item()
        if step % 25 == 0 or step == cfg.steps - 1:
            elapsed = time.monotonic() - started
            print(
                f"step {step + 1}/{cfg.steps} loss {running:.3f} "
                f"scale {scale.item():.1f} {elapsed:.0f}s",
                flush=True,
            )


def _twin_order(rng: np.random.Generator, count: int) -> np.ndarray:
    """A shuffled epoch in which every twin directly follows its partner."""
    pairs = rng.permutation(count // 2)
    return np.stack([2 * pairs, 2 * pairs + 1], axis=1).reshape(-1)


def save_weights(model: torch.nn.Module, out_dir: Path) -> Path:
    """Store the weights as fp16 safetensors (half the bytes; toy models need no fp32)."""
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    path = out_dir / "open_clip_model.safetensors"
    save_file(state, str(path), metadata={"format": "pt"})
    return path


@torch.no_grad()
def quick_check(out_dir: Path, seed: int, count: int = 500) -> tuple[float, float]:
    """Reload the saved folder the way the package does; held-out t2i R@1 (plain, prefixed)."""
    name = f"local-dir:{out_dir.resolve()}"
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    scenes = [toyworld.sample_scene(np.random.default_rng((seed, i))) for i in range(count)]
    images = torch.stack([preprocess(toyworld.render(s, PHOTO_SIZE)) for s in scenes])
    image_features = model.encode_image(images, normalize=True)
    recalls = []
    for form in (str, with_prefix):
        captions = tokenizer([form(toyworld.caption(s)) for s in scenes])
        text_features = model.encode_text(captions, normalize=True)
        best = (text_features @ image_features.T).argmax(dim=1)
        recalls.append(float((best == torch.arange(count)).float().mean()))
    return recalls[0], recalls[1]


def main(argv: Sequence[str] | None = None) -> int:
    """Train one model size and write it to the output folder."""
    cfg = parse_args(argv)
    make_deterministic(cfg.seed, cfg.threads)
    started = time.monotonic()
    model, preprocess, tokenizer = build_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    print(f"{cfg.size}: {params / 1e6:.2f}M parameters; rendering {cfg.images} images", flush=True)
    images, scenes = render_dataset(cfg.seed, cfg.images, preprocess)
    print(f"rendered in {time.monotonic() - started:.0f}s", flush=True)
    train(model, images, scenes, tokenizer, cfg)
    path = save_weights(model, cfg.out_dir)
    minutes = (time.monotonic() - started) / 60
    # CPU time of the training process (all its threads; the render workers excluded):
    # on a shared machine, CPU minutes / threads is what the run takes on idle cores.
    cpu = time.process_time() / 60
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {minutes:.1f} min "
        f"({cpu:.1f} CPU min on {cfg.threads} threads)"
    )
    plain, prefixed = quick_check(cfg.out_dir, CHECK_SEED)
    print(
        f"quick held-out check (seed {CHECK_SEED}): t2i R@1 {plain:.3f}, "
        f"with the CLIPScore prefix {prefixed:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
