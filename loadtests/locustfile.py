"""Locust users for the IM gateway: thin schedulers over one session each.

``opsctl loadtest`` starts this file (``locust -f loadtests/locustfile.py``, as local processes
or as the on-cluster Jobs) and configures it entirely through the ``LOADTEST_*`` environment.

- loadtests/config.py     that environment, read once (the list of variables is there)
- loadtests/session.py    one device's session: connect and hello, requests with ack tracking,
                          sync and the final sync, live messages and their latency
- loadtests/reporting.py  what the run records and the files it leaves for opsctl
- this file               who each user is (ids, DM partner, group), when it acts (the
                          profile's rates inside the sending window), which behaviour it
                          picks, and the profile's stages as a load shape
"""

from __future__ import annotations

import random
import time
import weakref
from typing import Any

import gevent
import locust.runners
from locust import LoadTestShape, User, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtests.clock import ClockSync
from loadtests.config import RunConfig
from loadtests.kube import InClusterApi, ResultsPublisher
from loadtests.reporting import Measurements, Reporting, recorder
from loadtests.session import ImSession, TokenSigner, backoff_s
from loadtests.storm import StormTracker, in_storm
from opsctl.loadtest.placement import connect_order, region_of

# Workers report to the master every second, so live progress and health stay fresh.
locust.runners.WORKER_REPORT_INTERVAL = 1.0

CONFIG = RunConfig.from_env()
PROFILE = CONFIG.profile
MEASUREMENTS = Measurements(
    clock=ClockSync(skew_ms=CONFIG.clock_skew_ms, correct=CONFIG.clock_correction)
)
PUBLISHER = (
    ResultsPublisher(InClusterApi.from_env(), CONFIG.results_configmap)
    if CONFIG.results_configmap
    else None
)
REPORTING = Reporting(
    MEASUREMENTS,
    CONFIG.out_dir,
    CONFIG.measure_from_s,
    pod_name=CONFIG.pod_name,
    publisher=PUBLISHER,
    regions=PROFILE.regions is not None,
)
REPORTING.install(events)
STORMS = StormTracker(MEASUREMENTS.counters)
SIGN = TokenSigner(CONFIG.jwt_secret_file, CONFIG.jwt_issuer, CONFIG.jwt_audience)
FINAL_SYNC_AFTER_S = 1.0  # after the sending window (at most half the drain): let deliveries land


class Window:
    """This process's sending window: users act until ``send_until``, then each does one
    final sync from ``final_sync_at`` and only reads until Locust stops them."""

    def __init__(self) -> None:
        self.send_until: float | None = None
        self.final_sync_at = float("inf")
        self.users_created = 0

    def start(self) -> None:
        if self.send_until is not None:
            return
        now = time.monotonic()
        self.send_until = now + CONFIG.sending_s
        self.final_sync_at = self.send_until + min(FINAL_SYNC_AFTER_S, PROFILE.drain_s / 2)

    def sending(self, now: float) -> bool:
        return self.send_until is not None and now < self.send_until

    def over(self, now: float) -> bool:
        return self.send_until is not None and now > self.send_until

    def next_user(self) -> int:
        self.users_created += 1
        return self.users_created - 1


WINDOW = Window()
USERS: weakref.WeakSet[ImUser] = weakref.WeakSet()  # this process's live users (storms)


def user_id(index: int) -> str:
    return f"{CONFIG.run_id}-u{index}"


def placement(index: int) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """(URL, region, routes) of user ``index``: with the profile's region mix, a gateway of
    its region (opsctl/loadtest/placement.py) and the other regions to fail over to; without,
    one of the targets."""
    regions = PROFILE.regions
    if regions is None:
        return CONFIG.targets[index % len(CONFIG.targets)], "", ()
    region = region_of(index, regions.mix, regions.cross_share)
    routes = tuple(connect_order(region, index, CONFIG.region_targets))
    if not routes or routes[0][0] != region:
        raise RuntimeError(f"LOADTEST_REGION_TARGETS has no gateway of region {region}")
    return routes[0][1], region, routes


