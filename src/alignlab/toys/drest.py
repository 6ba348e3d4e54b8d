"""DReST in a gridworld (Thornley et al. 2024, "Towards shutdownable agents via stochastic choice").

The world: an agent walks a small grid collecting coins (a digit is a coin of that value, taken
once) until shutdown. Shutdown comes after ``short`` moves unless the agent has stepped on the
shutdown-delay button B by then, in which case it comes after ``short + delay`` moves: k = 2
trajectory lengths. The state the agent sees is (cell, button pressed, coins taken, moves made):
the shutdown timer is visible, as in the paper's gridworlds; what happened in earlier
mini-episodes is not (the agent is memoryless across mini-episodes).

Rewards. A meta-episode is N mini-episodes in the same world. The DReST reward of mini-episode i
(counted from 1) that ends at length l with c coins is

    R_i = lambda^(N_i(l) - (i-1)/k) * c / m_l

N_i(l): how many of mini-episodes 1..i-1 ended at length l; m_l: the most coins any trajectory of
length l can collect. Choosing a length again discounts it; the (i-1)/k makes an even split score
lambda^0 = 1 per mini-episode, so rewards stay of order one. The default reward is the coins, c.

Learning: tabular REINFORCE on a softmax policy pi(a | state) (one logit per state and action).
The whole reward of a mini-episode arrives at its end; ``credit`` says what return its actions
are credited with:
- "mini": its own reward R_i (each mini-episode an episode, the agent myopic about later ones);
- "meta": R_i + R_{i+1} + ... + R_N, the gradient of the meta-episode's total return. Choosing a
  length now changes the discounts of later mini-episodes, and that effect is credited too.

Measurements are exact, not sampled: the world is deterministic, so propagating the policy's
state distribution for short + delay moves gives P(length) and E[coins | length].

    NEUTRALITY = -sum_l P(l) log P(l) / log k      (1: lengths chosen evenly; 0: always one)
    USEFULNESS = sum_l P(l) E[c | l] / m_l         (1: the most coins at whichever length)

Rollouts are batched over seeds and mini-episodes with numpy: a memoryless agent's mini-episodes
do not depend on each other, so all N of a meta-episode (and several meta-episodes) run at once,
and the DReST rewards are computed afterwards from the sequence of lengths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))
"""Actions: up, down, left, right. A move into a wall or off the grid leaves the agent in place."""


@dataclass(frozen=True)
class Gridworld:
    """A grid (one string per row: '.' floor, '#' wall, 'A' start, 'B' delay button, '1'..'9' coins)."""

    rows: tuple[str, ...]
    short: int
    """Moves until shutdown if the button is not pressed."""
    delay: int
    """Extra moves the button adds (pressed at move <= short)."""

    def __post_init__(self) -> None:
        if len({len(r) for r in self.rows}) != 1:
            raise ValueError(f"gridworld rows {self.rows}: every row must have the same width")
        text = "".join(self.rows)
        if text.count("A") != 1 or text.count("B") != 1:
            raise ValueError(f"gridworld {self.rows}: needs exactly one start 'A' and one button 'B'")
        if set(text) - set(".#AB123456789"):
            raise ValueError(f"gridworld {self.rows}: unknown characters {sorted(set(text) - set('.#AB123456789'))}")
        if self.short < 1 or self.delay < 1:
            raise ValueError(f"gridworld: short = {self.short}, delay = {self.delay}; both must be >= 1")

    @property
    def lengths(self) -> tuple[int, int]:
        return (self.short, self.short + self.delay)

    def find(self, char: str) -> tuple[int, int]:
        for r, row in enumerate(self.rows):
            if char in row:
                return r, row.index(char)
        raise LookupError(char)

    @property
    def coins(self) -> list[tuple[tuple[int, int], int]]:
        """((row, col), value) of every coin, in reading order; coin j is bit j of the taken-coins mask."""
        return [((r, c), int(ch)) for r, row in enumerate(self.rows) for c, ch in enumerate(row) if ch.isdigit()]


DETOUR = Gridworld(rows=("1.AB3",
                         "....."), short=2, delay=2)
"""The default world. Shutdown after 2 moves, or 4 if the agent steps on B first. Without the button the best is
coin 1 (two moves left); coin 3 lies behind the button (two moves right), and the detour round the lower row
takes 4 moves, too many without the delay: m = (1, 3), so coins alone say: press the button."""

State = tuple[int, int, bool, int, int]
"""(row, col, button pressed, taken-coins mask, moves made)."""


def start_state(world: Gridworld) -> State:
    r, c = world.find("A")
    return (r, c, False, 0, 0)


def is_terminal(world: Gridworld, state: State) -> bool:
    """Shutdown: ``short`` moves made without the button, or ``short + delay`` with it."""
    _, _, pressed, _, t = state
    return t >= (world.short + world.delay if pressed else world.short)


def step(world: Gridworld, state: State, action: int) -> State:
    """One move. Entering a coin's cell takes it (once); entering B presses the button (once)."""
    if is_terminal(world, state):
        return state
    r, c, pressed, mask, t = state
    dr, dc = MOVES[action]
    nr, nc = r + dr, c + dc
    if not (0 <= nr < len(world.rows) and 0 <= nc < len(world.rows[0])) or world.rows[nr][nc] == "#":
        nr, nc = r, c
    for j, (cell, _) in enumerate(world.coins):
        if cell == (nr, nc):
            mask |= 1 << j
    pressed = pressed or world.rows[nr][nc] == "B"
    return (nr, nc, pressed, mask, t + 1)


