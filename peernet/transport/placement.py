"""Receiving a message's payload frames straight into buffers its receiver chose from the header."""

from __future__ import annotations

from collections.abc import Callable, Sequence

#: Chooses where a message's payload goes, from its sender's id and its first (header) frame: one writable
#: byte view per payload frame, in order, or None to receive the payload as ordinary frames.
Place = Callable[[int, memoryview], "Sequence[memoryview] | None"]

#: Frames a peernet message can have: a header and the 1 MiB chunks of its tensors (a 1 GB model's pair of
#: tensors is ~2,000). Anything with more is read frame by frame and thrown away as it comes.
MAX_FRAMES = 4096

_EMPTY = memoryview(b"")


def fill(views: Sequence[memoryview], read_into: Callable[[memoryview], int], more: Callable[[], bool],
         max_frames: int) -> list[memoryview]:
    """Read the rest of a message, frame ``i`` into ``views[i]``, and return what each frame became.

    ``read_into(view)`` reads the next frame into ``view`` and returns the frame's full length (a longer frame
    is cut, as ``zmq.Socket.recv_into`` does); ``more()`` says whether another frame follows. A frame that
    fits its view exactly comes back as that view; a shorter one as the part it filled; one longer than its
    view, or one past the last view, as an empty view (at most ``max_frames`` of those are listed, the rest
    are read and discarded). So a message that does not match its header is still received whole, never
    into memory the receiver did not offer, and its validation sees the wrong frame count or length.
    """
    out: list[memoryview] = []
    sink = bytearray()  # reading into an empty buffer discards the frame
    while more():
        index = len(out)
        if index < len(views):
            view = views[index]
            got = read_into(view)
            out.append(view if got == view.nbytes else view[:got] if got < view.nbytes else _EMPTY)
        else:
            read_into(memoryview(sink))
            if index <= max_frames:
                out.append(_EMPTY)
    return out
