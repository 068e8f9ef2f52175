"""CLIP-IQA (Wang, Chan and Loy, "Exploring CLIP for Assessing the Look and Feel of Images", AAAI 2023): a
no-reference perceptual quality score from CLIP's image and text encoders.

For an image x and antonym prompt pairs (p_k, n_k), k = 1…K:

    s_k(x) = exp(100·cos(f(x), g(p_k))) / (exp(100·cos(f(x), g(p_k))) + exp(100·cos(f(x), g(n_k))))
    CLIP-IQA(x) = (1/K) Σ_k s_k(x)

with f the image encoder and g the text encoder of one open_clip model (embeddings L2-normalised; 100 = CLIP's
logit scale, fixed as in the method). ``PROMPT_PAIRS`` are the method's quality pairs: "Good photo." / "Bad
photo." (the paper's overall quality pair) and the degradation-attribute pairs of its official configuration
(brightness, sharpness, noisiness, colourfulness, contrast), each written with its better-quality prompt first,
so that the noise pair reads "Clean photo." / "Noisy photo." (the configuration lists "Noisy photo." first
because it scores noisiness). Every pair's mean probability is reported as well; the first pair alone is the
paper's quality score.

Differences from the official code: open_clip models (``--clip-model``, default ViT-B-32, weights offline from
``--clip-weights`` / ``$SARKIT_CLIP_WEIGHTS``) instead of OpenAI's RN50 evaluated at the image's own size; the
image is resized (bicubic, antialiased) to the encoder's input size and standardised with its mean/std
(``sarkit.models.clip.clip_preprocess``), as torchmetrics' CLIP-IQA does.

The image is the RGB view ``fid.to_rgb`` of the prediction in the fixed ranges (optical B4, B3, B2; SAR (VV, VH,
(VV + VH)/2)), nodata 0. CLIP saw photographs: SAR scores are comparable only with other SAR scores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from sarkit.eval.options import EvalOptions
    from sarkit.eval.sources import Block
    from sarkit.raster.norm import Normalization
    from sarkit.reporting import Reporter


@dataclass(frozen=True)
class PromptPair:
    """An antonym pair: the better-quality prompt and its opposite."""

    positive: str
    negative: str


#: The method's quality prompt pairs, better side first (see the module docstring).
PROMPT_PAIRS: tuple[PromptPair, ...] = (
    PromptPair("Good photo.", "Bad photo."),
    PromptPair("Bright photo.", "Dark photo."),
    PromptPair("Sharp photo.", "Blurry photo."),
    PromptPair("Clean photo.", "Noisy photo."),
    PromptPair("Colorful photo.", "Dull photo."),
    PromptPair("High contrast photo.", "Low contrast photo."),
)
#: The factor of the cosine similarities before the softmax over each pair.
LOGIT_SCALE = 100.0


def pair_probabilities(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """(N, D) image and (2K, D) text embeddings (positive, negative, positive, …) → (N, K) probability of the
    positive prompt: softmax over each pair of ``LOGIT_SCALE``·cos."""
    img = F.normalize(image_emb.float(), dim=-1)
    txt = F.normalize(text_emb.float(), dim=-1)
    logits = LOGIT_SCALE * img @ txt.t()
    return logits.view(logits.shape[0], -1, 2).softmax(dim=-1)[..., 0]


class ClipIqa:
    """An open_clip model with the prompt pairs' text embeddings computed once; ``pair_scores`` and
    ``__call__`` score (N, 3, H, W) RGB images in [0, 1]."""

    def __init__(self, model: Any, tokenizer: Any, pairs: Sequence[PromptPair] = PROMPT_PAIRS,
                 device: str | torch.device = "cpu", name: str = "", weights: str = "") -> None:
        from sarkit.models.clip import preprocess_stats

        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.pairs = tuple(pairs)
        self.name, self.weights = name, weights
        self.image_size, self.mean, self.std = preprocess_stats(model)
        prompts = [p for pair in self.pairs for p in (pair.positive, pair.negative)]
        with torch.no_grad():
            self.text_emb = self.model.encode_text(tokenizer(prompts).to(self.device)).float()

    def preprocess(self, rgb01: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] → the encoder's input: resized to its size, standardised (``clip_preprocess``)."""
        from sarkit.models.clip import clip_preprocess

        return clip_preprocess(rgb01.to(self.device, torch.float32).clamp(0, 1), self.image_size, self.mean,
                               self.std)

    @torch.no_grad()
    def scores_of_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed (N, 3, S, S) → (N, K) positive-prompt probability of every pair."""
        return pair_probabilities(self.model.encode_image(x.to(self.device)), self.text_emb).cpu()

    def pair_scores(self, rgb01: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] → (N, K) positive-prompt probability of every pair."""
        return self.scores_of_inputs(self.preprocess(rgb01))

    def __call__(self, rgb01: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] → (N,) CLIP-IQA: the pairs' positive probabilities averaged."""
        return self.pair_scores(rgb01).mean(dim=1)