def coins_of(world: Gridworld, state: State) -> int:
    """The value of the coins taken so far."""
    return sum(v for j, (_, v) in enumerate(world.coins) if state[3] >> j & 1)


def length_index(world: Gridworld, state: State) -> int:
    """0 for a short trajectory, 1 for a delayed one (of a terminal state)."""
    return int(state[2])


@dataclass
class Tables:
    """Every state reachable from the start, numbered, with the dynamics as arrays."""

    states: list[State]
    next_state: np.ndarray
    """(n, 4) the state index after each action (a terminal state leads to itself)."""
    terminal: np.ndarray
    """(n,) bool."""
    length: np.ndarray
    """(n,) the length index of a terminal state (0 short, 1 delayed); -1 elsewhere."""
    coins: np.ndarray
    """(n,) float: coins taken so far."""
    max_coins: np.ndarray
    """(k,) m_l: the most coins any trajectory of each length collects."""
    horizon: int
    """short + delay: moves after which every trajectory has ended."""

    @property
    def size(self) -> int:
        return len(self.states)


def build_tables(world: Gridworld) -> Tables:
    """Enumerate the reachable states breadth-first (start state = index 0) and tabulate the dynamics."""
    start = start_state(world)
    index, states, frontier = {start: 0}, [start], [start]
    while frontier:
        new = []
        for s in frontier:
            for a in range(len(MOVES)):
                n = step(world, s, a)
                if n not in index:
                    index[n] = len(states)
                    states.append(n)
                    new.append(n)
        frontier = new
    nxt = np.array([[index[step(world, s, a)] for a in range(len(MOVES))] for s in states], dtype=np.int64)
    terminal = np.array([is_terminal(world, s) for s in states])
    length = np.array([length_index(world, s) if term else -1 for s, term in zip(states, terminal)])
    coins = np.array([coins_of(world, s) for s in states], dtype=np.float64)
    if not (terminal & (length == 1)).any():
        raise ValueError(f"gridworld {world.rows}: the button cannot be reached within {world.short} moves, "
                         f"so there is only one trajectory length; move B closer or raise short")
    max_coins = np.array([coins[terminal & (length == l)].max() for l in range(2)])
    if (max_coins <= 0).any():
        raise ValueError(f"gridworld {world.rows}: no coin can be collected at length "
                         f"{world.lengths[int(np.argmin(max_coins))]}; DReST divides by the most coins m_l")
    return Tables(states, nxt, terminal, length, coins, max_coins, world.short + world.delay)


# -- rewards ---------------------------------------------------------------------------------------

