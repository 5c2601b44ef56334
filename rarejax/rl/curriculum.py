"""Dual-level curriculum: task level (differential first, then final diagnosis) and case level
(difficulty tiers from the policy's pass rate, easy to hard), with replay of earlier phases.

Case level: a case's difficulty is the policy's rank-aware pass rate over G samples: the mean of
their accuracy outcomes (rl.rewards: at the differential level 1 for the gold at rank 1, decaying
with its rank, 0 beyond max_rank; at the final level 1 for exactly the gold, alone). A task level
is measured when it starts (the first at step 0) and re-measured every `refresh_every` steps while
it lasts. Tier k holds the cases with tier_min_pass[k] <= pass rate < tier_min_pass[k - 1]: with
(0.5, 0.25), tier 0 scores at least half of full marks on average, tier 1 a quarter, tier 2 less.

Schedule: the steps are split between the task levels by task_fractions, in task_order; a level
ends early, on a measurement, once its cases' mean pass rate reaches advance_pass_rate (the policy
has it; its remaining steps go to the later levels in proportion to their fractions). A task
level's steps go to its non-empty tiers, easiest first, in shares proportional to the tiers' sizes
(so a refresh that moves cases between tiers moves the phase boundaries with them). A step's n
prompts hold round(replay_fraction * n) prompts from the earlier phases (easier tiers of this task
level and every case of the earlier levels; none in the first phase) and the rest from the current
tier, drawn without replacement while a pool lasts.

Shuffled mode (the ablation): each step draws uniformly from every case of every task level; no
measurement, no early end.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import gin
import numpy as np

from rarejax.data import format as format_lib

MODES = ("curriculum", "shuffled")
UNMEASURED = -1  # tier of a case whose pass rate was never measured


@gin.configurable
@dataclasses.dataclass(frozen=True, kw_only=True)
class CurriculumConfig:
  """The schedule (module docstring).

  Attributes:
    mode: 'curriculum' or 'shuffled' (no task order, no tiers).
    task_order: task levels in training order.
    task_fractions: share of the steps of each task level (same length as task_order).
    tier_min_pass: lowest pass rate of each tier but the hardest, decreasing.
    replay_fraction: share of each batch drawn from earlier phases.
    refresh_every: steps between re-measurements of the current task level's tiers (0: only when
      the level starts).
    advance_pass_rate: mean pass rate of a task level's cases at which, measured, the level ends
      and the next begins (None: the levels keep their task_fractions).
  """
  mode: str = "curriculum"
  task_order: tuple[str, ...] = ("differential", "final")
  task_fractions: tuple[float, ...] = (0.5, 0.5)
  tier_min_pass: tuple[float, ...] = (0.5, 0.25)
  replay_fraction: float = 0.25
  refresh_every: int = 0
  advance_pass_rate: float | None = 0.8

  def __post_init__(self):
    problems = []
    if self.mode not in MODES:
      problems.append(f"mode must be one of {MODES}, got {self.mode!r}")
    if not self.task_order or set(self.task_order) - set(format_lib.TASKS):
      problems.append(f"task_order must hold task levels from {format_lib.TASKS}, got "
                      f"{self.task_order}")
    if len(self.task_fractions) != len(self.task_order) or min(self.task_fractions) < 0 \
        or not math.isclose(sum(self.task_fractions), 1.0, abs_tol=1e-6):
      problems.append(f"task_fractions {self.task_fractions} must be one non-negative share per "
                      f"task level of {self.task_order}, summing to 1")
    if list(self.tier_min_pass) != sorted(set(self.tier_min_pass), reverse=True):
      problems.append(f"tier_min_pass {self.tier_min_pass} must be strictly decreasing")
    if not 0 <= self.replay_fraction <= 1 or self.refresh_every < 0:
      problems.append(f"need 0 <= replay_fraction <= 1 and refresh_every >= 0, got "
                      f"{self.replay_fraction} and {self.refresh_every}")
    if self.advance_pass_rate is not None and not 0 < self.advance_pass_rate <= 1:
      problems.append(f"advance_pass_rate must be in (0, 1] or None, got {self.advance_pass_rate}")
    if problems:
      raise ValueError("CurriculumConfig: " + "; ".join(problems) + ".")

  @property
  def num_tiers(self) -> int:
    return len(self.tier_min_pass) + 1


@dataclasses.dataclass(frozen=True)
class Draw:
  """One prompt of a batch: task level, case index, the case's tier, and whether it is replay."""
  task: str
  case: int
  tier: int
  replay: bool