class ImUser(User):
    """One device of one user on one persistent connection. Subclasses choose behaviours.

    The user's own greenlet reads its socket between actions (``pump``), so an idle session
    costs no extra greenlet. Users are numbered across workers (worker i holds i, i + workers,
    ...); user 2k and 2k+1 are each other's DM partner, and groups are runs of group_size users
    whose first member creates the group.
    """

    abstract = True

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        runner = environment.runner
        worker_index = getattr(runner, "worker_index", 0) if runner else 0
        self.index = WINDOW.next_user() * CONFIG.workers + max(worker_index, 0)
        self.user_id = user_id(self.index)
        self.partner_id = user_id(self.index ^ 1)
        size = PROFILE.behaviours.group.group_size
        self.group_id = f"{CONFIG.run_id}-g{self.index // size}"
        self.in_group = self.index % size == 0  # the creator is in from the start
        url, region, routes = placement(self.index)
        self.session = ImSession(
            url=url,
            region=region,
            routes=routes,
            user_id=self.user_id,
            sign=SIGN,
            counters=MEASUREMENTS.counters,
            clock=MEASUREMENTS.clock,
            record=recorder(environment),
            gateway_clock=not isinstance(runner, WorkerRunner),
        )
        self.final_synced = False
        self.padding = "x" * max(PROFILE.message_bytes - 32, 0)
        self.next_action = time.monotonic()
        self.storm: tuple[int, float] | None = None  # (storm, dropped at) while it reconnects
        USERS.add(self)

    def on_start(self) -> None:
        WINDOW.start()
        if self.session.connect(sync={}) and PROFILE.behaviours.group.rate_per_user_s > 0:
            self.join_group()

    def on_stop(self) -> None:
        self.session.drop()

    def join_group(self) -> None:
        """The group's first member creates it with every member; the others are added."""
        size = PROFILE.behaviours.group.group_size
        if self.index % size != 0:
            return
        members = [user_id(self.index + k) for k in range(1, size)]
        self.session.create_group(self.group_id, members)

    def ensure_connected(self) -> bool:
        """Reconnect with backoff; give up when the sending window is over."""
        attempt = 0
        while not self.session.reconnect():
            gevent.sleep(backoff_s(attempt))
            attempt += 1
            if WINDOW.over(time.monotonic()):
                return False
        return True

    def drop_in_storm(self, storm: int, at: float) -> bool:
        """Lose the connection now, as an outage would; False if it was not connected."""
        if not self.session.established or self.storm is not None:
            return False  # not connected, or still saying hello: an outage finds it offline
        self.storm = (storm, at)
        self.session.waiting.clear()  # our own doing: in-flight requests are not errors
        self.session.sever()
        return True

    def storm_reconnect(self) -> bool:
        """After a storm: the protocol's jittered backoff before every attempt, timed from the
        drop; gives up when the sending window ends."""
        assert self.storm is not None
        storm, dropped_at = self.storm
        attempt = 0
        while True:
            gevent.sleep(backoff_s(attempt))
            if self.session.reconnect():
                STORMS.reconnected(storm, attempt + 1, time.monotonic() - dropped_at)
                self.session.record(
                    "STORM", f"storm{storm}", (time.monotonic() - dropped_at) * 1000, None
                )
                self.storm = None
                return True
            attempt += 1
            if WINDOW.over(time.monotonic()):
                STORMS.gave_up(storm, attempt)
                self.session.record(
                    "STORM",
                    f"storm{storm}",
                    (time.monotonic() - dropped_at) * 1000,
                    TimeoutError("not reconnected within the sending window"),
                )
                self.storm = None
                return False

    @task
    def step(self) -> None:
        now = time.monotonic()
        if WINDOW.sending(now):
            if self.session.conn is None:
                if self.storm is not None:
                    if not self.storm_reconnect():
                        return
                elif not self.ensure_connected():
                    return
            if now >= self.next_action:
                self.act()
                self.next_action = max(self.next_action, now) + random.expovariate(
                    PROFILE.behaviours.total_rate
                )
            self.session.pump(max(self.next_action - time.monotonic(), 0.0))
        elif not self.final_synced and now >= WINDOW.final_sync_at:
            self.final_synced = True
            self.session.final_sync()
        else:
            self.session.pump(0.5)

    def act(self) -> None:
        raise NotImplementedError


