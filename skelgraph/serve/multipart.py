"""The uploaded file of a ``multipart/form-data`` body, parsed without the event loop.

Starlette parses forms on the event loop, so a large upload would stall every stream while it is
taken apart. :func:`file_field` parses a body already received (in a worker thread) with
python-multipart, keeping only the field it is asked for.
"""

from __future__ import annotations

from python_multipart.multipart import MultipartParser, parse_options_header

from skelgraph.serve.inputs import InputError

__all__ = ["file_field"]

#: the most parts a body may have (the form sends one)
MAX_PARTS = 8
#: the most bytes of one part's headers
MAX_HEADER_BYTES = 8192


def file_field(chunks: list[bytes], content_type: str, name: str = "file") -> tuple[bytes, str]:
    """The content and file name of the file field :obj:`name` in a multipart body, given as
    its chunks; they are consumed (emptied from the list) as they are parsed, so that the body
    is held about once.

    Raises:
        InputError: 400 for a malformed body, one with more than :data:`MAX_PARTS` parts or
            without the file field.
    """
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise InputError("upload: multipart/form-data without a boundary", status=400)
    parts: list[tuple[dict[bytes, bytes], list[bytes]]] = []
    header: list[bytes] = [b"", b""]  # the name and value being read

    def on_part_begin() -> None:
        if len(parts) == MAX_PARTS:
            raise InputError(f"upload: expected at most {MAX_PARTS} form fields", status=400)
        parts.append(({}, []))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]
        if len(header[0]) + len(header[1]) > MAX_HEADER_BYTES:
            raise InputError("upload: a form field's header is too long", status=400)

    def on_header_end() -> None:
        parts[-1][0][header[0].lower()] = header[1]
        header[:] = [b"", b""]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1][1].append(data[start:end])

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
        },
    )
    chunks.reverse()
    try:
        while chunks:
            parser.write(chunks.pop())
        parser.finalize()
    except InputError:
        raise
    except Exception as e:  # python-multipart's errors for malformed bodies
        raise InputError(f"upload: malformed multipart body ({e})", status=400) from None
    fields = []
    for headers, chunks in parts:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        field = disposition.get(b"name", b"").decode("utf-8", "replace")
        fields.append(field)
        if field == name and b"filename" in disposition:
            filename = disposition[b"filename"].decode("utf-8", "replace")
            return b"".join(chunks), filename
    raise InputError(
        f"upload: expected a file in form field {name!r}, got fields {sorted(fields)}", status=400
    )