def tiers_of(pass_rates: np.ndarray, tier_min_pass: tuple[float, ...]) -> np.ndarray:
  """int [C]: tier of each pass rate (0 easiest), UNMEASURED where the rate is NaN."""
  rates = np.asarray(pass_rates, np.float64)
  tiers = (rates[:, None] < np.asarray(tier_min_pass)[None, :]).sum(axis=1)
  return np.where(np.isnan(rates), UNMEASURED, tiers)


class Curriculum:
  """Which cases each step trains on, for `num_cases` cases (shared by the task levels).

  Pass rates are set with `set_pass_rates` (NaN until measured); `measure_due` says when the
  caller measures the current level, `advance_if_passed` ends a level early. Pass rates, the step
  of each level's last measurement and the early ends are saved with `state_dict`, so a resumed
  run draws exactly what an uninterrupted one would.
  """

  def __init__(self, config: CurriculumConfig, num_cases: int, num_steps: int):
    if num_cases < 1 or num_steps < 1:
      raise ValueError(f"a curriculum needs cases and steps, got {num_cases} and {num_steps}.")
    self.config, self.num_cases, self.num_steps = config, num_cases, num_steps
    self.pass_rates = {task: np.full(num_cases, np.nan) for task in config.task_order}
    self.measured_at: dict[str, int] = {}  # task level -> step of its latest measurement
    self.ended_at: dict[str, int] = {}  # task level -> step it ended early (advance_if_passed)

  @property
  def measures_tiers(self) -> bool:
    return self.config.mode == "curriculum"

  def set_pass_rates(self, task: str, rates: np.ndarray, step: int = 0) -> None:
    """The pass rates of every case at `task`, measured at `step`."""
    rates = np.asarray(rates, np.float64)
    if rates.shape != (self.num_cases,):
      raise ValueError(f"pass rates of {task!r} have shape {rates.shape}, expected "
                       f"({self.num_cases},).")
    self.pass_rates[task] = rates
    self.measured_at[task] = step

  def tiers(self, task: str) -> np.ndarray:
    return tiers_of(self.pass_rates[task], self.config.tier_min_pass)

  def spans(self) -> list[tuple[str, int, int]]:
    """(task level, first step, end step) of each level: its share of the steps left when it
    starts (task_fractions), or up to where it ended early."""
    fractions, spans, start = self.config.task_fractions, [], 0
    for i, task in enumerate(self.config.task_order):
      rest = sum(fractions[i:])
      share = fractions[i] / rest if rest > 0 else 1.0
      end = self.ended_at.get(task, start + round((self.num_steps - start) * share))
      spans.append((task, start, end))
      start = end
    return spans

  def _span(self, task: str) -> tuple[int, int]:
    """(first step, end step) of task level `task`."""
    return next((start, end) for t, start, end in self.spans() if t == task)

  def task_at(self, step: int) -> str:
    """The task level of `step` (steps past the schedule stay on the last level)."""
    for task, start, end in self.spans():
      if start <= step < end:
        return task
    return self.config.task_order[-1]

  def measure_due(self, step: int) -> bool:
    """Whether the current task level is to be measured before `step`: never yet since it
    started, or every refresh_every steps."""
    if not self.measures_tiers:
      return False
    task = self.task_at(step)
    start, _ = self._span(task)
    every = self.config.refresh_every
    return (self.measured_at.get(task, -1) < start
            or (every > 0 and step > 0 and step % every == 0 and self.measured_at[task] < step))

  def advance_if_passed(self, task: str, step: int) -> bool:
    """Ends `task` at `step` if it is the current level, not the last, and its cases' mean pass
    rate reaches advance_pass_rate; True if it ended."""
    threshold, order = self.config.advance_pass_rate, self.config.task_order
    if (not self.measures_tiers or threshold is None or task == order[-1]
        or self.task_at(step) != task or np.isnan(self.pass_rates[task]).any()
        or self.pass_rates[task].mean() < threshold):
      return False
    self.ended_at[task] = step
    return True

  def phase(self, step: int) -> tuple[str, int]:
    """(task level, tier) of a curriculum step."""
    task = self.task_at(step)
    start, end = self._span(task)
    tiers = self.tiers(task)
    if (tiers == UNMEASURED).any():
      raise ValueError(f"pass rates of task level {task!r} are not measured; the curriculum "
                       "needs them (set_pass_rates) before drawing.")
    present, sizes = np.unique(tiers, return_counts=True)
    offset = min(max(step - start, 0), max(end - start - 1, 0))
    bounds = np.cumsum(sizes) / sizes.sum()  # each tier's share of the level's steps
    return task, int(present[np.searchsorted(bounds, offset / max(end - start, 1), "right")])

  def draw(self, step: int, n: int, rng: np.random.Generator) -> list[Draw]:
    """The n prompts of `step` (see the module docstring)."""
    if self.config.mode == "shuffled":
      pool = [(task, case) for task in self.config.task_order for case in range(self.num_cases)]
      return [self._make_draw(task, case, False) for task, case in _choose(pool, n, rng)]
    task, tier = self.phase(step)
    current = [(task, int(c)) for c in np.flatnonzero(self.tiers(task) == tier)]
    earlier = self._earlier(task, tier)
    n_replay = round(self.config.replay_fraction * n) if earlier else 0
    chosen = [(t, c, False) for t, c in _choose(current, n - n_replay, rng)]
    chosen += [(t, c, True) for t, c in _choose(earlier, n_replay, rng)]
    return [self._make_draw(*item) for item in chosen]

  def _earlier(self, task: str, tier: int) -> list[tuple[str, int]]:
    """(task, case) of the phases before (task, tier)."""
    order = self.config.task_order
    pool = [(t, c) for t in order[:order.index(task)] for c in range(self.num_cases)]
    return pool + [(task, int(c)) for c in np.flatnonzero(self.tiers(task) < tier)]

  def _make_draw(self, task: str, case: int, replay: bool) -> Draw:
    return Draw(task=task, case=case, tier=int(self.tiers(task)[case]), replay=replay)

  def state_dict(self) -> dict[str, Any]:
    """JSON-ready pass rates (None = unmeasured), measurement steps and early ends."""
    return {"pass_rates": {task: [None if np.isnan(r) else float(r) for r in rates]
                           for task, rates in self.pass_rates.items()},
            "measured_at": dict(self.measured_at), "ended_at": dict(self.ended_at)}

  def load_state_dict(self, state: dict[str, Any]) -> None:
    if "pass_rates" not in state:
      raise ValueError("the checkpoint's curriculum state predates measurement steps and early "
                       "ends (rarejax.rl.curriculum); run the rl stage afresh (remove its folder).")
    for task, rates in state["pass_rates"].items():
      self.pass_rates[task] = np.array([np.nan if r is None else r for r in rates], np.float64)
    self.measured_at = {task: int(step) for task, step in state["measured_at"].items()}
    self.ended_at = {task: int(step) for task, step in state["ended_at"].items()}


def _choose(pool: list, n: int, rng: np.random.Generator) -> list:
  """n items of `pool`: without replacement while it lasts, then the pool again, reshuffled."""
  if n == 0:
    return []
  if not pool:
    raise ValueError("cannot draw prompts from an empty pool of cases.")
  picks = [pool[i] for _ in range(n // len(pool)) for i in rng.permutation(len(pool))]
  return picks + [pool[i] for i in rng.choice(len(pool), n - len(picks), replace=False)]