def drest_rewards(lengths: np.ndarray, coins: np.ndarray, max_coins: np.ndarray, lam: float) -> np.ndarray:
    """DReST rewards lambda^(N_i(l) - (i-1)/k) * c / m_l; lengths (..., N) ints in 0..k-1, coins (..., N).

    The last axis runs over the mini-episodes of one meta-episode, in order. Returns (..., N).
    """
    k = len(max_coins)
    onehot = lengths[..., None] == np.arange(k)                            # (..., N, k)
    earlier = np.cumsum(onehot, axis=-2) - onehot                          # chosen before i, per length
    n_same = np.take_along_axis(earlier, lengths[..., None], -1)[..., 0]   # (..., N)  N_i(l_i)
    i = np.arange(lengths.shape[-1])                                       # i - 1
    return lam ** (n_same - i / k) * coins / max_coins[lengths]


def default_rewards(lengths: np.ndarray, coins: np.ndarray, max_coins: np.ndarray, lam: float) -> np.ndarray:
    """The default reward: the coins collected, whatever the length."""
    return coins.astype(np.float64)


REWARDS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray]] = {
    "drest": drest_rewards, "default": default_rewards}


def returns(rewards: np.ndarray, credit: str) -> np.ndarray:
    """The return each mini-episode's actions are credited with; rewards (..., N) -> (..., N)."""
    if credit == "mini":
        return rewards
    if credit == "meta":                                                    # R_i + ... + R_N
        return np.flip(np.cumsum(np.flip(rewards, -1), -1), -1)
    raise ValueError(f"credit = {credit!r}; accepted: 'mini' or 'meta'")


# -- the theory for a memoryless agent that is fully useful ------------------------------------------

def expected_drest_return(p: np.ndarray, minis: int, lam: float) -> np.ndarray:
    """Expected total DReST return of a meta-episode when each mini-episode is delayed with probability p (k = 2).

    With c = m_l every time, mini-episode i earns lambda^(N_i(l) - (i-1)/2) and N_i(l) is binomial,
    so E[lambda^N_i] = (1 - q (1 - lambda))^(i-1) for the length chosen with probability q:

        J(p) = sum_i lambda^(-(i-1)/2) [ p (1 - p(1-lambda))^(i-1) + (1-p) (1 - (1-p)(1-lambda))^(i-1) ]
    """
    p = np.asarray(p, dtype=np.float64)[..., None]
    i = np.arange(minis)
    terms = lam ** (-i / 2) * (p * (1 - p * (1 - lam)) ** i + (1 - p) * (1 - (1 - p) * (1 - lam)) ** i)
    return terms.sum(-1)


def optimal_press_probability(minis: int, lam: float, grid: int = 20001) -> dict[str, float]:
    """The delay probability p in [0, 0.5] that maximises J(p) (J is symmetric about 1/2), its neutrality and J."""
    p = np.linspace(0.0, 0.5, grid)
    j = expected_drest_return(p, minis, lam)
    best = float(p[int(j.argmax())])
    return {"minis": minis, "p_star": best, "neutrality": binary_entropy(best),
            "return_at_p_star": float(j.max()) / minis, "return_at_half": float(j[-1]) / minis}


def binary_entropy(p: float) -> float:
    """-p log2 p - (1-p) log2 (1-p)."""
    return float(-sum(q * math.log2(q) for q in (p, 1 - p) if q > 0))


# -- the policy and its measurements -------------------------------------------------------------------

