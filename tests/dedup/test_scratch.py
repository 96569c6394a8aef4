"""The per-thread work array: reused while large enough, remade (never two held) when not,
and separate per thread."""

from __future__ import annotations

import threading

import numpy as np

from pixsieve.dedup.scratch import rows_buffer


def test_reused_while_large_enough_and_separate_per_thread():
    a = rows_buffer(100, 8)
    b = rows_buffer(40, 8)
    assert b.shape == (40, 8) and np.shares_memory(a, b)
    c = rows_buffer(200, 8)
    assert c.shape == (200, 8) and not np.shares_memory(a, c)
    assert not np.shares_memory(rows_buffer(10, 4), c)  # another width: a new array
    other = []
    thread = threading.Thread(target=lambda: other.append(rows_buffer(10, 4)))
    thread.start()
    thread.join()
    assert not np.shares_memory(other[0], rows_buffer(10, 4))


def test_released_at_the_end_of_a_task():
    """Executors whose workers outlive a task (Ray) run the task-end hooks: the array goes."""
    from pixsieve.calls import task_end

    a = rows_buffer(100, 8)
    assert np.shares_memory(a, rows_buffer(50, 8))
    task_end()
    assert not np.shares_memory(a, rows_buffer(50, 8))


def test_released_when_a_serial_map_ends():
    """Calls run in the calling thread (one worker): the array goes when the map ends."""
    from pixsieve.calls import serial_calls

    kept = list(serial_calls(lambda n: rows_buffer(n, 8), [(30,), (20,)]))
    assert np.shares_memory(kept[0], kept[1])  # reused within the map
    assert not np.shares_memory(kept[0], rows_buffer(10, 8))  # released after it