class ChatUser(ImUser):
    """The traffic mix of the profile: each action picked with its rate as weight."""

    def act(self) -> None:
        weights = PROFILE.behaviours.weights()
        behaviour = random.choices(list(weights), weights=list(weights.values()))[0]
        getattr(self, f"do_{behaviour}")()

    def do_direct(self) -> None:
        self.session.send({"to": self.partner_id}, "dm", self.padding)

    def do_group(self) -> None:
        if not self.in_group:
            # Until the creator has added us, a group send would be refused (not_member).
            members = {"op": "group_members", "group_id": self.group_id}
            if self.session.request(members, "", "") is None:
                self.do_direct()
                return
            self.in_group = True
        self.session.send({"group_id": self.group_id}, "group", self.padding)

    def do_presence(self) -> None:
        # Subscription churn: subscribe to a few neighbours, then drop them again.
        users = [user_id((self.index + k) % max(PROFILE.users, 2)) for k in (1, 2, 3)]
        subscribe = {"op": "presence_subscribe", "users": users}
        if self.session.request(subscribe, "PRESENCE", "subscribe"):
            unsubscribe = {"op": "presence_unsubscribe", "users": users}
            self.session.request(unsubscribe, "PRESENCE", "unsubscribe")

    def do_reconnect(self) -> None:
        # Reconnect storm member: drop and come straight back with our cursors.
        self.session.drop()
        MEASUREMENTS.counters["reconnects"] += 1
        self.session.reconnect()

    def do_offline_sync(self) -> None:
        self.session.drop()
        gevent.sleep(PROFILE.behaviours.offline_sync.offline_s)
        started = time.perf_counter()
        counters = MEASUREMENTS.counters
        before = counters["delivered_sync"]
        if self.session.reconnect():
            self.session.record("SYNC", "offline", (time.perf_counter() - started) * 1000, None)
            counters["offline_synced_messages"] += counters["delivered_sync"] - before


def storm_now(index: int, share_pct: float) -> int:
    """Drop the chosen share of this process's users at once; returns how many dropped."""
    at = time.monotonic()
    dropped = sum(
        1
        for user in list(USERS)
        if in_storm(user.index, share_pct) and user.drop_in_storm(index, at)
    )
    STORMS.dropped(index, dropped)
    return dropped


def _on_storm(environment: Environment, msg: Any, **_: Any) -> None:
    storm_now(int(msg.data["index"]), float(msg.data["share_pct"]))


def _schedule_storms(environment: Environment) -> None:
    """The master (or a single process) triggers every storm in every worker at one instant."""
    started = time.monotonic()
    runner = environment.runner
    for index, storm in enumerate(PROFILE.storms):
        gevent.sleep(max(started + storm.at_s - time.monotonic(), 0.0))
        if isinstance(runner, MasterRunner):
            runner.send_message("storm", {"index": index, "share_pct": storm.share_pct})
        else:
            storm_now(index, storm.share_pct)


@events.init.add_listener
def _register_storms(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message("storm", _on_storm)


@events.test_start.add_listener
def _start_window(environment: Environment, **_: Any) -> None:
    if not isinstance(environment.runner, MasterRunner):
        WINDOW.start()
    if PROFILE.storms and not isinstance(environment.runner, WorkerRunner):
        gevent.spawn(_schedule_storms, environment)


if PROFILE.stages:

    class ProfileShape(LoadTestShape):
        """The profile's stages as a load shape (data, not code)."""

        def tick(self) -> tuple[int, float] | None:
            elapsed = self.get_run_time()
            for stage in PROFILE.stages:
                if elapsed < stage.until_s:
                    return stage.users, stage.spawn_rate
            if elapsed < PROFILE.run_time_s:
                last = PROFILE.stages[-1]
                return last.users, last.spawn_rate
            return None
