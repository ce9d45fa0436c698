"""The multi-series lumbar grader (torch / MONAI; imported only by code that runs it).

Input ``x`` (batch, 5 levels, 3 series, slices, H, W): each level's crop stack from each series
(``preprocess.study_crops``); a series or level that is absent is NaN, which is the presence mask.

- per series, its own 2D CNN encoder (MONAI convolution blocks) embeds every slice of the stack;
- attention pooling over the slices (several attention heads, with a learned position per slice so
  that a head can attend to the left or the right foramen) gives one embedding per series and level;
- fusion across series: a learned score per series embedding, softmax over the series present only
  (weights renormalised over what is there); an absent series contributes its learned padding
  embedding to the head, never an image;
- a head shared by the levels (plus a learned level embedding) gives 5 conditions x 3 grades per level.

Output: logits (batch, 25, 3), condition-major as train.csv's columns. The last pass's slice
attention and series weights are kept on the network for explanations.
"""

from __future__ import annotations

import torch
from torch import nn


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose gradient is made contiguous: MONAI's Grad-CAM views the gradient it hooks, and
    the pooling after the hooked layer hands back an expanded (non-contiguous) one."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


class SliceEncoder(nn.Module):
    """(N, 1, H, W) -> (N, C, H/4, W/4) feature maps: four MONAI convolution blocks."""

    def __init__(self, channels=(8, 16, 32, 32)):
        super().__init__()
        from monai.networks.blocks import Convolution

        strides = (1, 2, 2, 1)
        layers, cin = [], 1
        for c, s in zip(channels, strides):
            layers.append(Convolution(2, cin, c, strides=s, kernel_size=3, act="RELU", norm="BATCH"))
            cin = c
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class LumbarGradingNet(nn.Module):
    def __init__(self, series: int = 3, levels: int = 5, conditions: int = 5, slices: int = 7,
                 channels=(8, 16, 32, 32), embed: int = 48, heads: int = 3, hidden: int = 96, dropout: float = 0.1):
        super().__init__()
        self.series, self.levels, self.conditions, self.slices = series, levels, conditions, slices
        c = channels[-1]
        self.encoders = nn.ModuleList([SliceEncoder(channels) for _ in range(series)])
        self.features = nn.ModuleList([nn.Identity() for _ in range(series)])  # (N, C, slices, h, w): Grad-CAM's layer
        self.slice_position = nn.Parameter(torch.zeros(series, slices, 2 * c))
        self.attention_hidden = nn.ModuleList([nn.Linear(2 * c, 32) for _ in range(series)])
        self.attention_heads = nn.ModuleList([nn.Linear(32, heads) for _ in range(series)])
        self.project = nn.ModuleList([nn.Linear(heads * 2 * c, embed) for _ in range(series)])
        self.padding = nn.Parameter(0.02 * torch.randn(series, embed))  # learned stand-in for an absent series
        self.series_score = nn.Sequential(nn.Linear(embed, 32), nn.Tanh(), nn.Linear(32, 1))
        self.level_embedding = nn.Parameter(0.02 * torch.randn(levels, embed))
        self.head = nn.Sequential(nn.Linear(embed * (series + 2), hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, conditions * 3))
        self.last_slice_attention = None
        self.last_series_weights = None

    def encode(self, r: int, crops):
        """Crops (N, slices, H, W) of series ``r`` -> (embedding (N, embed), slice attention (N, slices))."""
        n, s, h, w = crops.shape
        f = self.encoders[r](crops.reshape(n * s, 1, h, w))
        f = _ContiguousGrad.apply(self.features[r](f.reshape(n, s, *f.shape[1:]).transpose(1, 2)))  # (N, C, S, h, w)
        g = torch.cat([f.mean((3, 4)), f.amax((3, 4))], 1).transpose(1, 2) + self.slice_position[r]  # (N, S, 2C)
        a = torch.softmax(self.attention_heads[r](torch.tanh(self.attention_hidden[r](g))), 1)  # (N, S, heads)
        pooled = torch.einsum("nsk,nsc->nkc", a, g).flatten(1)
        return torch.relu(self.project[r](pooled)), a.mean(2)

    def classify(self, emb, present):
        """Embeddings (B, L, R, E) (padding where absent) and presence (B, L, R) -> logits (B, C*L, 3)."""
        b = emb.shape[0]
        score = self.series_score(emb)[..., 0].masked_fill(~present, float("-inf"))
        any_present = present.any(-1, keepdim=True)
        weights = torch.where(any_present, torch.softmax(score.masked_fill(~any_present, 0.0), -1),
                              torch.zeros_like(score))
        fused = (weights[..., None] * emb).sum(2)
        level = self.level_embedding[None].expand(b, -1, -1)
        out = self.head(torch.cat([fused, emb.flatten(2), level], -1))  # (B, L, C*3)
        self.last_series_weights = weights.detach()
        out = out.reshape(b, self.levels, self.conditions, 3).transpose(1, 2)
        return out.reshape(b, self.conditions * self.levels, 3)

    def embed(self, x):
        """All present crops encoded: (embeddings (B, L, R, E), presence (B, L, R), slice attention (B, L, R, S))."""
        present = torch.isfinite(x[..., 0, 0, 0])
        x = torch.nan_to_num(x)
        b, nl, nr, s = x.shape[:4]
        per_series, attention = [], []
        for r in range(nr):
            e = self.padding[r].expand(b, nl, -1).clone()
            att = torch.zeros(b, nl, s, device=x.device, dtype=e.dtype)
            idx = present[:, :, r].nonzero(as_tuple=True)
            if len(idx[0]):
                emb, a = self.encode(r, x[:, :, r][idx])
                e[idx] = emb.to(e.dtype)
                att[idx] = a.to(att.dtype)
            per_series.append(e)
            attention.append(att)
        return torch.stack(per_series, 2), present, torch.stack(attention, 2)

    def forward(self, x):
        emb, present, attention = self.embed(x)
        self.last_slice_attention = attention.detach()
        return self.classify(emb, present)


