"""Property-based fuzzing of what the service and the loaders accept from others: the HTTP API
from its OpenAPI description (schemathesis), the WebSocket messages and the file formats
(hypothesis). Whatever comes in: no 5xx, no exception other than the documented error, no hang
(every test is bounded in examples and time), no session left open, a bounded memory peak, and no
NaN in an answer. Sized for a few minutes on 2 cores; the seeds are fixed, so a failure
reproduces."""

from __future__ import annotations

import io
import json
import math
import pickle
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

pytest.importorskip("fastapi", reason="the web service needs skelgraph[serve]")

from helpers import TINY_INFOGCN2, write_infogcn2_checkpoint
from hostile import HOSTILE_MESSAGES
from serving import ready_client, running
from test_data import make_penn_root, random_clip

from skelgraph.io import load_pyskl, save_pyskl
from skelgraph.serve import create_app
from skelgraph.serve.inputs import InputError, load_skeleton_upload

#: the most memory (bytes traced by tracemalloc) one fuzzed input may cost
MAX_PEAK = 64 * 2**20
#: the whole server process is traced while it serves, threads left by earlier tests of the same
#: session included; the bombs refused (a .mat unpacking to 885 MB, an .npz to 2.6 GB) lie far above
MAX_SERVER_PEAK = 256 * 2**20


