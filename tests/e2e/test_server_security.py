"""The web server's security policy, attacked through the real app (fake encoder: fast).

Files are served by catalog id only, and only with the content that was indexed; a
token, when set, guards every API route; foreign Host names are refused without one;
uploads are bounded; bad input is a 4xx with a JSON error.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from imagegen import solid
from PIL import Image
from servertools import SECRET, FakeCaptioner, make_collection, serving

from searchengine.cli import main
from searchengine.collection import Collection
from searchengine.errors import ConfigError
from searchengine.server import create_app

BASE = "http://127.0.0.1:8765"
TOKEN = secrets.token_urlsafe(24)


@dataclass
class Served:
    collection: Collection
    photos: Path
    outside: Path
    client: TestClient
    ids: dict[str, int]  # file name -> catalog id (failed files included)


@pytest.fixture
def served(tmp_path: Path) -> Served:
    collection, photos, outside = make_collection(tmp_path)
    app = create_app(collection, caption_model=FakeCaptioner())
    ids = {os.path.basename(r.path): r.id for r in collection.catalog.records()}
    with TestClient(app, base_url=BASE) as client:
        yield Served(collection, photos, outside, client, ids)
    collection.close()


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) <= {"error", "detail"} and body["error"]
    assert SECRET not in response.text
    for word in words:
        assert word in body["error"]


# -- files: by catalog id only, with the content that was indexed --------------------


TRAVERSALS = [
    "/api/images/..%2F..%2Foutside%2Fsecret.txt/file",
    "/api/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd/file",
    "/api/images/..%252F..%252Fetc%252Fpasswd/thumbnail",
    "/api/images/%2Fetc%2Fpasswd/file",
    "/api/images//etc/passwd/file",
    "/api/images/1/../../../../etc/passwd",
    "/api/images/1%2F..%2F..%2Fsecret.txt/caption",
    "/api/images/1.0/file",
    "/api/images/0x1/file",
    "/api/images/-1/similar",
    "/api/images/1/thumbnail?size=../../secret",
    "/api/images/1/thumbnail?size=%2Fetc%2Fpasswd",
    "/static/../app.py",
    "/static/%2e%2e/app.py",
    "/static/..%2F..%2Fcollection.py",
    "/static/%2e%2e%2f%2e%2e%2f%2e%2e%2foutside/secret.txt",
    "/static//etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
]


@pytest.mark.parametrize("url", TRAVERSALS)
def test_no_path_in_a_request_reaches_a_file(served: Served, url: str) -> None:
    response = served.client.get(url)
    assert response.status_code in (404, 422), (url, response.status_code)
    assert SECRET not in response.text and "root:" not in response.text
    assert response.json()["error"]


def test_an_absolute_path_outside_the_collection_is_not_a_route(served: Served) -> None:
    secret = str(served.outside / "secret.txt")
    for url in (f"/api/images/{secret}/file", f"/static/{secret}", f"/{secret}"):
        response = served.client.get(url)
        assert response.status_code == 404 and SECRET not in response.text


def test_a_linked_file_is_served_as_indexed_and_nothing_else(served: Served) -> None:
    """Policy: the catalog holds what the user indexed, links included; a link's target
    is served only while it still has the indexed content."""
    link_id = served.ids["link.jpg"]
    response = served.client.get(f"/api/images/{link_id}/file")
    assert response.status_code == 200
    assert response.content == (served.outside / "cyan.jpg").read_bytes()
    assert response.headers["content-type"] == "image/jpeg"
    os.remove(served.photos / "link.jpg")
    os.symlink(served.outside / "secret.txt", served.photos / "link.jpg")
    for route in ("file", "thumbnail?size=large", "caption"):
        assert_error(served.client.get(f"/api/images/{link_id}/{route}"), 409, "changed on disk")


def test_changed_vanished_and_special_files_are_refused(served: Served) -> None:
    red, green, blue = (served.ids[f"{c}.jpg"] for c in ("red", "green", "blue"))
    solid(served.photos / "red.jpg", (10, 10, 10))  # same name, other content
    assert_error(served.client.get(f"/api/images/{red}/file"), 409, "re-run `searchengine index`")
    os.remove(served.photos / "green.jpg")
    assert_error(served.client.get(f"/api/images/{green}/file"), 404, "can no longer be read")
    os.remove(served.photos / "blue.jpg")
    os.mkfifo(served.photos / "blue.jpg")  # reading it would block: refused, not read
    assert_error(served.client.get(f"/api/images/{blue}/thumbnail"), 409)


def test_failed_unknown_and_removed_ids_are_all_404(served: Served) -> None:
    failed = served.ids["broken.jpg"]
    known = max(served.ids.values())
    for image_id in (failed, known + 1, known + 1000, 2**63 - 1):
        for route in ("", "/file", "/thumbnail", "/caption", "/similar"):
            assert_error(served.client.get(f"/api/images/{image_id}{route}"), 404, "no image")
    os.remove(served.photos / "sub" / "yellow.png")
    served.collection.index()  # its row is deleted
    assert_error(served.client.get(f"/api/images/{served.ids['yellow.png']}/file"), 404)
    for image_id in ("0", "-3", str(2**63), "1e3", "%00"):
        assert_error(served.client.get(f"/api/images/{image_id}/file"), 422)


def test_request_terms_never_name_server_files(served: Served) -> None:
    secret = str(served.outside / "secret.txt")
    # Read as a file this would fail ("cannot use ... as a query image"); as text it runs.
    terms = [secret, f"2:{secret}", "../outside/secret.txt", str(served.outside / "cyan.jpg")]
    for term in [*terms, "~", "~root/.profile", "~\0x", "2:~nobody"]:
        response = served.client.get("/api/search", params={"q": "red", "plus": [term]})
        assert response.status_code == 200, response.text
        assert SECRET not in response.text
    cyan = served.client.get("/api/search", params={"q": "x", "plus": ["image:999"]})
    assert_error(cyan, 404, "no image with id 999")
    assert_error(served.client.get("/api/search", params={"q": "x", "minus": ["image:x"]}), 400)


# -- token and host ---------------------------------------------------------------------


def api_urls(app) -> list[tuple[str, str]]:
    """Every documented (method, path) of the API, path parameters filled in."""
    paths = app.openapi()["paths"]
    return [(m.upper(), p.replace("{image_id}", "1")) for p, ops in paths.items() for m in ops]


@pytest.fixture
def guarded(tmp_path: Path) -> TestClient:
    collection, _, _ = make_collection(tmp_path)
    app = create_app(collection, token=TOKEN, host="0.0.0.0", caption_model=FakeCaptioner())
    with TestClient(app, base_url="http://photos.example:8765") as client:
        yield client
    collection.close()


def test_every_api_route_needs_the_token(guarded: TestClient) -> None:
    urls = api_urls(guarded.app)
    assert len(urls) >= 10
    for method, url in urls:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = guarded.request(method, url, params={"q": "red"}, headers=headers)
            assert_error(response, 401, "token")
            assert response.headers["www-authenticate"] == "Bearer"
    guarded.cookies.set("searchengine_token", "not-it")
    assert guarded.get("/api/health").status_code == 401


def test_the_token_opens_every_route_by_header_or_cookie(guarded: TestClient) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    found = guarded.get("/api/search", params={"q": "red"}, headers=bearer)
    assert found.status_code == 200
    first = found.json()["results"][0]["id"]
    assert guarded.get(f"/api/images/{first}/thumbnail", headers=bearer).status_code == 200
    guarded.cookies.set("searchengine_token", TOKEN)
    assert guarded.get("/api/status").status_code == 200
    assert guarded.get(f"/api/images/{first}/file").status_code == 200


def test_the_page_and_the_schema_load_without_the_token(guarded: TestClient) -> None:
    for url in ("/", "/static/app.js", "/static/style.css", "/api/openapi.json"):
        assert guarded.get(url).status_code == 200, url
    assert "searchengine" in guarded.get("/").text


def test_foreign_host_names_are_refused_without_a_token(served: Served) -> None:
    for host in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example", ""):
        response = served.client.get("/api/health", headers={"Host": host})
        assert_error(response, 400, "answers only requests to")
    for host in ("localhost:8765", "127.0.0.1", "[::1]:8765"):
        assert served.client.get("/api/health", headers={"Host": host}).status_code == 200


FORWARDED = [
    {"X-Forwarded-For": "192.168.1.20"},  # Caddy, Traefik; nginx as its guides set it up
    {"X-Real-IP": "192.168.1.20"},
    {"X-Forwarded-Host": "photos.example"},
    {"Forwarded": "for=192.168.1.20;proto=https"},  # RFC 7239
]


@pytest.mark.parametrize("headers", FORWARDED)
def test_a_proxy_s_requests_are_refused_without_a_token(served: Served, headers) -> None:
    # The proxy's address passes the host check: everyone who reaches the proxy would
    # reach the collection.
    for url in ("/", "/api/health", "/api/search?q=red"):
        assert_error(served.client.get(url, headers=headers), 403, "has no token")
    assert served.client.get("/api/health").status_code == 200  # not forwarded: served


@pytest.mark.parametrize("headers", FORWARDED)
def test_with_a_token_a_proxy_in_front_is_fine(guarded: TestClient, headers) -> None:
    answer = guarded.get("/api/health", headers={**headers, "Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    assert guarded.get("/", headers=headers).status_code == 200


def test_binding_beyond_loopback_needs_a_strong_token(tmp_path: Path) -> None:
    collection, _, _ = make_collection(tmp_path)
    with collection:
        for host in ("0.0.0.0", "192.168.1.20", "::"):
            with pytest.raises(ConfigError, match="without --token"):
                create_app(collection, host=host)
        with pytest.raises(ConfigError, match="16 to 256"):
            create_app(collection, host="0.0.0.0", token="short")
        create_app(collection, host="::1")  # loopback: fine without a token
    result = CliRunner().invoke(
        main, ["serve", "--host", "0.0.0.0", "--index-dir", str(tmp_path / "indexes"), "-c", "t"]
    )
    assert result.exit_code == 2
    assert "refusing to listen on 0.0.0.0 without --token" in result.output


def test_an_address_that_cannot_be_listened_on_is_said_before_anything_loads(tmp_path):
    """Before, the model loaded, "serving at ..." was printed, and uvicorn's log line
    followed with exit status 3. The collection named here does not exist: the port is
    checked first, so that is never reached."""
    token = ["--token", secrets.token_urlsafe(24)]
    missing = ["--index-dir", str(tmp_path / "none"), "-c", "nowhere"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(main, ["serve", "--port", port, *missing])
    assert result.exit_code == 2, result.output
    assert f"port {port} on 127.0.0.1 is in use (another searchengine serve?)" in result.output
    for host in ("192.0.2.1", "nosuch.invalid"):  # (TEST-NET-1: never this machine's)
        result = CliRunner().invoke(main, ["serve", "--host", host, *token, *missing])
        assert result.exit_code == 2, result.output
        assert f"{host} is not an address of this machine" in result.output
    result = CliRunner().invoke(main, ["serve", "--port", "0", *missing])
    assert result.exit_code == 1 and "no collection 'nowhere'" in result.output  # got that far


# -- uploads and bounds -----------------------------------------------------------------


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_uploads_are_bounded_and_safely_decoded(tmp_path: Path) -> None:
    collection, photos, _ = make_collection(tmp_path)
    app = create_app(collection, max_upload_bytes=200_000)
    with collection, TestClient(app, base_url=BASE) as client:
        red = (photos / "red.jpg").read_bytes()
        ok = client.post("/api/similar", files={"file": ("q.jpg", red)}, params={"k": 2})
        assert ok.status_code == 200 and ok.json()["results"][0]["name"] == "red.jpg"
        big = os.urandom(300_000)
        assert_error(client.post("/api/similar", files={"file": ("b.jpg", big)}), 413, "limit")

        def chunks():  # no Content-Length: counted as it arrives
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="c.jpg"\r\n\r\n'
            for _ in range(40):
                yield b"x" * 10_000

        chunked = client.post(
            "/api/similar",
            content=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        assert_error(chunked, 413)
        bomb = png(Image.new("1", (12000, 9000)))  # 108 MP in a few kB
        assert len(bomb) < 200_000
        refused = client.post("/api/similar", files={"file": ("b.png", bomb)})
        assert_error(refused, 400, "over the limit of 100,000,000 pixels")
        text = client.post("/api/similar", files={"file": ("t.jpg", b"<html>hi</html>")})
        assert_error(text, 400, "not an image: it looks like an HTML page")
        assert_error(client.post("/api/similar"), 422, "file")


BAD_SEARCHES = [
    ({}, 422, "q"),
    ({"q": ""}, 422, "q"),
    ({"q": "   \t"}, 400, "empty"),
    ({"q": "x" * 2001}, 422, "q"),
    ({"q": "red", "k": 0}, 422, "k"),
    ({"q": "red", "k": 101}, 422, "k"),
    ({"q": "red", "k": "ten"}, 422, "k"),
    ({"q": "red", "offset": -1}, 422, "offset"),
    ({"q": "red", "offset": 1001}, 422, "offset"),
    ({"q": "red", "after": "2020-13"}, 422, "after"),
    ({"q": "red", "after": "2021-02-30"}, 400, "cannot read date"),
    ({"q": "red", "after": "0000"}, 422, "after"),
    ({"q": "red", "after": "yesterday"}, 422, "after"),
    ({"q": "red", "before": "9999"}, 422, "before"),
    ({"q": "red", "plus": ["a"] * 11}, 422, "plus"),
    ({"q": "red", "plus": ["x" * 2001]}, 422, "plus"),
    ({"q": "red", "minus": ["red"]}, 400, "cancel out"),
    ({"q": "red", "orientation": "diagonal"}, 422, "orientation"),
    ({"q": "red", "sort": "random"}, 422, "sort"),
    ({"q": "red", "min_score": 3}, 422, "min_score"),
    ({"q": "red", "min_width": 10**12}, 422, "min_width"),
    ({"q": "red", "rerank": "maybe"}, 422, "rerank"),
    ({"q": "red", "folder": "~\0"}, 400, "control characters"),
]


@pytest.mark.parametrize(("params", "status", "word"), BAD_SEARCHES)
def test_bad_input_is_a_4xx_with_a_json_error(served: Served, params, status, word) -> None:
    assert_error(served.client.get("/api/search", params=params), status, word)


def test_unknown_routes_and_methods_answer_json(served: Served) -> None:
    assert_error(served.client.get("/api/nothing"), 404)
    assert_error(served.client.delete("/api/images/1"), 405)
    assert_error(served.client.post("/api/search", params={"q": "x"}), 405)


def test_responses_forbid_framing_sniffing_and_foreign_scripts(served: Served) -> None:
    for url in ("/", "/api/health", "/api/images/1/thumbnail", "/api/nothing"):
        headers = served.client.get(url).headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "access-control-allow-origin" not in headers


def test_the_page_loads_only_its_own_files(served: Served) -> None:
    static = Path(__file__).parents[2] / "searchengine" / "server" / "static"
    assert sorted(p.name for p in static.iterdir()) == [
        "app.js",
        "favicon.svg",
        "index.html",
        "style.css",
    ]
    page = served.client.get("/").text
    for name in ("app.js", "style.css", "favicon.svg"):
        assert f'"static/{name}"' in page  # relative: the page may live under a path


# -- cross-site requests, the token cookie, what the parser refuses ---------------------


CROSS_SITE = [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # another port of this machine: another origin
    {"Origin": "http://evil.example"},
    {"Origin": "null"},  # a sandboxed frame or a file:// page
    {"Origin": "http://127.0.0.1:9999", "Sec-Fetch-Site": "same-site"},
]


@pytest.mark.parametrize("headers", CROSS_SITE)
def test_requests_other_sites_make_the_browser_send_are_refused(served: Served, headers):
    red = (served.photos / "red.jpg").read_bytes()
    client = served.client
    for response in (
        client.get("/api/search", params={"q": "red"}, headers=headers),
        client.get(f"/api/images/{served.ids['red.jpg']}/caption", headers=headers),
        client.get(f"/api/images/{served.ids['red.jpg']}/thumbnail", headers=headers),
        client.post("/api/similar", files={"file": ("r.jpg", red)}, headers=headers),
    ):
        assert_error(response, 403, "cross-site request refused")
    assert served.client.app.state.service.budget.peak == 0  # refused before any decode
    page = client.get("/", headers=headers)  # a link to the page works from anywhere
    assert page.status_code == 200


def test_the_own_page_and_tools_are_served(served: Served) -> None:
    red = (served.photos / "red.jpg").read_bytes()
    for headers in (
        {},  # curl, scripts
        {"Sec-Fetch-Site": "same-origin"},  # the page's own fetches
        {"Sec-Fetch-Site": "none"},  # typed into the address bar
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:8765"},
        # The page behind a reverse proxy that asks this server for another Host than
        # the browser asked it for: the browser vouches the request is the page's own.
        {"Sec-Fetch-Site": "same-origin", "Origin": "https://photos.example"},
    ):
        found = served.client.get("/api/search", params={"q": "red"}, headers=headers)
        assert found.status_code == 200, found.text
        upload = served.client.post("/api/similar", files={"file": ("r.jpg", red)}, headers=headers)
        assert upload.status_code == 200, upload.text


def test_the_token_cookie_is_http_only_and_same_site(guarded: TestClient) -> None:
    refused = guarded.post("/api/session", headers={"Authorization": "Bearer wrong-token-000000"})
    assert_error(refused, 401, "token")
    made = guarded.post("/api/session", headers={"Authorization": f"Bearer {TOKEN}"})
    assert made.status_code == 200 and made.json() == {"cookie": True}
    cookie, legacy = made.headers.get_list("set-cookie")
    assert cookie.startswith(f"searchengine_token={TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    # No Path: the browser keeps it for /api (or /PROXY-PATH/api) alone, so servers
    # under one host keep their own; the whole host's one of earlier releases goes.
    assert "Path" not in cookie
    assert legacy.startswith('searchengine_token="";') and "Path=/" in legacy
    assert "Max-Age=0" in legacy
    assert guarded.get("/api/health").status_code == 200  # the cookie now opens the API


@pytest.mark.parametrize("stale_first", [False, True], ids=["own-first", "stale-first"])
def test_a_stale_whole_host_cookie_beside_the_page_s_own_does_not_lock_the_page_out(
    guarded: TestClient, stale_first: bool
) -> None:
    # A browser sends one cookie of the name per path it was set for: the page's own
    # (no Path, so /api) and one an earlier release set for the whole host (Path=/),
    # in either order. Either may be the token.
    pair = [f"searchengine_token={TOKEN}", "searchengine_token=stale-token-0000000"]
    cookies = "; ".join(reversed(pair) if stale_first else pair)
    guarded.cookies.clear()
    answer = guarded.get("/api/status", headers={"Cookie": cookies})
    assert answer.status_code == 200, answer.text
    refused = guarded.get("/api/status", headers={"Cookie": "searchengine_token=stale-token-0"})
    assert_error(refused, 401, "token")


@pytest.mark.parametrize("image_id", ["+1", "01", "1.0", "1_0", " 1", "1e0", "0x1"])
def test_ids_are_plain_decimal_integers(served: Served, image_id: str) -> None:
    response = served.client.get(f"/api/images/{image_id}")
    assert_error(response, 422, "plain decimal")
    assert served.client.get("/api/images/5").status_code in (200, 404)


@pytest.mark.parametrize(("name", "value"), [("k", "+5"), ("k", "05"), ("offset", "1_0")])
def test_numbers_in_the_query_string_are_plain_too(served: Served, name: str, value: str):
    response = served.client.get("/api/search", params={"q": "red", name: value})
    assert_error(response, 422, name)


@pytest.mark.parametrize("term", ["99999999999999999999:x", "101:red", "-1e3:red"])
def test_term_weights_are_bounded(served: Served, term: str) -> None:
    response = served.client.get("/api/search", params={"q": "red", "plus": [term]})
    if term == "-1e3:red":  # not a weight in the W:term form: a text term, as the CLI reads it
        assert response.status_code == 200
        return
    assert_error(response, 400, "out of range")


def test_an_upload_too_big_to_decode_within_the_budget_is_refused(tmp_path: Path) -> None:
    collection, _, _ = make_collection(tmp_path)
    app = create_app(collection, decode_budget=20_000_000)
    rgba = png(Image.new("RGBA", (3000, 2000), (1, 2, 3, 4)))  # ~54 MB at its peak
    with collection, TestClient(app, base_url=BASE) as client:
        response = client.post("/api/similar", files={"file": ("big.png", rgba)})
        assert_error(response, 413, "MB of memory", "over this server's 20 MB")
        small = png(Image.new("RGBA", (300, 200), (250, 10, 10, 255)))
        assert client.post("/api/similar", files={"file": ("s.png", small)}).status_code == 200


def raw_request(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (no client would send these); the status, headers, body."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(url)
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def test_requests_the_http_parser_refuses_are_answered_in_json(tmp_path: Path) -> None:
    collection, _, _ = make_collection(tmp_path)
    with collection, serving(create_app(collection)) as url:
        host = url.removeprefix("http://")
        for request in (
            f"GET /api/search?q={'x' * 1_000_000} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(),
            f"POST /api/similar HTTP/1.1\r\nHost: {host}\r\nContent-Length: abc\r\n\r\n".encode(),
            f"GET /api/health HTTP/1.1\r\nHost: {host}\r\nBad Header\r\n\r\n".encode(),
        ):
            status, headers, body = raw_request(url, request)
            assert status == 400
            assert headers["content-type"] == "application/json"
            assert headers["x-content-type-options"] == "nosniff"
            assert "not a valid HTTP/1.1 request" in json.loads(body)["error"]
        # At the API's own bounds the request reaches the app, which says what is wrong.
        long = "é" * 2000
        terms = "".join(f"&plus={quote(long)}" for _ in range(11))
        request = f"GET /api/search?q={quote(long)}{terms} HTTP/1.1\r\nHost: {host}\r\n\r\n"
        status, headers, body = raw_request(url, request.encode())
        assert status == 422 and "plus" in json.loads(body)["error"]
