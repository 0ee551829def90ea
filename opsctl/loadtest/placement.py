"""Users across regions (a profile's ``regions``): which region user ``i`` connects in, as a
pure function of its index, so every Locust worker places every user the same way without
talking to the others (users are numbered across workers, loadtests/locustfile.py).

Users ``2k`` and ``2k+1`` are DM partners (pair ``k``). A share ``cross_share`` of the pairs
is split across two regions (spread evenly: Bresenham over ``k``); the others are in one
region. The first user of a cross pair is placed by the mix, its partner by the mix without
the first's region; a same-region pair goes where the mix still needs users once the cross
pairs are counted (``same_pair_shares``), so over many users each region gets its share.
Regions are drawn from low-discrepancy sequences (golden ratio and friends): a few users
already come close to the shares, and nothing is random.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

CROSS = "cross"  # a delivery whose sender and receiver are connected in different regions
SAME = "same"
# Irrational steps, one per choice, so the choices do not line up with each other.
_FIRST = 0.6180339887498949  # golden ratio - 1
_SECOND = 0.7548776662466927  # 1 / plastic number
SHARE_TOLERANCE = 1e-6


def _pick(shares: Sequence[tuple[str, float]], x: float) -> str:
    """The region whose slice of [0, 1) holds ``x`` (slices in the order given)."""
    total = sum(share for _, share in shares)
    running = 0.0
    for region, share in shares:
        running += share / total
        if x < running:
            return region
    return shares[-1][0]


def _point(k: int, step: float) -> float:
    return math.modf((k + 0.5) * step)[0]


def cross_pair_shares(mix: Mapping[str, float]) -> dict[str, float]:
    """Each region's share of the users of cross pairs: the first user by the mix, the second
    by the mix without the first's region."""
    second = {
        r: w * sum(wa / (1 - wa) for a, wa in mix.items() if a != r and wa < 1)
        for r, w in mix.items()
    }
    return {r: (mix[r] + second[r]) / 2 for r in mix}


def same_pair_shares(mix: Mapping[str, float], cross_share: float) -> dict[str, float]:
    """Where same-region pairs go so that, with the cross pairs, each region gets its share of
    the users. ValueError when ``cross_share`` is too high for the mix (a cross pair puts one
    user in each of two regions: with 70/30 at most 60 % of the pairs can cross)."""
    if cross_share <= 0 or len(mix) < 2:
        return dict(mix)
    cross = cross_pair_shares(mix)
    limit = min(mix[r] / cross[r] for r in mix)
    if cross_share > limit + SHARE_TOLERANCE:
        raise ValueError(
            f"cross_share {cross_share:g} cannot be met with this mix: cross pairs would put "
            f"more users in some region than its share; at most {math.floor(limit * 1000) / 1000:g}"
        )
    if cross_share >= 1:
        return dict(mix)  # no same-region pairs (the limit check made the shares agree)
    same = {r: max((mix[r] - cross_share * cross[r]) / (1 - cross_share), 0.0) for r in mix}
    return same


def is_cross_pair(pair: int, cross_share: float) -> bool:
    """Bresenham: exactly ``cross_share`` of every run of pairs, give or take one."""
    return math.floor((pair + 1) * cross_share) > math.floor(pair * cross_share)


def region_of(index: int, mix: Mapping[str, float], cross_share: float) -> str:
    """The region user ``index`` connects in."""
    pair, second = divmod(index, 2)
    ordered = list(mix.items())
    if not is_cross_pair(pair, cross_share) or len(ordered) < 2:
        same = same_pair_shares(mix, cross_share)
        return _pick([(r, same[r]) for r, _ in ordered if same[r] > 0], _point(pair, _FIRST))
    first = _pick(ordered, _point(pair, _FIRST))
    if not second:
        return first
    return _pick([(r, w) for r, w in ordered if r != first], _point(pair, _SECOND))


def locality(sender_region: str, receiver_region: str) -> str:
    return SAME if sender_region == receiver_region else CROSS


def parse_region_targets(raw: str) -> dict[str, tuple[str, ...]]:
    """``LOADTEST_REGION_TARGETS``: ``region=url,url;region=url`` -> region -> URLs."""
    targets: dict[str, tuple[str, ...]] = {}
    for part in raw.split(";"):
        region, _, urls = part.partition("=")
        if region.strip() and urls:
            targets[region.strip()] = tuple(u for u in urls.split(",") if u)
    return targets


def format_region_targets(targets: Mapping[str, Sequence[str]]) -> str:
    return ";".join(f"{region}={','.join(urls)}" for region, urls in targets.items())


def connect_order(
    region: str, index: int, targets: Mapping[str, Sequence[str]]
) -> list[tuple[str, str]]:
    """(region, URL) in the order user ``index`` tries them: a gateway of its own region
    first (users spread over the region's gateways), then one of every other region, as a
    client's global load balancer would send it when its region stops answering."""
    order: list[tuple[str, str]] = []
    for name in [region, *(r for r in targets if r != region)]:
        urls = list(targets.get(name, ()))
        if urls:
            order.append((name, urls[index % len(urls)]))
    return order