def fuzz(examples: int) -> settings:
    """Hypothesis settings for :obj:`examples` examples: no deadline (2 shared cores are slow
    now and then), no example database (every run tries the same inputs)."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    path = write_infogcn2_checkpoint(
        tmp_path_factory.mktemp("fuzz") / "tiny.pt",
        ["a", "b", "c"],
        **TINY_INFOGCN2,
        num_future=2,
    )
    return create_app(path, max_sessions=2, max_upload_bytes=1_000_000, max_errors=10**6)


@pytest.fixture(scope="module")
def client(app) -> Iterator[object]:
    with ready_client(app) as c:
        yield c


# ---------------------------------------------------------------------------------------------
# the HTTP API from its OpenAPI description


def test_http_api_from_its_openapi_schema(app) -> None:
    """schemathesis generates valid and invalid requests for every operation (multipart uploads
    with random files included): none gets a 5xx, and no upload or session stays counted."""
    schemathesis = pytest.importorskip("schemathesis")
    from schemathesis import GenerationMode

    with running(app) as address:
        schema = schemathesis.openapi.from_url(f"http://{address}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.path for op in operations} >= {"/health", "/v1/models", "/v1/recognize"}
        tracemalloc.start()
        try:
            for operation in operations:
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                    @seed(0)
                    @fuzz(40)
                    @given(case=operation.as_strategy(generation_mode=mode))
                    def call(case) -> None:
                        response = case.call(base_url=f"http://{address}", timeout=30)
                        assert response.status_code < 500, (case, response.text[:500])

                    try:
                        call()
                    except Unsatisfiable:  # no invalid request exists (no parameters, no body)
                        assert mode == GenerationMode.NEGATIVE
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        service = app.state.service
        assert service.uploads == 0 and service.sessions == 0
    assert peak < MAX_SERVER_PEAK, peak


# ---------------------------------------------------------------------------------------------
# WebSocket messages

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(["keypoints", "reset", "layout", "x"]), children, max_size=3
        )
    ),
    max_leaves=40,
)
NUMBERS = st.one_of(
    st.floats(min_value=-2e6, max_value=2e6, allow_nan=False),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([0, 1, 1e6, -1e6, 1e-30, 5e-324, 1.7e308, None]),
)
ROWS = st.lists(st.lists(NUMBERS, min_size=2, max_size=4), min_size=15, max_size=18)
MESSAGES = st.one_of(
    st.builds(lambda rows: json.dumps({"keypoints": rows}), ROWS),
    st.builds(json.dumps, JSON_VALUES),
    st.text(max_size=200),
    st.sampled_from(HOSTILE_MESSAGES),
    st.builds(
        lambda depth, text: "[" * depth + text + "]" * depth, st.integers(0, 3000), st.text()
    ),
)


def test_stream_messages(client) -> None:
    """Every message gets one reply, in order: a prediction with finite numbers, a reset, or an
    error with its reason; the stream never ends and its slot is freed after."""
    with client.websocket_connect("/v1/stream") as ws:
        assert ws.receive_json()["type"] == "hello"

        @seed(0)
        @fuzz(300)
        @given(message=MESSAGES)
        def exchange(message: str) -> None:
            ws.send_text(message)
            reply = ws.receive_json()
            assert reply["type"] in ("prediction", "error", "reset"), reply
            if reply["type"] == "error":
                assert reply["error"] and "close" not in reply, reply
            if reply["type"] == "prediction":
                numbers = [*reply["probabilities"].values(), reply["score"]]
                assert all(math.isfinite(p) for p in numbers)
                assert np.isfinite(np.asarray(reply["forecast"], dtype=float)).all()

        exchange()
    assert client.get("/health").json()["sessions"] == 0


# ---------------------------------------------------------------------------------------------
# file formats


def valid_files(tmp_path: Path) -> dict[str, bytes]:
    clip = random_clip(0, 8)
    clip.save(tmp_path / "clip.npz")
    root = make_penn_root(tmp_path / "penn", [("squat", True, 8)])
    return {
        "clip.npz": (tmp_path / "clip.npz").read_bytes(),
        "clip.mat": next((root / "labels").glob("*.mat")).read_bytes(),
        "clip.json": json.dumps(
            {"keypoints": clip.keypoints.round(2).tolist(), "layout": "coco17", "fps": 30}
        ).encode(),
    }


EDITS = st.lists(
    st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=8)), min_size=1, max_size=6
)


def mutated(data: bytes, edits: list[tuple[float, bytes]], cut: float) -> bytes:
    """:obj:`data` with bytes overwritten at the given relative positions, then truncated."""
    out = bytearray(data)
    for where, new in edits:
        i = int(where * (len(out) - 1))
        out[i : i + len(new)] = new
    return bytes(out[: max(1, int(cut * len(out)))])


def test_upload_loaders_raise_only_input_errors(tmp_path: Path) -> None:
    """Mutated and truncated ``.npz``, ``.mat`` and ``.json`` files are refused with an
    :class:`InputError` (a 4xx), never anything else, within a bounded memory peak."""
    for name, data in valid_files(tmp_path).items():
        load_skeleton_upload(data, name)  # the unmutated file loads
        fuzz_upload_loader(data, name)


def fuzz_upload_loader(data: bytes, name: str) -> None:
    @seed(0)
    @fuzz(150)
    @given(edits=EDITS, cut=st.floats(0.05, 1.0) | st.just(1.0))
    def load(edits: list[tuple[float, bytes]], cut: float) -> None:
        tracemalloc.start()
        try:
            clip = load_skeleton_upload(mutated(data, edits, cut), name, max_frames=3600)
            assert np.isfinite(clip.keypoints[clip.keypoints[..., -1] > 0]).all()
        except InputError as e:
            assert 400 <= e.status < 500 and e.reason
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < MAX_PEAK, peak

    load()


def test_pyskl_loader_raises_only_value_errors(tmp_path: Path) -> None:
    clips = [random_clip(i, 6, label=i, source=f"s{i}") for i in range(2)]
    save_pyskl(clips, tmp_path / "ann.pkl", split={"train": ["s0"], "test": ["s1"]})
    data = (tmp_path / "ann.pkl").read_bytes()
    annotation = pickle.loads(data)["annotations"][0]

    @seed(0)
    @fuzz(150)
    @given(
        edits=EDITS,
        cut=st.floats(0.05, 1.0) | st.just(1.0),
        field=st.sampled_from(sorted(annotation)),
        value=JSON_VALUES,
    )
    def load(edits: list[tuple[float, bytes]], cut: float, field: str, value: object) -> None:
        path = tmp_path / "fuzzed.pkl"
        changed = pickle.loads(data)
        changed["annotations"][1][field] = value
        for content in (mutated(data, edits, cut), pickle.dumps(changed)):
            path.write_bytes(content)
            try:
                load_pyskl(path)
            except ValueError as e:
                assert str(path) in str(e)

    load()


def test_bounded_json_parser() -> None:
    from skelgraph import _safe_json

    @seed(0)
    @fuzz(300)
    @given(text=st.text(alphabet='[]{}",:0123456789.eE+-nul tr\\a', max_size=300))
    def parse(text: str) -> None:
        try:
            _safe_json.loads(text, "text")
        except ValueError as e:
            assert str(e).startswith("text: ")

    parse()
    with pytest.raises(ValueError, match="nested at most 32 levels"):
        _safe_json.loads(io.StringIO("[" * 33 + "]" * 33).read(), "text")
