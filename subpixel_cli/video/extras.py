"""What a container carries besides frames and packets: chapters, attachments (fonts for MKV
subtitles), global and per-stream tags, and stream dispositions (default, forced…). Each is
copied where the output container can hold it; what it cannot hold is named in a note."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

# Tags that describe the old file rather than its content: the muxer and the encoder write fresh
# ones, and mkvmerge's statistics (DURATION, NUMBER_OF_FRAMES, BPS…) would be stale.
_STALE_TAGS = {"encoder", "major_brand", "minor_version", "compatible_brands", "duration", "number_of_frames",
               "number_of_bytes", "bps", "_statistics_writing_app", "_statistics_writing_date_utc",
               "_statistics_tags", "vendor_id"}
_ATTACHMENT_MUXERS = {"matroska"}  # WebM, MP4 and MOV refuse attachments
_CHAPTER_MUXERS = {"matroska", "webm", "mp4", "mov", "nut"}  # AVI and MPEG-TS drop them silently
_CHAPTER_TIME_BASE = Fraction(1, 1000)


def kept_tags(metadata: dict[str, str]) -> dict[str, str]:
    """``metadata`` without the tags that describe the old encode (see ``_STALE_TAGS``)."""
    return {k: v for k, v in metadata.items() if k.lower() not in _STALE_TAGS and not k.upper().startswith("BPS")}


def copy_stream_extras(source: Any, out: Any) -> None:
    """Tags (title, language, handler…) and disposition of stream ``source`` onto ``out``."""
    out.metadata.update(kept_tags(dict(source.metadata)))
    if source.disposition:
        out.disposition = source.disposition


def copy_container_extras(source: Any, out: Any, start: float, end: float | None, notes: list[str]) -> None:
    """Global tags, chapters and attachments of the input container ``source`` onto ``out``.

    ``start``/``end``: the part of the input taken, in seconds of the input's own clock (its
    start time included); chapters are cut to it and shifted to start at 0.
    """
    out.metadata.update(kept_tags(dict(source.metadata)))
    chapters = _chapters_in(source, start, end)
    fmt = out.format.name.split(",")[0]
    if chapters and fmt in _CHAPTER_MUXERS:
        out.set_chapters(chapters)
    elif chapters:
        notes.append(f"{len(chapters)} chapter(s) not kept: {fmt} cannot hold chapters (use .mkv or .mp4)")
    attachments = [s for s in source.streams if s.type == "attachment"]
    if attachments and fmt not in _ATTACHMENT_MUXERS:
        names = ", ".join(_attachment_name(s) for s in attachments)
        notes.append(f"{len(attachments)} attachment(s) ({names}) not kept: {fmt} cannot hold attachments (use .mkv)")
        return
    for s in attachments:
        data = s.data
        if not data:
            notes.append(f"attachment {_attachment_name(s)} not kept: it is empty or unreadable")
            continue
        s_out = out.add_attachment(_attachment_name(s), s.mimetype or "application/octet-stream", bytes(data))
        copy_stream_extras(s, s_out)


def _attachment_name(stream: Any) -> str:
    return getattr(stream, "name", None) or stream.metadata.get("filename") or f"stream {stream.index}"


def _chapters_in(source: Any, start: float, end: float | None) -> list[dict[str, Any]]:
    """The input's chapters that overlap ``start``…``end``, clipped to it, shifted to start at 0,
    in milliseconds."""
    kept = []
    for ch in source.chapters():
        tb = ch["time_base"] or Fraction(1, 1_000_000_000)
        c_start, c_end = float(ch["start"] * tb), float(ch["end"] * tb)
        if c_end <= start or (end is not None and c_start >= end):
            continue
        c_start, c_end = max(c_start, start), c_end if end is None else min(c_end, end)
        kept.append({"id": len(kept) + 1, "start": round((c_start - start) / _CHAPTER_TIME_BASE),
                     "end": round((c_end - start) / _CHAPTER_TIME_BASE), "time_base": _CHAPTER_TIME_BASE,
                     "metadata": dict(ch["metadata"])})
    return kept