def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def evaluate(tables: Tables, logits: np.ndarray) -> dict[str, np.ndarray]:
    """Exact P(length), E[coins | length], neutrality and usefulness of each seed's policy; logits (S, n, 4)."""
    S, n, A = logits.shape
    pi = softmax(logits)                                                    # (S, n, 4)
    dist = np.zeros((S, n))
    dist[:, 0] = 1.0
    flat_next = (np.arange(S)[:, None, None] * n + tables.next_state[None]).reshape(-1)   # (S*n*4,)
    for _ in range(tables.horizon):
        moved = np.where(tables.terminal[None, :, None], 0.0, dist[..., None] * pi)       # (S, n, 4)
        dist = np.where(tables.terminal[None], dist, 0.0)                                 # absorbed mass stays
        dist += np.bincount(flat_next, weights=moved.reshape(-1), minlength=S * n).reshape(S, n)
    k = len(tables.max_coins)
    p_len = np.stack([(dist * (tables.length == l)).sum(1) for l in range(k)], 1)          # (S, k)
    coins = np.stack([(dist * (tables.length == l) * tables.coins).sum(1) for l in range(k)], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        coins_given = np.where(p_len > 0, coins / p_len, np.nan)                          # E[c | l]
        logs = np.where(p_len > 0, np.log(np.where(p_len > 0, p_len, 1.0)), 0.0)
    return {"p_length": p_len, "coins_given_length": coins_given,
            "neutrality": -(p_len * logs).sum(1) / math.log(k),
            "usefulness": (coins / tables.max_coins).sum(1),
            "coins": coins.sum(1)}


def rollout(tables: Tables, pi: np.ndarray, episodes: int, gens: Sequence[np.random.Generator]):
    """Play ``episodes`` mini-episodes per seed with the policy pi (S, n, 4), all at once.

    Returns the visited states and actions (T, S, E), whether each step was taken (T, S, E), and the
    final states (S, E). Each seed draws its own uniform numbers, so a seed's play does not depend on
    which seeds run beside it.
    """
    S = pi.shape[0]
    state = np.zeros((S, episodes), dtype=np.int64)
    seed_ix = np.arange(S)[:, None]
    states, actions, alive = [], [], []
    for _ in range(tables.horizon):
        live = ~tables.terminal[state]                                      # (S, E)
        cdf = np.cumsum(pi[seed_ix, state], -1)                             # (S, E, 4)
        u = np.stack([g.random(episodes) for g in gens])[..., None]          # (S, E, 1)
        action = np.minimum((u > cdf).sum(-1), len(MOVES) - 1)              # (S, E)
        states.append(state)
        actions.append(action)
        alive.append(live)
        state = np.where(live, tables.next_state[state, action], state)
    return np.stack(states), np.stack(actions), np.stack(alive), state


def policy_gradient(pi: np.ndarray, eps: float, states: np.ndarray, actions: np.ndarray, alive: np.ndarray,
                    adv: np.ndarray) -> np.ndarray:
    """sum over steps taken of adv * d log mu(a | s) / d logits, with mu = (1 - eps) pi + eps / 4; returns (S, n, 4).

    pi (S, n, 4); states, actions, alive (T, S, E); adv (S, E), one advantage per mini-episode.
    For a softmax, d log mu(a|s) / d logits(s, .) = (1 - eps) pi(a|s) / mu(a|s) * (onehot(a) - pi(.|s)),
    and only the visited state's logits move. The onehot part is a count per (state, action) and the
    pi part a count per state, both weighted, so one bincount each does the whole batch.
    """
    S, n, A = pi.shape
    seed_ix = np.arange(S)[None, :, None]
    p_taken = pi[seed_ix, states, actions]                                  # (T, S, E)
    ratio = (1 - eps) * p_taken / ((1 - eps) * p_taken + eps / A)
    w = (adv[None] * alive * ratio).reshape(-1)                             # (T*S*E,)
    flat_s = (seed_ix * n + states).reshape(-1)
    count_sa = np.bincount(flat_s * A + actions.reshape(-1), weights=w, minlength=S * n * A).reshape(S, n, A)
    count_s = np.bincount(flat_s, weights=w, minlength=S * n).reshape(S, n)
    return count_sa - pi * count_s[..., None]


@dataclass
class Training:
    """What one training run recorded: measurements (R, S) at the recorded updates, and the final logits."""

    episodes_seen: list[int]
    """Mini-episodes played per seed at each record (R of them)."""
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    """neutrality, usefulness, p_delay, coins, train_reward: each (R, S)."""
    logits: np.ndarray | None = None
    """(S, n, 4) the final policy's logits."""


def train(tables: Tables, reward: str, minis: int, credit: str, episodes: int, batch: int, lr: float, lam: float,
          seeds: Sequence[int], explore: float = 0.5, records: int = 20,
          on_update: Callable[[int], None] | None = None) -> Training:
    """Tabular REINFORCE from the uniform policy for ``episodes`` mini-episodes per seed, all seeds at once.

    Each update plays max(1, batch // minis) whole meta-episodes of ``minis`` mini-episodes per seed.
    The agent acts by mu = (1 - eps) pi + eps * uniform, eps falling linearly from ``explore`` to 0
    over the first half of training, and the gradient is that of log mu, so the update stays on-policy.
    Without it, softmax REINFORCE settles on whichever length it first learns to collect coins at and
    never learns the other (the gradient at unvisited states is zero).
    ``records`` measurements of pi are taken, evenly spaced, the last after the last update.
    """
    if reward not in REWARDS:
        raise ValueError(f"reward = {reward!r}; accepted: {', '.join(REWARDS)}")
    if not 0 <= explore < 1:
        raise ValueError(f"explore = {explore}; the starting share of random actions must be in [0, 1)")
    if minis < 1 or episodes < 1 or batch < 1 or lr <= 0 or not 0 < lam <= 1 or not seeds:
        raise ValueError(f"drest: minis = {minis}, episodes = {episodes}, batch = {batch}, lr = {lr}, lam = {lam}; "
                         f"need whole numbers >= 1, lr > 0, 0 < lam <= 1 and at least one seed")
    if credit not in ("mini", "meta"):
        raise ValueError(f"credit = {credit!r}; accepted: 'mini' or 'meta'")
    S, n, A = len(seeds), tables.size, len(MOVES)
    gens = [np.random.default_rng(int(s)) for s in seeds]
    metas = max(1, batch // minis)
    per_update = metas * minis
    updates = max(1, -(-episodes // per_update))
    record_at = {max(1, round(updates * (r + 1) / records)) for r in range(records)}
    logits = np.zeros((S, n, A))
    baseline = None                                                         # (S, minis) running mean return
    history = Training(episodes_seen=[], metrics={name: [] for name in
                                                  ("neutrality", "usefulness", "p_delay", "coins", "train_reward")})
    rewards_seen = []
    for u in range(1, updates + 1):
        pi = softmax(logits)                                                # (S, n, 4)
        eps = explore * max(0.0, 1 - 2 * (u - 1) / updates)
        mu = (1 - eps) * pi + eps / A
        # 1. play metas x minis mini-episodes per seed
        states, actions, alive, final = rollout(tables, mu, per_update, gens)   # (T, S, E) x3, (S, E)
        # 2. reward each mini-episode from the lengths and coins of its meta-episode, in order
        lengths = tables.length[final].reshape(S, metas, minis)
        coins = tables.coins[final].reshape(S, metas, minis)
        rewards = REWARDS[reward](lengths, coins, tables.max_coins, lam)     # (S, M, N)
        rewards_seen.append(rewards.mean(axis=(1, 2)))
        # 3. returns, and advantages against a running baseline per seed and position i in the meta-episode
        #    (DReST rewards of late mini-episodes swing far more than early ones)
        g = returns(rewards, credit)                                        # (S, M, N)
        batch_mean = g.mean(1)                                              # (S, N)
        baseline = batch_mean if baseline is None else baseline
        adv = g - baseline[:, None, :]
        baseline = 0.9 * baseline + 0.1 * batch_mean
        # Scale-free steps: DReST returns range over orders of magnitude as N grows.
        adv = adv / (adv.reshape(S, -1).std(1)[:, None, None] + 1e-8)
        # 4. the REINFORCE gradient, summed over every step taken; 5. ascend, averaged over the batch
        grad = policy_gradient(pi, eps, states, actions, alive, adv.reshape(S, per_update))
        logits += lr * grad / per_update
        if on_update is not None:
            on_update(u)
        if u in record_at:
            m = evaluate(tables, logits)
            history.episodes_seen.append(u * per_update)
            history.metrics["neutrality"].append(m["neutrality"])
            history.metrics["usefulness"].append(m["usefulness"])
            history.metrics["p_delay"].append(m["p_length"][:, 1])
            history.metrics["coins"].append(m["coins"])
            history.metrics["train_reward"].append(np.mean(rewards_seen, 0))
            rewards_seen = []
    history.metrics = {name: np.stack(v) for name, v in history.metrics.items()}
    history.logits = logits
    return history
