"""The reward server under faults: one bad request among many, bodies over the limit, wrong content
types, keys, a taken port, and bounded loopback load. The scoring function here (``scorer``, from
conftest) is a real one over the texts (their lengths), so every answer can be checked by hand; the
run-backed server is tested end to end in ``tests/test_rlhf.py``."""

import http.client
import json
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pyro_irm.cli import main
from pyro_irm.serve import create_app


def post(url, payload=None, raw=None, headers=None):
    """``(status, decoded body)`` of a POST."""
    data = raw if raw is not None else json.dumps(payload).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def _pair(i):
    return {"prompts": [f"question {i}"], "responses": ["x" * (i + 1)]}


def _expected(i):
    return (i + 1) / 10 - len(f"question {i}") / 100


def test_one_bad_request_among_thirty_concurrent_ones_fails_alone(scorer, served):
    app = create_app(scorer, max_wait_ms=50)
    # A lone surrogate, as a client's JSON escape sends it: no tokenizer can encode it.
    surrogate = b'{"prompts": ["q", "q"], "responses": ["ok", "\\ud800 secret"]}'
    boom = {"prompts": ["q", "q"], "responses": ["fine", "boom secret"]}
    with served(app) as base, ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(post, f"{base}/get_reward", _pair(i)) for i in range(30)]
        bad = pool.submit(post, f"{base}/get_reward", raw=surrogate)
        failing = [pool.submit(post, f"{base}/get_reward", boom) for _ in range(2)]
        answers = [future.result() for future in futures]
        assert [status for status, _ in answers] == [200] * 30
        np.testing.assert_allclose(
            [body["rewards"][0] for _, body in answers], [_expected(i) for i in range(30)]
        )
        status, body = bad.result()
        assert status == 400 and body["detail"].startswith(
            "'responses' item 1: character 0 is a lone surrogate"
        )
        for status, body in (future.result() for future in failing):
            assert status == 400 and body == {"detail": "this scorer cannot score 'boom'"}
        assert all("secret" not in json.dumps(body) for _, body in [bad.result()])
        health = json.loads(urllib.request.urlopen(f"{base}/health").read())
        assert health["rows"] == 30 and health["batches"] < 30  # they were batched, and still alone


def test_a_body_over_the_limit_gets_413_and_the_server_goes_on(scorer, served):
    app = create_app(scorer, max_body_bytes=2000)
    big = {"prompts": ["q"], "responses": ["y" * 5000]}
    with served(app) as base:
        status, body = post(f"{base}/get_reward", big)
        assert status == 413 and "limit of 2000 bytes" in body["detail"] and "--max-body-mb" in body["detail"]
        # A chunked body states no length: it is counted as it arrives.
        host, port = base.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        chunks = (json.dumps(big)[i : i + 500].encode() for i in range(0, len(json.dumps(big)), 500))
        connection.request(
            "POST",
            "/get_reward",
            body=chunks,
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        answer = connection.getresponse()
        assert answer.status == 413 and b"limit of 2000 bytes" in answer.read()
        connection.close()
        status, body = post(f"{base}/get_reward", _pair(3))
        assert status == 200 and body["rewards"] == pytest.approx([_expected(3)])


def test_wrong_content_types_and_invalid_bodies_are_named_without_echoing_the_input(scorer, served):
    app = create_app(scorer)
    with served(app) as base:
        request = urllib.request.Request(
            f"{base}/get_reward", data=json.dumps(_pair(1)).encode(), headers={"Content-Type": "text/plain"}
        )
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=30)
        with error.value:
            assert error.value.code == 415
            assert "'Content-Type: application/json'" in json.loads(error.value.read())["detail"]
        status, body = post(f"{base}/get_reward", {"query": ["a private text", 2]})
        assert status == 422 and "private" not in json.dumps(body)
        assert body["detail"][0]["loc"] == ["body", "query", 1]
        status, body = post(f"{base}/score", {"rows": [{"prompt": "a private text"}]})
        assert (
            status == 422
            and "private" not in json.dumps(body)
            and body["detail"][0]["msg"] == "Field required"
        )


def test_an_api_key_is_required_when_set(scorer, served):
    app = create_app(scorer, api_key="s3cret")
    with served(app) as base:
        assert post(f"{base}/get_reward", _pair(2))[0] == 401
        assert post(f"{base}/get_reward", _pair(2), headers={"Authorization": "Bearer wrong"})[0] == 401
        status, body = post(f"{base}/get_reward", _pair(2), headers={"Authorization": "Bearer s3cret"})
        assert status == 200 and body["rewards"] == pytest.approx([_expected(2)])
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{base}/health", timeout=30)
        with error.value:
            assert error.value.code == 401 and error.value.headers["WWW-Authenticate"] == "Bearer"


