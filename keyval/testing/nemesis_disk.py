"""The nemesis's disk fault: the tail of a stopped node's newest log segment damaged, as a
disk that lost or garbled its last writes leaves it (``keyval/testing/nemesis_faults.py``)."""
from __future__ import annotations

from pathlib import Path

from keyval_plugins.storage.segment.format import BLOCK_HEADER, scan_segment


def damage_last_segment(log_dir: Path, variant: float, where: float) -> str:
    """Damage the tail of the newest segment as a failing disk could: cut it inside one of its
    last blocks (variant < 0.5) or flip a byte in the last block's body. What it did, in words."""
    segments = sorted(log_dir.glob("*.seg"))
    if not segments:
        return "no segment to damage"
    path = segments[-1]
    raw = path.read_bytes()
    try:
        scan = scan_segment(str(path), raw, last=True)
    except Exception as exc:  # noqa: BLE001 - then the node will say so when it starts
        return f"left {path.name} alone: it does not scan ({exc})"
    blocks = sorted(set(scan.blk))
    if not blocks:
        return f"{path.name} holds no block"
    ends = blocks[1:] + [scan.end]
    if variant < 0.5:
        k = max(0, len(blocks) - 1 - int(where * 3))  # one of the last three blocks
        cut = blocks[k] + int(where * (ends[k] - blocks[k]))
        lost = len(scan.terms) - scan.blk.tolist().index(blocks[k])
        with open(path, "r+b") as f:
            f.truncate(cut)
        return (f"cut {path.name} at byte {cut} (inside block {len(blocks) - k} from the end; "
                f"{lost} entries from index {scan.first + len(scan.terms) - lost} on)")
    body = blocks[-1] + BLOCK_HEADER.size
    at = body + int(where * (scan.end - body))
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))
    lost = len(scan.terms) - scan.blk.tolist().index(blocks[-1])
    return (f"flipped byte {at} of {path.name} (body of the last block: {lost} entries from index "
            f"{scan.first + len(scan.terms) - lost} on)")
