"""Independent references of Herzog & Wang's few-shot protocol, written from PAPER.md and
Dassl's description (not from crossgap_jax): the support sampler and the classifiers in torch."""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import torch


def dassl_reference(records, shots, seed):
    """Dassl's generate_fewshot_dataset(repeat=True) as Herzog & Wang's main loop drives it:
    random.seed once, then each shot count; per label (first-appearance order) sample k
    records, or choices with replacement when fewer than k."""
    random.seed(seed)
    out = {}
    for k in shots:
        tracker = defaultdict(list)
        for rec in records:
            tracker[rec[1]].append(rec)
        chosen = []
        for items in tracker.values():
            if len(items) >= k:
                chosen.extend(random.sample(items, k))
            else:
                chosen.extend(random.choices(items, k=k))
        out[k] = [rec[0] for rec in chosen]
    return out


def dassl_indices(labels, k, seed, shots):
    """Indices of the ``k``-shot support of ``seed`` when ``shots`` are drawn in turn."""
    records = [(i, int(c)) for i, c in enumerate(np.asarray(labels).tolist())]
    return np.array(dassl_reference(records, shots, seed)[k])


def torch_prototype(sup, ysup, te, text):
    x, y, t = (torch.tensor(a, dtype=torch.float64) for a in (sup, ysup, te))
    protos = torch.stack([x[y == i].mean(dim=0) for i in y.unique()])
    protos = torch.nn.functional.normalize(protos, dim=-1)
    sims = t @ protos.T
    if text is not None:
        sims = 0.5 * sims + 0.5 * (t @ torch.tensor(text, dtype=torch.float64).T)
    return sims.numpy()


def torch_gda(sup, ysup, te, text):
    """PAPER.md: cov_inv = D * pinv((N-1) S + tr(S) I), uniform priors, W = mu cov_inv,
    b = log p - diag(mu cov_inv mu^T) / 2, score x W^T + b (text: 0.5 / 0.5, transposed)."""
    x, t = torch.tensor(sup, dtype=torch.float64), torch.tensor(te, dtype=torch.float64)
    y = torch.tensor(ysup)
    c = int(y.max()) + 1
    mus = torch.stack([x[y == i].mean(dim=0) for i in range(c)])
    z = torch.cat([x[y == i] - mus[i] for i in range(c)])
    s = torch.cov(z.T)
    n, d = z.shape
    cov_inv = d * torch.linalg.pinv((n - 1) * s + s.trace() * torch.eye(d, dtype=torch.float64))
    w = mus @ cov_inv
    b = torch.log(torch.full((c,), 1.0 / c, dtype=torch.float64)) - 0.5 * torch.diag(
        mus @ cov_inv @ mus.T)
    sims = t @ w.T + b
    if text is not None:
        sims = 0.5 * (t @ torch.tensor(text, dtype=torch.float64).T) + 0.5 * sims
    return sims.numpy()


def torch_span(texts, x):
    cov = torch.cov(torch.tensor(texts, dtype=torch.float64).T)
    vals, vecs = torch.linalg.eigh(cov)
    u = vecs[:, torch.argsort(vals, descending=True)[: texts.shape[1] // 2]].T
    return (u.T @ u @ torch.tensor(x, dtype=torch.float64).T).T.numpy()