class LevelView(nn.Module):
    """One level's crop stack of series ``series`` -> that level's logits for one condition, with the
    rest of the study fixed (``use``): what Grad-CAM explains (``spineai.deep.cam.explain`` on input
    (1, 1, S, H, W), target layer ``net.features.R``). Made once per network and series (``view_for``):
    Grad-CAM's hooks are permanent, so a view per call would pile them up."""

    def __init__(self, net: LumbarGradingNet, series: int):
        super().__init__()
        self.net, self.series = net, series
        self.emb = self.present = None
        self.level = self.condition = 0

    def use(self, emb, present, level: int, condition: int) -> "LevelView":
        self.emb, self.present, self.level, self.condition = emb.detach(), present, level, condition
        return self

    def forward(self, crop):
        e, _ = self.net.encode(self.series, crop[:, 0])
        emb = self.emb.expand(crop.shape[0], -1, -1, -1).clone()
        emb[:, self.level, self.series] = e
        present = self.present.expand(crop.shape[0], -1, -1).clone()
        present[:, self.level, self.series] = True
        return self.net.classify(emb, present)[:, self.condition * self.net.levels + self.level]


def view_for(net: LumbarGradingNet, series: int) -> LevelView:
    views = net.__dict__.setdefault("_spineai_level_views", {})
    if series not in views:
        views[series] = LevelView(net, series)
    return views[series]


def challenge_loss(logits, targets):
    """The challenge's score as a loss: per condition group, cross-entropy weighted 1/2/4 by the true
    grade and averaged with those weights; plus the any-severe-spinal binary term; the mean of the four.
    ``targets`` (B, 25) grades, -1 = not graded (ignored)."""
    levels = 5
    w_class = torch.tensor([1.0, 2.0, 4.0], device=logits.device)
    logp = torch.log_softmax(logits.float(), -1)
    terms = []
    for cols in (slice(0, levels), slice(levels, 3 * levels), slice(3 * levels, 5 * levels)):
        t, lp = targets[:, cols], logp[:, cols]
        graded = t >= 0
        tc = t.clamp(min=0)
        w = w_class[tc] * graded
        nll = -lp.gather(-1, tc[..., None])[..., 0]
        terms.append((w * nll).sum() / w.sum().clamp(min=1e-6))
    t, lp = targets[:, :levels], logp[:, :levels]
    graded = t >= 0
    p_severe = torch.where(graded, lp[..., 2].exp(), torch.zeros_like(lp[..., 2])).amax(1).clamp(1e-7, 1 - 1e-7)
    severe = ((t == 2) & graded).any(1)
    w = torch.where(graded, w_class[t.clamp(min=0)], torch.zeros_like(lp[..., 2])).amax(1)
    nll = -torch.where(severe, p_severe.log(), (1 - p_severe).log())
    has = graded.any(1)
    terms.append((w * nll * has).sum() / (w * has).sum().clamp(min=1e-6))
    return torch.stack(terms).mean()
