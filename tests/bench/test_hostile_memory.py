"""The hostile-message benchmark's attacks are what docs/security.md describes, and its section renders."""

from __future__ import annotations

from bench.hostile_memory import attacks, render

MB = 1_000_000


def test_attacks_and_render() -> None:
    tiny, big, four, small = attacks(1_760_096, 1000 * MB)
    assert (tiny.frames, tiny.frame_bytes, tiny.connections) == (1_000_000, 1, 1)
    assert big.frame_bytes < 1_760_096 and 1000 * MB - big.frame_bytes < big.frames * big.frame_bytes <= 1000 * MB
    assert four.connections == 4 and four.frames == big.frames
    assert small.frame_bytes < 128 << 10
    spread = {"min": 1.0, "median": 2.0, "max": 3.0, "missing": 0}
    row = {"victim": "node", "allocator": "glibc+trim", "attack": big.name, "repeats": 3, "honest_arrived": 3,
           "stats": {"oversize": 1}, **{k: spread for k in ("peak_mb", "retained_mb", "retained_after_trim_mb")},
           "honest_s": {"min": None, "median": None, "max": None, "missing": 3}}
    text = "\n".join(render({"date": "2026-01-01", "node_max_msg_size": 1_760_096,
                             "bootstrap_max_msg_size": 1 << 20, "results": [row]}))
    assert f"| node | glibc+trim | {big.name} | 2 (1–3) | 2 (1–3) | 2 (1–3) | 3/3 | – | oversize 1 |" in text