def _status_with_authorization(base: str, value: bytes) -> int:
    """Status of a POST whose Authorization header is these exact bytes (as a client sends UTF-8)."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        body = json.dumps(_pair(1)).encode()
        connection.putrequest("POST", "/get_reward")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(body)))
        connection.putheader("Authorization", value)
        connection.endheaders(body)
        return connection.getresponse().status
    finally:
        connection.close()


def test_a_key_compares_as_utf8_with_the_scheme_in_any_case_and_an_empty_key_is_refused(scorer, served):
    key = "clé-секрет"
    with served(create_app(scorer, api_key=key)) as base:
        for scheme in (b"Bearer", b"bearer", b"BEARER"):
            assert _status_with_authorization(base, scheme + b" " + key.encode("utf-8")) == 200
        assert _status_with_authorization(base, b"Basic " + key.encode("utf-8")) == 401
        assert _status_with_authorization(base, b"Bearer " + key.encode("latin-1", errors="replace")) == 401
        assert _status_with_authorization(base, b"Bearer") == 401
    with pytest.raises(ValueError, match="api_key is empty"):
        create_app(scorer, api_key="")


def test_an_open_server_needs_a_key_or_an_explicit_flag_and_says_so_even_when_quiet(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("PYRO_IRM_API_KEY", raising=False)
    missing = str(tmp_path / "no-run")  # each refusal comes before the run would load
    assert main(["serve", missing, "--host", "0.0.0.0", "--port", "0", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "listens beyond this machine and no key is set" in error and "--allow-open" in error
    for empty in (["--api-key", ""], ["--api-key", "  "]):
        assert main(["serve", missing, "--host", "0.0.0.0", *empty, "--quiet"]) == 2
        assert "--api-key is empty" in capsys.readouterr().err
    monkeypatch.setenv("PYRO_IRM_API_KEY", "")
    assert main(["serve", missing, "--quiet"]) == 2
    assert "$PYRO_IRM_API_KEY is set but empty" in capsys.readouterr().err
    monkeypatch.delenv("PYRO_IRM_API_KEY")
    assert main(["serve", missing, "--host", "0.0.0.0", "--port", "0", "--allow-open", "--quiet"]) == 2
    error = capsys.readouterr().err  # the run is missing; the warning came first, despite --quiet
    assert "serving on 0.0.0.0 without a key (--allow-open)" in error and "no-run" in error
    with pytest.raises(SystemExit):
        main(["serve", missing, "--max-wait-ms", "100000"])
    assert "--max-wait-ms: 100000 is out of range" in capsys.readouterr().err


def test_a_body_that_stops_arriving_gets_408_and_the_server_goes_on(scorer, served):
    import time

    with served(create_app(scorer, body_timeout_s=0.5)) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as slow:
            slow.sendall(b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 400\r\n\r\n{\"prompts\": [")  # fmt: skip
            started = time.monotonic()
            answer = slow.recv(4096).decode()
            waited = time.monotonic() - started
        assert answer.startswith("HTTP/1.1 408") and "stopped arriving for 0.5 s" in answer
        assert 0.4 < waited < 10
        assert post(f"{base}/get_reward", _pair(3)) == (200, {"rewards": pytest.approx([_expected(3)])})


def test_a_taken_port_is_named_before_the_model_loads(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        # The run directory does not exist: the port is found taken first, at once.
        code = main(["serve", str(tmp_path / "no-run"), "--port", str(port), "--quiet"])
    assert code == 2
    assert f"port {port} on 127.0.0.1 is already in use by another process" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # argparse's own usage error, exit 2
        main(["serve", str(tmp_path / "no-run"), "--max-body-mb", "0", "--quiet"])
    assert usage.value.code == 2 and "--max-body-mb: 0 is out of range" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "no-run"), "--port", str(port), "--query-separator", ""]) == 2
    assert "--query-separator is empty" in capsys.readouterr().err


def test_bounded_loopback_load_is_answered_in_shared_batches(scorer, served):
    app = create_app(scorer, max_batch_rows=64, max_wait_ms=5)
    requests = 400
    with served(app) as base, ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda i: post(f"{base}/get_reward", _pair(i % 50)), range(requests)))
        health = json.loads(urllib.request.urlopen(f"{base}/health").read())
    assert [status for status, _ in answers] == [200] * requests
    np.testing.assert_allclose(
        [body["rewards"][0] for _, body in answers], [_expected(i % 50) for i in range(requests)]
    )
    assert health["rows"] == requests and health["batches"] < requests


def test_a_small_request_is_scored_within_a_few_batches_of_a_large_one_in_flight():
    import asyncio
    import time

    from pyro_irm.serve import RequestBatcher

    batches = []

    def score(prompts, responses):  # 1 ms a row; a row's reward is its number
        batches.append(len(responses))
        time.sleep(0.001 * len(responses))
        return np.array([float(r[1:]) for r in responses], dtype=np.float32)

    async def scenario():
        batcher = RequestBatcher(score, max_batch_rows=64, max_wait_ms=1)
        await batcher.start()
        loop = asyncio.get_running_loop()
        large = asyncio.create_task(batcher.submit(["p"] * 2048, [f"r{i}" for i in range(2048)]))
        await asyncio.sleep(0.05)  # the large request is being scored
        started = loop.time()
        small = await batcher.submit(["q"], ["r7"])
        waited = loop.time() - started
        rewards = await large
        await batcher.stop()
        return small, waited, rewards

    small, waited, rewards = asyncio.run(scenario())
    np.testing.assert_array_equal(small, [7.0])
    np.testing.assert_array_equal(rewards, np.arange(2048, dtype=np.float32))  # pieces put back in order
    assert max(batches) <= 64 and sum(batches) == 2049
    # The large request alone takes about 2 s; the small one waits a few 64-row batches (about 0.06 s
    # each), not the large one's whole: scored whole first, it would wait about 2 s.
    assert waited < 0.5


def test_a_connection_whose_headers_trickle_in_is_closed_and_the_server_goes_on(scorer, served):
    import time

    from pyro_irm.serve import header_timeout_protocol

    app = create_app(scorer)
    with served(app, http=header_timeout_protocol(0.5)) as base:
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b"POST /get_reward HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            started = time.monotonic()
            assert slow.recv(1024) == b""  # closed by the server
            assert time.monotonic() - started < 5
        # A keep-alive connection is watched again after each answer; a whole request is answered.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for i in range(2):
            connection.request(
                "POST", "/get_reward", json.dumps(_pair(i)), {"Content-Type": "application/json"}
            )
            answer = connection.getresponse()
            assert answer.status == 200 and json.loads(answer.read())["rewards"] == [
                pytest.approx(_expected(i))
            ]
            time.sleep(0.2 if i == 0 else 0)
        connection.close()