def load_clip_iqa(model: str, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                  pairs: Sequence[PromptPair] = PROMPT_PAIRS) -> ClipIqa:
    """CLIP-IQA on the open_clip ``model`` with local weights (``--clip-weights`` / ``$SARKIT_CLIP_WEIGHTS`` or
    open_clip's cache; ``WeightsNotFoundError`` naming both otherwise)."""
    import open_clip

    from sarkit.models.clip import load_open_clip

    loaded = load_open_clip(model, weights_path=weights)
    return ClipIqa(loaded.model, open_clip.get_tokenizer(loaded.name), pairs, device, model, str(loaded.path))


class _Side:
    """Running sums of one image side (prediction or target): score·valid, valid, and per pair."""

    def __init__(self, k: int) -> None:
        self.wsum, self.wn = 0.0, 0
        self.pair_wsum = [0.0] * k

    def add(self, scores: torch.Tensor, n: int) -> float:
        """Add one tile's (K,) pair probabilities weighted by its ``n`` valid pixels; return its CLIP-IQA."""
        value = float(scores.mean())
        self.wsum += value * n
        self.wn += n
        for i, s in enumerate(scores.tolist()):
            self.pair_wsum[i] += s * n
        return value

    def value(self) -> float:
        """The valid-pixel-weighted mean (NaN without tiles)."""
        return self.wsum / self.wn if self.wn else float("nan")

    def pair_values(self) -> list[float]:
        """Each pair's valid-pixel-weighted mean probability."""
        return [s / self.wn if self.wn else float("nan") for s in self.pair_wsum]


class ClipIqaStream:
    """Per-tile CLIP-IQA of the prediction (``tiles[].clip_iqa``) and, as a reference, of the target
    (``tiles[].clip_iqa_target``), in batches of ``batch_size`` tiles; the summary ``value`` is the mean of the
    tile scores weighted by each tile's valid pixels."""

    def __init__(self, iqa: ClipIqa, batch_size: int) -> None:
        self.iqa, self.batch_size = iqa, max(1, batch_size)
        self.items: list[tuple[dict[str, Any], torch.Tensor, torch.Tensor, int]] = []
        self.pred, self.target = _Side(len(iqa.pairs)), _Side(len(iqa.pairs))
        self.undefined = 0

    @classmethod
    def load(cls, opts: EvalOptions) -> ClipIqaStream | None:
        """The stream with the local CLIP weights when ``clip_iqa`` is requested, else None."""
        if "clip_iqa" not in opts.metrics:
            return None
        return cls(load_clip_iqa(opts.clip_model, opts.clip_weights, opts.device), opts.batch_size)

    def add_block(self, tile: dict[str, Any], b: Block, norm: Normalization) -> None:
        """Queue a block core's prediction and target (RGB under ``norm``, nodata 0); a tile without valid pixels
        gets ``None``."""
        from sarkit.eval.accumulate import core_rgb, core_valid

        n = int(core_valid(b).sum())
        if n == 0:
            tile["clip_iqa"] = tile["clip_iqa_target"] = None
            self.undefined += 1
            return
        pre = self.iqa.preprocess
        self.items.append((tile, pre(core_rgb(b.pred, b, norm)), pre(core_rgb(b.target, b, norm)), n))
        if len(self.items) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Score the queued tiles in one batch (predictions and targets together)."""
        if not self.items:
            return
        tiles, p, t, n = zip(*self.items)
        scores = self.iqa.scores_of_inputs(torch.cat([*p, *t]))
        k = len(tiles)
        for i, tile in enumerate(tiles):
            tile["clip_iqa"] = self.pred.add(scores[i], n[i])
            tile["clip_iqa_target"] = self.target.add(scores[k + i], n[i])
        self.items.clear()

    def finish(self, reporter: Reporter) -> None:
        """Score the last batch; warn about tiles without valid pixels."""
        self.flush()
        if self.undefined:
            reporter.warn(f"CLIP-IQA undefined for {self.undefined} tiles without valid pixels")

    def summary(self, tiles: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The prediction's weighted ``value`` with the per-tile statistics."""
        from sarkit.eval.accumulate import tile_stats

        return {"value": self.pred.value(), **tile_stats([t.get("clip_iqa") for t in tiles])}

    def network(self, tiles: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """report.json ``networks.clip_iqa``: model, weights, prompts, each pair's mean probability and the
        target's score (a reference: CLIP-IQA is no-reference and scores the prediction only)."""
        from sarkit.eval.accumulate import tile_stats

        pred_pairs, target_pairs = self.pred.pair_values(), self.target.pair_values()
        return {
            "model": f"CLIP-IQA, open_clip {self.iqa.name}",
            "weights": self.iqa.weights,
            "prompts": "; ".join(f"{p.positive} / {p.negative}" for p in self.iqa.pairs),
            "logit_scale": LOGIT_SCALE,
            "image_size": self.iqa.image_size,
            "pairs": [{"positive": p.positive, "negative": p.negative, "pred": a, "target": b}
                      for p, a, b in zip(self.iqa.pairs, pred_pairs, target_pairs)],
            "target": {"value": self.target.value(), **tile_stats([t.get("clip_iqa_target") for t in tiles])},
        }

