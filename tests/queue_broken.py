"""A deliberately broken queue backend: the negative control of the queue race harness.

``read-then-delete``: ``pop`` reads the head item (LINDEX) and then
deletes it (LREM) in a separate command: two consumers that read the
head before either deletes it both get the item. This is the race the real
backend's one-script pop avoids; :func:`tests.queue_racing.drain_race` must
count duplicates with it.
"""

from __future__ import annotations

from taskflow_exclusive.queues.redis import RedisQueueBackend

READ_THEN_DELETE = "read-then-delete"


class ReadThenDeleteBackend(RedisQueueBackend):
    def pop(self, count: int) -> list[tuple[str, bytes]]:
        taken = []
        with self._reaching():
            for _ in range(count):
                head = self._client.lindex(self.key["ready"], 0)
                if head is None:
                    break
                self._client.lrem(self.key["ready"], 1, head)
                taken.append(self._split(head))
        return taken


def broken_backend(kind: str, spec: str, name: str) -> RedisQueueBackend:
    if kind != READ_THEN_DELETE:
        raise ValueError(f"unknown broken queue backend {kind!r}")
    return ReadThenDeleteBackend(spec, name)
