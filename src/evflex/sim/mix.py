"""The fleet's composition: `--mix ac16:60,ac201:30,...` → a class and a model per station."""

from __future__ import annotations

import random

from evflex.sim.catalogue import CLASSES, Model


def parse_mix(spec: str) -> dict[str, float]:
    """`"ac16:60,ac201:30"` → {"ac16": 60.0, "ac201": 30.0} (relative weights).

    A class may be narrowed to one model: `"ac16@Pole 22:10"`.
    """
    weights: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, weight = item.rpartition(":") if ":" in item else (item, "", "")
        name = name.strip()
        cls, _, model = name.partition("@")
        if cls not in CLASSES:
            raise ValueError(f"unknown station class {cls!r}; known: {', '.join(CLASSES)}")
        if model and all(m.model != model for _, m in CLASSES[cls]):
            raise ValueError(f"no model {model!r} in class {cls!r}")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"bad weight in {item!r}") from None
        if value < 0:
            raise ValueError(f"negative weight in {item!r}")
        weights[name] = weights.get(name, 0.0) + value
    if not weights or sum(weights.values()) <= 0:
        raise ValueError("the mix is empty")
    return weights


def allocate(weights: dict[str, float], n: int, rng: random.Random) -> list[str]:
    """Exactly proportional class counts (largest remainder), shuffled by the seed."""
    total = sum(weights.values())
    quotas = {name: n * w / total for name, w in weights.items()}
    counts = {name: int(q) for name, q in quotas.items()}
    by_remainder = sorted(quotas, key=lambda k: (counts[k] - quotas[k], k))
    for name in by_remainder[: n - sum(counts.values())]:
        counts[name] += 1
    classes = [name for name in weights for _ in range(counts[name])]
    rng.shuffle(classes)
    return classes


def pick_model(name: str, rng: random.Random) -> Model:
    """A model of class `name` drawn by the catalogue weights (or the one named after @)."""
    cls, _, wanted = name.partition("@")
    entries = CLASSES[cls]
    if wanted:
        return next(m for _, m in entries if m.model == wanted)
    return rng.choices([m for _, m in entries], [w for w, _ in entries])[0]
