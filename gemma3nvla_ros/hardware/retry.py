"""Retrying a servo-bus transaction, LeRobot's ``num_retry`` with the outcome counted.

A Feetech bus now and then answers with a corrupted status packet (the SDK's "Incorrect status
packet!": a bad checksum, or a reply cut short) or not at all, more often while several joints move.
LeRobot 0.6.1 retries a failed ``sync_read`` ``num_read_retries`` (2) times at once, with no pause; so
does the bridge, for every transaction. What LeRobot only logs at debug level is counted here: every
extra try, every transaction a retry rescued, every transaction that failed all its tries (which the
caller then reports as a fault). Pure: the attempt is injected.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

T = TypeVar("T")

MAX_RETRIES = 10  # each retry of a silent motor costs a full reply timeout in the control loop


class RetryCounters(Protocol):
    transactions: int
    retries: int  # extra tries made
    recovered: int  # transactions that failed at first and succeeded on a retry
    failed: int  # transactions that failed every try


def run_with_retries(
    attempt: Callable[[], T],
    succeeded: Callable[[T], bool],
    retries: int,
    counters: RetryCounters,
    on_failed_try: Callable[[T], None] = lambda _result: None,
) -> tuple[T, bool]:
    """Up to ``1 + retries`` calls of ``attempt``; returns the last result and whether it succeeded.
    Exceptions from ``attempt`` propagate at once (a lost port is not retried here)."""
    if not 0 <= retries <= MAX_RETRIES:
        raise ValueError(f"retries must be within 0..{MAX_RETRIES}, not {retries}")
    counters.transactions += 1
    for n_try in range(1 + retries):
        if n_try:
            counters.retries += 1
        result = attempt()
        if succeeded(result):
            if n_try:
                counters.recovered += 1
            return result, True
        on_failed_try(result)
    counters.failed += 1
    return result, False


class ReconnectBackoff:
    """When to try reopening a lost servo port: ``first_s`` after the loss, then twice as long after each failed
    try, at most ``max_s`` apart (a USB adapter that is gone stays gone for a while; a glitch comes back at once).
    Pure: times are steady-clock nanoseconds passed in."""

    def __init__(self, first_s: float = 0.1, max_s: float = 5.0):
        if not 0 < first_s <= max_s:
            raise ValueError(f"need 0 < first_s <= max_s, got {first_s} and {max_s}")
        self.first_s, self.max_s = first_s, max_s
        self.delay_s = first_s
        self._next_ns = 0

    def lost(self, now_ns: int) -> None:
        self.delay_s = self.first_s
        self._next_ns = now_ns + int(self.delay_s * 1e9)

    def due(self, now_ns: int) -> bool:
        return now_ns >= self._next_ns

    def failed(self, now_ns: int) -> None:
        self.delay_s = min(self.max_s, self.delay_s * 2)
        self._next_ns = now_ns + int(self.delay_s * 1e9)
