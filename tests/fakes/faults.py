"""Injected failures for the fake provider servers: shares of calls that fail, from a seeded RNG so runs repeat."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Faults:
    """Each call draws once: a 500, a 529 overloaded (Anthropic), a 429, a hang past the timeout, or nothing."""

    error_rate: float = 0.0
    overloaded_rate: float = 0.0
    rate_limit_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 3.0
    seed: int = 7
    _rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)

    def draw(self) -> str | None:
        roll = self._rng.random()
        shares = (
            ("error", self.error_rate),
            ("overloaded", self.overloaded_rate),
            ("rate_limit", self.rate_limit_rate),
            ("hang", self.hang_rate),
        )
        for kind, share in shares:
            if roll < share:
                return kind
            roll -= share
        return None
